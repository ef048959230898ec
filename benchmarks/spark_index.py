"""The faiss index of the Spark pipeline: built on the driver in one piece
(collect the embeddings, one index) against built by the workers in shards
(``build_index_shards``), on random L2-normalised embeddings, with the
recall@10 of the merged shards against exact search (prints numbers).

    python benchmarks/spark_index.py [--items 200000] [--dim 128]
        [--shards 4 16] [--kinds flat ivf] [--master local[2]]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--items', type=int, default=200_000)
    p.add_argument('--dim', type=int, default=128)
    p.add_argument('--shards', type=int, nargs='+', default=[4, 16])
    p.add_argument('--kinds', nargs='+', default=['flat', 'ivf'])
    p.add_argument('--master', default='local[2]')
    args = p.parse_args()
    from pinsage_pyg.inference.export import (build_faiss_index,
                                              load_index_shards,
                                              write_embeddings)
    from pinsage_pyg.inference.spark import spark_session
    from pinsage_pyg.inference.spark.job import _FS, read_embeddings
    from pinsage_pyg.inference.spark.pipeline import build_index_shards
    spark = spark_session(args.master)
    root = Path(tempfile.mkdtemp(prefix='spark_index_'))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.items, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    emb = root / 'embeddings'
    emb.mkdir()
    for i, lo in enumerate(range(0, args.items, 50_000)):  # a dataset
        pd.DataFrame({'item_id': np.arange(lo, min(lo + 50_000, args.items),
                                           dtype=np.int64),
                      'embedding': list(x[lo:lo + 50_000])}).to_parquet(
            emb / f'part-{i:05d}.parquet')
    fs = _FS(spark, str(root))
    queries = x[rng.choice(args.items, 1000, replace=False)]
    _, truth = build_faiss_index(x, 'flat').search(queries, 10)
    print(f"machine: {platform.machine()}, master {args.master}; "
          f"{args.items} items x {args.dim}")

    def recall(found):
        return np.mean([len(set(a) & set(b)) / 10
                        for a, b in zip(truth, found)])

    # Warm-up: the JVM and the Python workers start once.
    build_index_shards(spark, str(emb), str(root / 'warm'), fs,
                       uuid.uuid4().hex, 2, 'flat')
    for kind in args.kinds:
        t = time.perf_counter()
        ids, item, _ = read_embeddings(emb)
        write_embeddings(root / f'driver_{kind}', ids, item,
                         index_kind=kind)
        driver = time.perf_counter() - t
        one = build_faiss_index(item, kind)
        print(f"{kind}: driver, one index: {driver:.1f}s "
              f"({args.items / driver:.0f} items/s), recall@10 vs exact "
              f"{recall(one.search(queries, 10)[1]):.3f}")
        for n in args.shards:
            out = str(root / f'shards_{kind}_{n}')
            t = time.perf_counter()
            got = build_index_shards(spark, str(emb), out, fs,
                                     uuid.uuid4().hex, n, kind)
            sec = time.perf_counter() - t
            sid, index = load_index_shards(out)
            _, found = index.search(queries, 10)
            print(f"{kind}: workers, {got} shards: {sec:.1f}s "
                  f"({args.items / sec:.0f} items/s, {driver / sec:.2f}x the "
                  f"driver), recall@10 vs exact {recall(sid[found]):.3f}")
    spark.stop()
    shutil.rmtree(root)


if __name__ == '__main__':
    main()
