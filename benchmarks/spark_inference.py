"""Spark local-mode throughput next to the local layer-wise path (prints
numbers, writes a markdown record).

    python benchmarks/spark_inference.py [--data movielens_100k movielens_1m]
        [--master 'local[2]'] [--threads 2] [--write FILE]

For each dataset, in one run on the same importance graph (T=50,
100 walks of length 2, seed 0) and the same randomly initialised model at
the default size (hidden 256, out 128, K=2, importance pooling):

  * local: ``PinSage.inference`` (layer-wise, in memory), best of 3 after
    a warm-up, with ``--threads`` torch threads;
  * Spark: ``spark_layerwise_embed`` on ``--master`` (default local[2]),
    reading and writing Parquet, input checks included; the first run
    (JVM and Python worker start-up, torch import in each worker) is
    reported separately from the best of the warm runs.

Both outputs are compared (max abs difference). Spark on one machine is
slower than the in-memory path by construction; the point is that the same
job runs unchanged on a cluster.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def build(name: str):
    from omegaconf import OmegaConf

    from pinsage_pyg.sampler.walks import BipartiteCSR, importance_graph
    from pinsage_pyg.training.pipeline import load_dataset
    cfg = OmegaConf.load(ROOT / 'src' / 'pinsage_pyg' / 'configs' / 'data' /
                         f'{name}.yaml')
    ds = load_dataset(OmegaConf.to_container(cfg, resolve=True))
    csr = BipartiteCSR.from_edges(ds.train_user, ds.train_item, ds.num_users,
                                  ds.num_items)
    graph = importance_graph(csr, ds.x, num_neighbors=50, num_walks=100,
                             walk_length=2, seed=0)
    return ds, graph


def bench(name: str, spark, threads: int, spark_runs: int) -> dict:
    from pinsage_pyg.inference.spark import (export_inputs, read_embeddings,
                                             spark_layerwise_embed)
    from pinsage_pyg.nn.model import PinSage
    ds, g = build(name)
    torch.manual_seed(0)
    model = PinSage(ds.num_features, 256, 128, num_layers=2).eval()
    n = ds.num_items

    torch.set_num_threads(threads)
    model.inference(g.x, g.edge_index, g.edge_weight)  # warm-up
    local_s = float('inf')
    for _ in range(3):
        t = time.perf_counter()
        _, item = model.inference(g.x, g.edge_index, g.edge_weight)
        local_s = min(local_s, time.perf_counter() - t)

    work = Path(tempfile.mkdtemp(prefix='spark_bench_'))
    try:
        paths = export_inputs(work / 'in', g.x, g.edge_index, g.edge_weight,
                              model)
        times = []
        for _ in range(1 + spark_runs):
            s = spark_layerwise_embed(spark, paths['items'],
                                      paths['neighbors'], paths['model'],
                                      work / 'out', overwrite=True)
            times.append(s['seconds'])
        _, spark_item, _ = read_embeddings(work / 'out')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    spark_s = min(times[1:]) if spark_runs else times[0]
    return {'data': name, 'items': n, 'edges': int(g.edge_index.size(1)),
            'features': ds.num_features, 'local_s': local_s,
            'local_items_s': n / local_s, 'spark_first_s': times[0],
            'spark_s': spark_s, 'spark_items_s': n / spark_s,
            'max_abs_diff': float(np.abs(spark_item - item.numpy()).max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data', nargs='+',
                   default=['movielens_100k', 'movielens_1m'])
    p.add_argument('--master', default='local[2]')
    p.add_argument('--threads', type=int, default=2,
                   help='torch threads of the local path')
    p.add_argument('--spark-runs', type=int, default=2,
                   help='timed Spark runs after the first one')
    p.add_argument('--write', default=None, help='markdown record to write')
    args = p.parse_args()
    logging.getLogger('py4j').setLevel(logging.WARNING)

    from pinsage_pyg.inference.spark import spark_session
    load_start = os.getloadavg()[0]
    t = time.perf_counter()
    spark = spark_session(args.master)
    spark.sparkContext.setLogLevel('ERROR')
    session_s = time.perf_counter() - t
    rows = [bench(name, spark, args.threads, args.spark_runs)
            for name in args.data]
    version = spark.version
    spark.stop()
    load = (f"1-min load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores")

    machine = (f"{platform.machine()}, {torch.get_num_threads()} torch "
               f"threads, torch {torch.__version__}, Spark {version} "
               f"({args.master}), Java 17")
    lines = [
        '| data | items | edges | features | local layer-wise items/s '
        '| Spark items/s (warm) | Spark first run | slowdown | max abs diff |',
        '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['items']} | {r['edges']} | {r['features']} "
            f"| {r['local_items_s']:.0f} ({r['local_s']:.2f} s) "
            f"| {r['spark_items_s']:.0f} ({r['spark_s']:.1f} s) "
            f"| {r['spark_first_s']:.1f} s "
            f"| {r['spark_s'] / r['local_s']:.0f}x "
            f"| {r['max_abs_diff']:.1e} |")
    table = '\n'.join(lines)
    print(f"machine: {machine}; {load}\nSpark session start: "
          f"{session_s:.1f} s\n")
    print(table)
    if args.write:
        cmd = ('PYTHONPATH=src .venv/bin/python benchmarks/spark_inference.py'
               f" --data {' '.join(args.data)} --master '{args.master}' "
               f"--threads {args.threads} --spark-runs {args.spark_runs} "
               f"--write {args.write}")
        Path(args.write).write_text(
            "# Spark local mode vs the local layer-wise path\n\n"
            f"```bash\n{cmd}\n```\n\n"
            f"Machine: {machine}. Spark session start: {session_s:.1f} s. "
            f"The machine was shared with other jobs ({load}): absolute "
            "numbers are contended, compare within a row only.\n\n"
            "Model: PinSage at the default size (hidden 256, out 128, K=2, "
            "importance pooling, random init); importance graph T=50, 100 "
            "walks of length 2, seed 0; all items embedded.\n\n"
            "Local = `PinSage.inference` in memory, best of 3 after a "
            "warm-up. Spark = `spark_layerwise_embed` end to end (Parquet "
            "in and out, input checks, every layer written to Parquet), "
            "best of the warm runs; the first run, which pays for the JVM "
            "JIT and for starting Python workers that import torch, is "
            "listed separately. Max abs diff = Spark vs local item "
            "embeddings.\n\n"
            f"{table}\n\n"
            "Spark on one machine is slower than the in-memory path by "
            "construction (per-stage scheduling, Arrow/Parquet round trips "
            "of every layer, a shuffle per layer); its time is dominated by "
            "fixed per-job overhead at these sizes. The point is that the "
            "same job runs unchanged on a cluster (docs/spark.md).\n")
        print(f"\nwritten to {args.write}")


if __name__ == '__main__':
    main()
