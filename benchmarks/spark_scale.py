"""The Spark pipeline next to the in-memory path on a synthetic graph, in
one run: importance neighbourhoods (walks + top-T) and the layer-wise
embedding, items/s of each side, per-stage times of the Spark jobs, and
the per-core figures that the capacity model of docs/spark.md uses.

    python benchmarks/spark_scale.py --items 100000 [--walks 100]
        [--master 'local[2]'] [--threads 2] [--write FILE]

Graph: ``--items`` items, ``--items / 2`` users, ``10 * --items``
interactions (item popularity Zipf-0.8, users uniform), 64 random
features. Model: PinSage at the default size (hidden 256, out 128, K=2,
importance pooling, random init). Walks: T=50, ``--walks`` walks of
length 2, seed 0.

  * in memory: ``importance_graph(..., backend='torch')`` and
    ``PinSage.inference`` with ``--threads`` torch threads;
  * Spark: ``spark_importance_neighbors`` and ``spark_layerwise_embed``
    on ``--master`` with 1 torch thread per Python worker (the layers
    with ``gather='auto'``: broadcast messages up to 512 MiB), Parquet in
    and out, input checks included (the session is warmed by a tiny run of
    both jobs first, so JVM and worker start-up are not counted).

The Spark neighbourhoods are compared with the in-memory ones (equal edge
for edge, weight for weight) and the embeddings (max abs difference).
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
import pandas as pd
import torch


class _Stages(logging.Handler):
    r"""Keeps the Spark jobs' per-stage log lines ('walk step 0: 3.1s')."""
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def synthetic(num_items: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    num_users = max(num_items // 2, 1)
    e = 10 * num_items
    p = 1.0 / np.arange(1, num_items + 1) ** 0.8
    item = rng.choice(num_items, e, p=p / p.sum())
    item[:num_items] = np.arange(num_items)  # every item interacted
    user = rng.integers(0, num_users, e)
    x = rng.standard_normal((num_items, 64)).astype(np.float32)
    return user, item, num_users, torch.from_numpy(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--items', type=int, default=100_000)
    ap.add_argument('--walks', type=int, default=100)
    ap.add_argument('--master', default='local[2]')
    ap.add_argument('--threads', type=int, default=2,
                    help='torch threads of the in-memory path')
    ap.add_argument('--write', default=None, help='markdown record to write')
    args = ap.parse_args()
    logging.getLogger('py4j').setLevel(logging.WARNING)
    stages = _Stages()
    for name in ('pinsage_pyg.inference.spark.job',
                 'pinsage_pyg.inference.spark.walks'):
        lg = logging.getLogger(name)
        lg.setLevel(logging.INFO)
        lg.addHandler(stages)

    from pinsage_pyg.inference.spark import (
        export_items, export_neighbors, local_csr, read_embeddings,
        save_model, spark_importance_neighbors, spark_layerwise_embed,
        spark_session)
    from pinsage_pyg.nn.model import PinSage
    from pinsage_pyg.sampler.walks import importance_graph

    T, L = 50, 2
    load_start = os.getloadavg()[0]
    user, item, num_users, x = synthetic(args.items)
    n = args.items
    torch.manual_seed(0)
    model = PinSage(64, 256, 128, num_layers=2).eval()
    work = Path(tempfile.mkdtemp(prefix='spark_scale_'))
    try:
        # ---------------- in memory
        torch.set_num_threads(args.threads)
        csr = local_csr(user, item, num_users=num_users, num_items=n)
        t = time.perf_counter()
        g = importance_graph(csr, x, num_neighbors=T, num_walks=args.walks,
                             walk_length=L, seed=0, backend='torch')
        local_walk_s = time.perf_counter() - t
        t = time.perf_counter()
        with torch.no_grad():
            _, local_item = model.inference(g.x, g.edge_index,
                                            g.edge_weight)
        local_layer_s = time.perf_counter() - t
        num_edges = int(g.edge_index.size(1))
        print(f"in memory: walks {local_walk_s:.1f}s, layers "
              f"{local_layer_s:.1f}s ({num_edges} edges)", flush=True)

        # ---------------- Spark (warmed up on a tiny graph first)
        pd.DataFrame({'user_id': user, 'item_id': item}).to_parquet(
            work / 'interactions.parquet')
        export_items(work / 'items.parquet', x)
        save_model(work / 'model.pt', model)
        t = time.perf_counter()
        spark = spark_session(args.master)
        spark.sparkContext.setLogLevel('ERROR')
        session_s = time.perf_counter() - t
        pd.DataFrame({'user_id': user[:2000], 'item_id': item[:2000]}) \
            .to_parquet(work / 'warm.parquet')
        warm = spark_importance_neighbors(spark, work / 'warm.parquet',
                                          work / 'warm_nb', num_walks=4)
        wi = pd.read_parquet(work / 'warm_nb')
        export_neighbors(work / 'warm_nb.parquet', torch.from_numpy(
            np.stack([wi['neighbor'].to_numpy(), wi['target'].to_numpy()])),
            torch.from_numpy(wi['weight'].to_numpy()))
        export_items(work / 'warm_items.parquet', x[:int(item[:2000].max())
                                                     + 1])
        spark_layerwise_embed(spark, work / 'warm_items.parquet',
                              work / 'warm_nb.parquet', work / 'model.pt',
                              work / 'warm_out')
        stages.lines.clear()
        print(f"Spark warm-up done (session {session_s:.1f}s, warm-up "
              f"walks {warm['seconds']:.1f}s)", flush=True)

        s_walk = spark_importance_neighbors(
            spark, work / 'interactions.parquet', work / 'nb',
            num_neighbors=T, num_walks=args.walks, walk_length=L, seed=0)
        walk_lines = list(stages.lines)
        stages.lines.clear()
        print(f"Spark walks: {s_walk['seconds']:.1f}s", flush=True)
        s_emb = spark_layerwise_embed(
            spark, work / 'items.parquet', work / 'nb', work / 'model.pt',
            work / 'out', torch_threads=1)
        layer_lines = list(stages.lines)
        print(f"Spark layers: {s_emb['seconds']:.1f}s", flush=True)
        cores = int(spark.sparkContext.defaultParallelism)
        version = spark.version

        got = pd.read_parquet(work / 'nb').sort_values(
            ['target', 'neighbor'])
        exp = pd.DataFrame({'target': g.edge_index[1].numpy(),
                            'neighbor': g.edge_index[0].numpy(),
                            'weight': g.edge_weight.numpy()}).sort_values(
            ['target', 'neighbor'])
        nb_equal = len(got) == len(exp) and all(
            (got[c].to_numpy() == exp[c].to_numpy()).all()
            for c in exp.columns)
        ids, spark_item, _ = read_embeddings(work / 'out')
        diff = float(np.abs(spark_item - local_item.numpy()).max())
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    load = (f"1-min load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} "
            f"cores")
    rows = [('neighbourhoods (walks + top-T)', local_walk_s,
             s_walk['seconds']),
            ('layers (K=2) + heads', local_layer_s, s_emb['seconds']),
            ('both', local_walk_s + local_layer_s,
             s_walk['seconds'] + s_emb['seconds'])]
    lines = ['| stage | in-memory items/s | Spark items/s | Spark / '
             'in-memory | Spark items/s per core |',
             '|---|---:|---:|---:|---:|']
    for name, ls, ss in rows:
        lines.append(f"| {name} | {n / ls:,.0f} ({ls:.1f} s) | "
                     f"{n / ss:,.0f} ({ss:.1f} s) | {ls / ss:.2f} | "
                     f"{n / ss / cores:,.0f} |")
    table = '\n'.join(lines)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, torch "
               f"{torch.__version__}, Spark {version} ({args.master}, "
               f"{cores} cores, 1 torch thread per Python worker; "
               f"in memory: {args.threads} torch threads)")
    text = (
        f"Graph: {n:,} items, {num_users:,} users, {len(item):,} "
        f"interactions (Zipf-0.8 item popularity), 64 features; T={T}, "
        f"{args.walks} walks of length {L}, seed 0: {num_edges:,} "
        f"neighbour edges. Model: hidden 256, out 128, K=2, importance "
        f"pooling.\n\n{table}\n\n"
        f"Spark neighbourhoods equal the in-memory ones edge for edge and "
        f"weight for weight: {nb_equal}. Embeddings max abs diff: "
        f"{diff:.1e}.\n\nSpark stages (walks): "
        f"{'; '.join(walk_lines)}.\n\nSpark stages (layers; gather "
        f"'{s_emb['gather']}', {s_emb['num_groups']} groups): "
        f"{'; '.join(layer_lines)}.\n")
    print(f"machine: {machine}; {load}; Spark session start "
          f"{session_s:.1f} s\n\n{text}")
    if args.write:
        cmd = ('PYTHONPATH=src .venv/bin/python benchmarks/spark_scale.py '
               f"--items {n} --walks {args.walks} --master '{args.master}' "
               f"--threads {args.threads} --write {args.write}")
        Path(args.write).write_text(
            "# Spark pipeline vs in memory on a synthetic graph\n\n"
            f"```bash\n{cmd}\n```\n\nMachine: {machine}. The cores were "
            f"shared with other jobs ({load}): absolute numbers are "
            f"contended; compare the two sides of one row (measured "
            f"side by side in this run). Spark times are warm (session "
            f"start {session_s:.1f} s and a tiny warm-up run excluded) "
            f"and include reading and checking the Parquet inputs and "
            f"writing every step / layer to Parquet.\n\n{text}")
        print(f"written to {args.write}")


if __name__ == '__main__':
    main()
