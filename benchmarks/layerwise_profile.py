"""Where layer-wise embedding spends its time, and why it scaled the way it
did (the measurements behind docs/inference.md, "What it took").

    PYTHONPATH=src python benchmarks/layerwise_profile.py --items 1e6 4e6

For each size (synthetic power-law graph as in benchmarks/inference.py,
32 features, hidden 64, T=50, 25 walks, 2 threads):
  (1) a full `layerwise_embed` run with the time spent in its chunk writes,
      chunk reads, walks and convolutions (run it at an older commit to see
      the earlier costs, e.g. the whole-file memmap writes before 8e127e8);
  (2) gathering ~400K distinct rows of a [N, 64] float32 matrix from a
      memmap (numpy fancy indexing) vs from RAM (torch index_select), ns
      per row;
  (3) pooling one 16,384-item chunk: unique + gather + sparse matmul vs one
      sparse matmul over item-id columns of the in-RAM matrix (ms per chunk).
Each size runs in a fresh process. Prints one JSON line per size.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from inference import run_isolated  # benchmarks/inference.py


def profile(n: int, threads: int) -> dict:
    import numpy as np
    import torch
    import pinsage_pyg.inference.layerwise as L
    from pinsage_pyg.data.synthetic import synthetic_graph
    from pinsage_pyg.nn import PinSage
    from pinsage_pyg.sampler.walks import importance_neighbors
    torch.set_num_threads(threads)
    spent = defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[name] += time.perf_counter() - t
            return out
        return wrapper

    csr, x = synthetic_graph(n, num_features=32, seed=0)
    torch.manual_seed(0)
    model = PinSage(32, 64, 64, num_layers=2).eval()
    saved = (L._write_rows, L._read_rows, L.importance_neighbors)
    L._write_rows = timed('write_rows', L._write_rows)
    L._read_rows = timed('read_rows', L._read_rows)
    L.importance_neighbors = timed('walks_topT', L.importance_neighbors)
    model.convolve = timed('convolve', model.convolve)
    with tempfile.TemporaryDirectory() as work:
        res = L.layerwise_embed(model, x, csr, work, num_neighbors=50,
                                num_walks=25, seed=0)
    L._write_rows, L._read_rows, L.importance_neighbors = saved
    out = {'items': n, 'embed_seconds': round(res.seconds, 1),
           'stage_seconds': {k: round(v, 1)
                             for k, v in res.stage_seconds.items()},
           'inside_seconds': {k: round(v, 1) for k, v in spent.items()}}

    # (2) and (3): one [N, 64] matrix, on disk and in RAM.
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / 'p.npy'
        mm = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32,
                                       shape=(n, 64))
        for lo in range(0, n, 1 << 20):
            hi = min(lo + (1 << 20), n)
            mm[lo:hi] = rng.random((hi - lo, 64), dtype=np.float32)
        mm.flush()
        del mm
        mm = np.load(path, mmap_mode='r')
        ram = np.load(path)
        idx = [np.unique(rng.integers(0, n, 400_000)) for _ in range(10)]
        ram_t = torch.from_numpy(ram)
        gathers = {'memmap': lambda i: mm[i],
                   'ram': lambda i: ram_t.index_select(0, torch.from_numpy(i))}
        for name, gather in gathers.items():
            gather(idx[0])  # warm
            t = time.perf_counter()
            for i in idx:
                gather(i)
            rows = sum(len(i) for i in idx)
            out[f'gather_ns_per_row_{name}'] = round(
                1e9 * (time.perf_counter() - t) / rows)
        del mm
    P = torch.from_numpy(ram)
    cs, gen = 16384, torch.Generator().manual_seed(0)
    chunks = []
    for c in range(8):
        lo = (c * (n // 8)) // cs * cs
        chunks.append(importance_neighbors(
            csr, torch.arange(lo, min(lo + cs, n)), 50, 25, 2, 0.0, gen,
            'torch'))

    def crow_of(row, m):
        crow = torch.zeros(m + 1, dtype=torch.long)
        torch.cumsum(torch.bincount(row, minlength=m), 0, out=crow[1:])
        return crow

    def unique_gather(row, item, w):
        m = int(row.max()) + 1
        src, col = torch.unique(item, return_inverse=True)
        adj = torch.sparse_csr_tensor(crow_of(row, m), col, w,
                                      (m, src.numel()))
        return adj @ P.index_select(0, src)

    def direct(row, item, w):
        m = int(row.max()) + 1
        adj = torch.sparse_csr_tensor(crow_of(row, m), item, w, (m, n))
        return adj @ P

    for name, fn in (('unique_gather', unique_gather), ('direct', direct)):
        fn(*chunks[0])  # warm
        t = time.perf_counter()
        for ch in chunks:
            fn(*ch)
        out[f'pool_ms_per_chunk_{name}'] = round(
            1e3 * (time.perf_counter() - t) / len(chunks), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--items', nargs='+', type=float, default=[1e6, 4e6])
    p.add_argument('--threads', type=int, default=2)
    args = p.parse_args()
    for n in args.items:
        out, err = run_isolated('layerwise_profile',
                                f'profile({int(n)}, {args.threads})')
        print(json.dumps(out) if out is not None else err[-2000:],
              flush=True)


if __name__ == '__main__':
    main()
