"""The Spark layer job alone next to the in-memory layers, in one run,
under each message gather: the profile of where the layer job's time
goes (per-stage times from the job's own log).

    python benchmarks/spark_layers.py --items 100000
        [--gather broadcast shuffle] [--master 'local[2]'] [--threads 2]
        [--write FILE]

The graph, model and neighbourhoods are those of ``spark_scale.py``
(``--items`` items, Zipf-0.8 popularity, 64 features, T=50, 100 walks of
length 2 computed in memory; hidden 256, out 128, K=2). The in-memory
side is ``PinSage.inference`` with ``--threads`` torch threads; each
Spark side is ``spark_layerwise_embed`` with one torch thread per Python
worker, default groups, run twice: the first run warms the session and
the workers, the second is the one reported.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from spark_scale import _Stages, synthetic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--items', type=int, default=100_000)
    ap.add_argument('--gather', nargs='+', default=['broadcast', 'shuffle'],
                    choices=('broadcast', 'shuffle'))
    ap.add_argument('--master', default='local[2]')
    ap.add_argument('--threads', type=int, default=2,
                    help='torch threads of the in-memory path')
    ap.add_argument('--write', default=None, help='markdown record to write')
    args = ap.parse_args()
    logging.getLogger('py4j').setLevel(logging.WARNING)
    stages = _Stages()
    lg = logging.getLogger('pinsage_pyg.inference.spark.job')
    lg.setLevel(logging.INFO)
    lg.addHandler(stages)

    from pinsage_pyg.inference.spark import (
        export_items, export_neighbors, local_csr, read_embeddings,
        save_model, spark_layerwise_embed, spark_session)
    from pinsage_pyg.nn.model import PinSage
    from pinsage_pyg.sampler.walks import importance_graph

    load_start = os.getloadavg()[0]
    n = args.items
    user, item, num_users, x = synthetic(n)
    torch.manual_seed(0)
    model = PinSage(64, 256, 128, num_layers=2).eval()
    torch.set_num_threads(args.threads)
    g = importance_graph(local_csr(user, item, num_users=num_users,
                                   num_items=n), x, num_neighbors=50,
                         num_walks=100, walk_length=2, seed=0,
                         backend='torch')
    work = Path(tempfile.mkdtemp(prefix='spark_layers_'))
    rows = []
    try:
        export_items(work / 'items.parquet', x)
        export_neighbors(work / 'nb.parquet', g.edge_index, g.edge_weight)
        save_model(work / 'model.pt', model)
        spark = spark_session(args.master)
        spark.sparkContext.setLogLevel('ERROR')
        cores = int(spark.sparkContext.defaultParallelism)
        t = time.perf_counter()
        with torch.no_grad():
            _, local_item = model.inference(g.x, g.edge_index,
                                            g.edge_weight)
        local_s = time.perf_counter() - t
        print(f"in memory: {local_s:.1f}s", flush=True)
        for gather in args.gather:
            for rep in range(2):  # the first run warms up
                shutil.rmtree(work / 'out', ignore_errors=True)
                stages.lines.clear()
                s = spark_layerwise_embed(
                    spark, work / 'items.parquet', work / 'nb.parquet',
                    work / 'model.pt', work / 'out', torch_threads=1,
                    gather=gather)
            _, spark_item, _ = read_embeddings(work / 'out')
            diff = float(np.abs(spark_item - local_item.numpy()).max())
            rows.append((gather, s, list(stages.lines), diff))
            print(f"Spark {gather}: {s['seconds']:.1f}s", flush=True)
        version = spark.version
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load = (f"1-min load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} "
            f"cores")
    lines = ['| path | items/s | seconds | / in memory | stages (job log, '
             'cumulative) | max abs diff |', '|---|---:|---:|---:|---|---:|',
             f"| in memory, {args.threads} torch threads | "
             f"{n / local_s:,.0f} | {local_s:.1f} | 1 | | |"]
    for gather, s, st, diff in rows:
        lines.append(f"| Spark gather={gather}, {s['num_groups']} groups | "
                     f"{n / s['seconds']:,.0f} | {s['seconds']:.1f} | "
                     f"{local_s / s['seconds']:.2f} | {'; '.join(st)} | "
                     f"{diff:.1e} |")
    table = '\n'.join(lines)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch "
               f"{torch.__version__}, Spark {version} ({args.master}, "
               f"{cores} cores)")
    text = (f"{n:,} items, {int(g.edge_index.size(1)):,} neighbour edges, "
            f"hidden 256, out 128, K=2.\n\n{table}\n")
    print(f"machine: {machine}; {load}\n\n{text}")
    if args.write:
        cmd = ('PYTHONPATH=src .venv/bin/python benchmarks/spark_layers.py '
               f"--items {n} --gather {' '.join(args.gather)} --master "
               f"'{args.master}' --threads {args.threads} --write "
               f"{args.write}")
        Path(args.write).write_text(
            "# Spark layers vs in memory, by gather\n\n"
            f"```bash\n{cmd}\n```\n\nMachine: {machine}. The cores were "
            f"shared with other jobs ({load}): compare the rows of this "
            f"run, not absolute figures. Spark: warm (second run of each "
            f"gather), input checks and Parquet in and out included.\n\n"
            f"{text}")
        print(f"written to {args.write}")


if __name__ == '__main__':
    main()
