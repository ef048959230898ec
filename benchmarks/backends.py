"""Walk backends and adjacency layouts, side by side in one run.

    python benchmarks/backends.py [--threads 2] [--items 200000]

Walks (``sampler.backend``): plain PyTorch vs torch-cluster (vs pyg-lib when
importable) on a synthetic skewed item-user graph (``synthetic_graph``):
item steps/s of bare random walks (one item step = item -> user -> item, two
hops), and importance-neighbourhood seeds/s (100 walks of 2 steps, top
T=50; the training sampler's and layer-wise inference's unit of work).

Layouts (``PinSage.inference(layout=...)``, ``PinSageConv`` input): one
layer's forward + backward on a training-sized subgraph, and the
layer-wise full-graph inference (K=2, T=50), for ``edge_index``
(gather/scatter), ``csr`` / ``coo`` (torch.sparse) and ``sparse_tensor``
(torch-sparse). Each number is the best of --repeat runs. Writes
benchmarks/results/backends.md and .json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pinsage_pyg.data.synthetic import synthetic_graph
from pinsage_pyg.nn import PinSage, PinSageConv
from pinsage_pyg.nn.conv import ADJ_LAYOUTS, to_adj_t
from pinsage_pyg.sampler import (importance_graph, importance_neighbors,
                                 random_walk)
from pinsage_pyg.sampler.walk_backends import available_walk_backends
from speed import timeit as best_of  # best of `repeat` after a warm-up

ROOT = Path(__file__).resolve().parents[1]


def versions():
    out = {'torch': torch.__version__}
    for mod in ('torch_geometric', 'torch_cluster', 'torch_sparse',
                'torch_scatter', 'pyg_lib'):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--items', type=int, default=200_000)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--walkers', type=int, default=1_000_000)
    p.add_argument('--seeds', type=int, default=5_000)
    p.add_argument('--out', type=Path,
                   default=ROOT / 'benchmarks' / 'results' / 'backends')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    csr, x = synthetic_graph(args.items, num_features=64, seed=0)
    graph_info = (f"synthetic_graph({args.items:,}): {csr.num_items:,} items, "
                  f"{csr.num_users:,} users, {csr.item_users.numel():,} "
                  f"interactions (built in {time.perf_counter() - t0:.0f}s)")
    print(graph_info, flush=True)
    backends = available_walk_backends('cpu')
    res = {'graph': graph_info, 'threads': args.threads,
           'versions': versions(), 'walks': {}, 'layouts': {}}

    # --- walks ---------------------------------------------------------
    g = torch.Generator().manual_seed(0)
    start = torch.randint(csr.num_items, (args.walkers, ), generator=g)
    seeds = torch.randint(csr.num_items, (args.seeds, ), generator=g)
    for b in backends:
        row = {}
        for L, p_restart in ((2, 0.0), (8, 0.3)):
            sec = best_of(lambda: random_walk(csr, start, L, p_restart, g,
                                              backend=b), args.repeat)
            row[f'steps_per_s_L{L}_p{p_restart}'] = args.walkers * L / sec
        sec = best_of(lambda: importance_neighbors(csr, seeds, 50, 100, 2,
                                                   0.0, g, backend=b),
                      args.repeat)
        row['importance_seeds_per_s'] = args.seeds / sec
        res['walks'][b] = row
        print(b, {k: f'{v:,.0f}' for k, v in row.items()}, flush=True)

    # --- layouts -------------------------------------------------------
    layouts = [lo for lo in ADJ_LAYOUTS
               if lo != 'sparse_tensor' or res['versions']['torch_sparse']]
    ig = importance_graph(csr, None, 50, 100, 2, seed=0, backend='torch')
    ei, w = ig.edge_index, ig.edge_weight
    hidden, out = 256, 128
    # A training-sized bipartite block: 20k targets (a batch's hop-1 set)
    # pooling from all items, like layer 2 of a 2048-pair minibatch.
    num_dst = min(20_000, csr.num_items)
    mask = ei[1] < num_dst
    bei, bw = ei[:, mask], w[mask]
    conv = PinSageConv((64, 64), hidden, aggr='importance')
    model = PinSage(64, hidden, out, num_layers=2).eval()
    xs = x.clone().requires_grad_(True)
    def make_step(adj, weight, fused):
        def step():
            conv.zero_grad(set_to_none=True)
            xs.grad = None
            pooled = conv.pool(conv.project(xs), adj, weight,
                               (csr.num_items, num_dst), fused=fused)
            conv.update_nodes(x[:num_dst], pooled).square().sum().backward()
        return step

    rows = [(lo, lo) for lo in layouts]
    rows.insert(1, ('edge_index, fused (CSR built per call: the default '
                    'forward)', 'edge_index'))
    for name, lo in rows:
        row = {}
        fused = name != 'edge_index'
        adj = to_adj_t(bei, bw, (csr.num_items, num_dst), lo)
        step = make_step(adj, bw if lo == 'edge_index' else None, fused)
        row['layer_fwd_bwd_s'] = best_of(step, args.repeat)
        if name == lo:  # inference builds its own adjacency per chunk
            with torch.no_grad():
                row['full_graph_inference_s'] = best_of(
                    lambda: model.inference(x, ei, w, chunk_size=65536,
                                            layout=lo),
                    max(1, args.repeat - 1))
            row['items_per_s'] = csr.num_items / \
                row['full_graph_inference_s']
        res['layouts'][name] = row
        print(name, {k: f'{v:,.3f}' for k, v in row.items()}, flush=True)

    # --- report --------------------------------------------------------
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix('.json').write_text(json.dumps(res, indent=2))
    v = res['versions']
    lines = [
        '# Walk backends and adjacency layouts', '',
        f"Command: `python benchmarks/backends.py --items {args.items} "
        f"--threads {args.threads}`  ",
        f"Machine: {platform.machine()}, {args.threads} torch threads; "
        f"torch {v['torch']}, PyG {v['torch_geometric']}, torch-cluster "
        f"{v['torch_cluster']}, torch-sparse {v['torch_sparse']}, "
        f"torch-scatter {v['torch_scatter']}, pyg-lib {v['pyg_lib']}.  ",
        f"Graph: {graph_info}. Best of {args.repeat}.", '',
        '## Random walks (`sampler.backend`)', '',
        "| backend | item steps/s, L=2 | item steps/s, L=8, restart 0.3 | "
        "importance seeds/s (T=50, 100 walks x 2) |",
        '|---|---:|---:|---:|']
    base = res['walks']['torch']
    for b, r in res['walks'].items():
        rel = r['importance_seeds_per_s'] / base['importance_seeds_per_s']
        lines.append(
            f"| {b} | {r['steps_per_s_L2_p0.0']:,.0f} | "
            f"{r['steps_per_s_L8_p0.3']:,.0f} | "
            f"{r['importance_seeds_per_s']:,.0f} ({rel:.2f}x) |")
    lines += [
        '', f"(One item step = two hops, item -> user -> item, "
        f"{args.walkers:,} walkers; {args.seeds:,} seeds for the "
        f"neighbourhoods.)", '',
        '## Adjacency layouts (`PinSageConv` input, '
        '`PinSage.inference(layout=...)`)', '',
        f"| layout | one layer fwd+bwd, {num_dst:,} targets x T=50 (s) | "
        f"full-graph inference, K=2 (s) | items/s |",
        '|---|---:|---:|---:|']
    for lo, r in res['layouts'].items():
        full = (f"{r['full_graph_inference_s']:.2f} | "
                f"{r['items_per_s']:,.0f}") if 'items_per_s' in r else \
            '(same as csr) | '
        lines.append(f"| {lo} | {r['layer_fwd_bwd_s']:.3f} | {full} |")
    text = '\n'.join(lines) + '\n'
    args.out.with_suffix('.md').write_text(text)
    print(text)


if __name__ == '__main__':
    main()
