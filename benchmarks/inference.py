r"""Inference benchmarks: layer-wise vs per-node minibatch embedding,
out-of-core scaling on synthetic graphs, approximate-retrieval recall.

    PYTHONPATH=src python benchmarks/inference.py                # all
    PYTHONPATH=src python benchmarks/inference.py --parts a c --sizes 1e6
    PYTHONPATH=src python benchmarks/inference.py --sizes 1e6 2e6 4e6 1e7

Prints numbers and writes ``benchmarks/results/inference.md``. Every scale
point runs in its own process so its peak RSS (``ru_maxrss``) is its own.
Weights are untrained (timings and recall of the index do not need a
trained model; parity does not either).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / 'results'


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------ (a) -------
def layerwise_vs_minibatch(name: str, batch_sizes, threads: int) -> dict:
    from torch_geometric.loader import NodeLoader
    from pinsage_pyg.nn import PinSage
    from pinsage_pyg.sampler import (BipartiteCSR, PinSageSampler,
                                     importance_graph)
    from pinsage_pyg.training.pipeline import load_dataset
    from hydra import compose, initialize_config_module
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=[f'data={name}'])
    ds = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = PinSage(ds.num_features, 256, 128, num_layers=2).eval()
    csr = BipartiteCSR.from_hetero(ds.hetero_data())
    t = time.time()
    g = importance_graph(csr, ds.x, num_neighbors=50, num_walks=100,
                         seed=0)
    walks = time.time() - t
    out = {'dataset': name, 'items': ds.num_items,
           'features': ds.num_features, 'walk_seconds': walks}
    with torch.no_grad():
        t = time.time()
        _, full = model.inference(g.x, g.edge_index, g.edge_weight)
        out['layerwise_seconds'] = time.time() - t
        with tempfile.TemporaryDirectory() as d:
            from pinsage_pyg.inference.layerwise import layerwise_embed
            t = time.time()
            res = layerwise_embed(model, ds.x, csr, d, num_neighbors=50,
                                  num_walks=100, seed=0)
            out['out_of_core_seconds_incl_walks'] = time.time() - t
            _, ooc = res.load(mmap=False)
            out['out_of_core_max_abs_diff'] = float(
                np.abs(ooc - full.numpy()).max())
        out['minibatch'] = {}
        for bs in batch_sizes:
            loader = NodeLoader(g, node_sampler=PinSageSampler(g, 2),
                                input_nodes=torch.arange(ds.num_items),
                                batch_size=bs)
            t = time.time()
            diff = 0.0
            for b in loader:
                _, emb = model(b.x, b.edge_index, b.edge_weight,
                               b.num_sampled_nodes, b.num_sampled_edges)
                diff = max(diff, float((emb - full[b.n_id[:b.batch_size]])
                                       .abs().max()))
            sec = time.time() - t
            out['minibatch'][bs] = {
                'seconds': sec, 'max_abs_diff': diff,
                'ratio': sec / out['layerwise_seconds']}
    return out


# ------------------------------------------------------------ (b) -------
def scale_one(n: int, hidden: int, features: int, walks: int,
              work: str, threads: int) -> dict:
    from pinsage_pyg.data.synthetic import synthetic_graph
    from pinsage_pyg.inference.layerwise import layerwise_embed
    from pinsage_pyg.nn import PinSage
    torch.set_num_threads(threads)
    t = time.time()
    csr, x = synthetic_graph(n, num_features=features, seed=0)
    gen = time.time() - t
    rss_gen = peak_rss_gib()
    torch.manual_seed(0)
    model = PinSage(features, hidden, hidden, num_layers=2).eval()
    res = layerwise_embed(model, x, csr, work, num_neighbors=50,
                          num_walks=walks, seed=0, overwrite=True)
    prog = json.loads((Path(work) / 'progress.json').read_text())
    return {'items': n, 'edges': int(csr.item_users.numel()),
            'generate_seconds': gen, 'embed_seconds': res.seconds,
            'items_per_second': n / res.seconds,
            'peak_rss_gib': peak_rss_gib(), 'peak_rss_after_generate_gib':
            rss_gen, 'stages': list(prog['done']),
            'stage_seconds': res.stage_seconds}


def run_isolated(module: str, call: str):
    r"""Evaluate ``<module>.<call>`` (a module of this folder) in a fresh
    Python process, so that each measurement has its own peak RSS and
    allocator state. Returns ``(result, stderr)``: the JSON-able value the
    call returned, or ``None`` if the process failed."""
    code = (f'import json, sys; sys.path.insert(0, '
            f'{str(Path(__file__).parent)!r}); import {module} as b; '
            f'print("RESULT", json.dumps(b.{call}))')
    proc = subprocess.run([sys.executable, '-c', code],
                          capture_output=True, text=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
    if proc.returncode != 0 or not line:
        return None, proc.stderr
    return json.loads(line[0][7:]), proc.stderr


def scale(sizes, hidden, features, walks, threads, keep_1m: Path) -> list:
    rows = []
    for n in sizes:
        work = tempfile.mkdtemp(prefix=f'pinsage_scale_{n}_')
        row, err = run_isolated('inference', f'scale_one({n}, {hidden}, '
                                f'{features}, {walks}, {work!r}, {threads})')
        if row is None:
            rows.append({'items': n, 'error': err[-500:]})
            print(rows[-1], flush=True)
            continue
        if n == 1_000_000:
            keep_1m.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(work) / 'item_embeddings.npy', keep_1m)
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        rows.append(row)
        print(row, flush=True)
    return rows


# ------------------------------------------------------------ (c) -------
def recall(name: str, emb: np.ndarray, kinds: dict, num_queries: int = 2000
           ) -> list:
    from pinsage_pyg.inference.export import build_faiss_index, recall_at_k
    rng = np.random.default_rng(0)
    q = emb[np.sort(rng.choice(len(emb), min(num_queries, len(emb)),
                               replace=False))]
    exact = build_faiss_index(emb, 'flat')
    t = time.time()
    exact.search(q, 10)
    exact_ms = (time.time() - t) / len(q) * 1e3
    rows = []
    for kind, params in kinds.items():
        t = time.time()
        index = build_faiss_index(emb, kind, **params)
        build = time.time() - t
        t = time.time()
        index.search(q, 10)
        ms = (time.time() - t) / len(q) * 1e3
        rows.append({'set': name, 'items': len(emb), 'index': kind,
                     'params': params, 'build_seconds': build,
                     'recall@10': recall_at_k(index, emb, q, 10, exact),
                     'ms_per_query': ms, 'exact_ms_per_query': exact_ms})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--parts', nargs='+', default=['a', 'b', 'c'])
    p.add_argument('--datasets', nargs='+', default=['movielens_100k'],
                   help='datasets of part (a)')
    p.add_argument('--recall-datasets', nargs='+',
                   default=['movielens_100k', 'movielens_1m'])
    p.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 64])
    p.add_argument('--sizes', nargs='+', type=float,
                   default=[1e6, 2e6, 4e6])
    p.add_argument('--hidden', type=int, default=64)
    p.add_argument('--features', type=int, default=32)
    p.add_argument('--walks', type=int, default=100)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--note', default='',
                   help='how the machine was shared, for the report')
    p.add_argument('--out', default='inference',
                   help='results/<out>.md and .json')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import faiss
    faiss.omp_set_num_threads(args.threads)
    t0 = time.time()
    report = {'machine': f'{platform.machine()}, {os.cpu_count()} cores'
              f'{" (" + args.note + ")" if args.note else ""}, torch '
              f'{torch.__version__}, {args.threads} threads'}
    if 'a' in args.parts:
        report['a'] = [layerwise_vs_minibatch(d, args.batch_sizes,
                                              args.threads)
                       for d in args.datasets]
        print(report['a'], flush=True)
    keep = Path(tempfile.gettempdir()) / 'pinsage_bench_1m_emb.npy'
    if 'b' in args.parts:
        report['b'] = scale([int(s) for s in args.sizes], args.hidden,
                            args.features, args.walks, args.threads, keep)
    if 'c' in args.parts:
        rows = []
        for d in args.recall_datasets:
            emb = _dataset_embeddings(d)
            n = len(emb)
            rows += recall(d, emb, {
                'ivf': dict(nlist=int(np.sqrt(n)), nprobe=4),
                'hnsw': dict(hnsw_m=16, ef_search=64, ef_construction=40)})
        if keep.exists():
            emb = np.load(keep)
            rows += recall('synthetic 1M', emb, {
                'ivf': dict(nlist=1000, nprobe=16),
                'ivfpq': dict(nlist=1000, nprobe=16, pq_m=16),
                'hnsw': dict(hnsw_m=16, ef_search=64, ef_construction=40)})
        report['c'] = rows
    report['total_seconds'] = time.time() - t0
    write_markdown(report, args)


def _dataset_embeddings(name: str) -> np.ndarray:
    from hydra import compose, initialize_config_module
    from pinsage_pyg.nn import PinSage
    from pinsage_pyg.sampler import BipartiteCSR, importance_graph
    from pinsage_pyg.training.pipeline import load_dataset
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=[f'data={name}'])
    ds = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = PinSage(ds.num_features, 256, 128).eval()
    g = importance_graph(BipartiteCSR.from_hetero(ds.hetero_data()), ds.x,
                         seed=0)
    with torch.no_grad():
        return model.inference(g.x, g.edge_index, g.edge_weight)[1].numpy()


def write_markdown(r: dict, args) -> None:
    lines = ['# Inference benchmarks', '',
             f'Command: `PYTHONPATH=src python benchmarks/inference.py '
             f'{" ".join(sys.argv[1:])}`', '',
             f'Machine: {r["machine"]}. Total {r["total_seconds"]:.0f} s.',
             '']
    if 'a' in r:
        lines += ['## (a) Layer-wise vs per-node minibatch embedding of all '
                  'items (K=2, T=50, 100 walks, hidden 256, out 128)', '',
                  '| dataset | items | walks (s) | layer-wise in memory (s) '
                  '| out-of-core incl. walks (s) | minibatch batch | '
                  'minibatch (s) | minibatch / layer-wise | max abs diff |',
                  '|---|---|---|---|---|---|---|---|---|']
        for a in r['a']:
            for bs, m in a['minibatch'].items():
                lines.append(
                    f"| {a['dataset']} | {a['items']} | "
                    f"{a['walk_seconds']:.2f} | "
                    f"{a['layerwise_seconds']:.3f} | "
                    f"{a['out_of_core_seconds_incl_walks']:.2f} | {bs} | "
                    f"{m['seconds']:.2f} | **{m['ratio']:.0f}x** | "
                    f"{m['max_abs_diff']:.1e} |")
        lines += ['', 'Both sides use the same importance neighbourhoods; '
                  'the walks are timed separately. Out-of-core vs '
                  'in-memory max abs diff: ' + ', '.join(
                      f"{a['out_of_core_max_abs_diff']:.1e}"
                      for a in r['a']) + '.', '']
    if 'b' in r:
        lines += [f'## (b) Out-of-core scaling on synthetic power-law graphs '
                  f'(features {args.features}, hidden = out = {args.hidden},'
                  f' K=2, T=50, {args.walks} walks of length 2)', '',
                  '| items | edges | generate (s) | embed (s) | items/s | '
                  'peak RSS (GiB) |', '|---|---|---|---|---|---|']
        ok = [b for b in r['b'] if 'error' not in b]
        for b in r['b']:
            if 'error' in b:
                lines.append(f"| {b['items']:,} | failed: "
                             f"{b['error'][-120:]!r} | | | | |")
                continue
            lines.append(f"| {b['items']:,} | {b['edges']:,} | "
                         f"{b['generate_seconds']:.0f} | "
                         f"{b['embed_seconds']:.0f} | "
                         f"{b['items_per_second']:,.0f} | "
                         f"{b['peak_rss_gib']:.2f} |")
        t = {b['items']: b['embed_seconds'] for b in ok}
        if len(t) > 1:
            lo, hi = min(t), max(t)
            lines += ['', f"Time ratio {hi:,} / {lo:,} items: "
                      f"**{t[hi] / t[lo]:.2f}x** (linear = "
                      f"{hi / lo:.0f}x)."]
        lines += ['', 'Embed time includes the walks, all layers and the '
                  'hashing of the run fingerprint; peak RSS includes the '
                  'generated graph and the resident pages of the memmaps.',
                  '']
        staged = [b for b in ok if b.get('stage_seconds')]
        if staged:
            names = list(staged[-1]['stage_seconds'])
            lines += ['Seconds per stage, and per 1M items:', '',
                      '| items | ' + ' | '.join(names) + ' |',
                      '|---|' + '---|' * len(names)]
            for b in staged:
                m = b['items'] / 1e6
                lines.append(f"| {b['items']:,} | " + ' | '.join(
                    f"{b['stage_seconds'].get(k, 0):.0f} "
                    f"({b['stage_seconds'].get(k, 0) / m:.0f})"
                    for k in names) + ' |')
            lines.append('')
    if 'c' in r:
        lines += ['## (c) Recall@10 of approximate indexes vs exact inner '
                  'product (2000 sampled item queries)', '',
                  '| set | items | index | params | build (s) | recall@10 |'
                  ' ms/query | exact ms/query |',
                  '|---|---|---|---|---|---|---|---|']
        for c in r['c']:
            lines.append(f"| {c['set']} | {c['items']:,} | {c['index']} | "
                         f"{c['params']} | {c['build_seconds']:.1f} | "
                         f"**{c['recall@10']:.3f}** | "
                         f"{c['ms_per_query']:.3f} | "
                         f"{c['exact_ms_per_query']:.3f} |")
        lines.append('')
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f'{args.out}.md'
    out.write_text('\n'.join(lines))
    (RESULTS / f'{args.out}.json').write_text(json.dumps(r, indent=1,
                                                       default=str))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
