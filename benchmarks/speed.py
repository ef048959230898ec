"""Sampler, minibatch and training throughput on this machine (prints numbers).

    python benchmarks/speed.py [--threads 2] [--seeds 10000 100000]
        [--skip-training] [--out results.json]

Measures, side by side in one run, on the issue-16 graph (200K items, 200K
users, ~4M edges, Zipf-0.8 item popularity; T=50, 20 walks x 3 hops, no
restart):
  * importance neighbourhoods: walk, top-T counting and total seeds/s of the
    library, and of the previous implementation (torch.rand walk + one
    global unique / two stable sorts, kept below as the reference), with
    the speed-up and the top-T / walk time ratio, with the top-T time of
    both first sorts of the counting (flat radix / row-wise) end to end;
  * PinSageSampler minibatches (Algorithm 2, K=2, 1,024 query items with
    their positives and 500 shared negatives) from the precomputed
    importance graph: batches/s and the sizes of S(2), S(1), S(0);
  * training throughput (positive pairs/s) of the default model on
    MovieLens-100K, for several (threads, loader workers) combinations.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import torch

from pinsage_pyg.utils import index_to_ptr


def timeit(fn, repeat=3):
    fn()  # warm-up
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def best_of_interleaved(fns: dict, repeat: int) -> dict:
    r"""Best wall time of each callable, run in turn ``repeat`` times after
    one warm-up each (interleaved, so machine load hits all alike)."""
    for f in fns.values():
        f()
    best = {k: float('inf') for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


# ----------------------------------------- reference (previous) sampler ---
def reference_walk(csr, start, walk_length, generator=None):
    r"""The previous plain-PyTorch walk (whole history, no restart): one
    ``torch.rand`` per hop from a shared generator, -1 bookkeeping."""
    def hop(ptr, col, node):
        safe = node.clamp(min=0)
        first = ptr[safe]
        deg = ptr[safe + 1] - first
        r = torch.rand(node.shape, device=node.device, generator=generator)
        off = (r * deg).long().clamp(max=(deg - 1).clamp(min=0))
        ok = (node >= 0) & (deg > 0)
        out = col[(first + off).clamp(max=max(col.numel() - 1, 0))]
        return torch.where(ok, out, torch.full_like(node, -1))

    out = torch.empty((start.numel(), walk_length), dtype=torch.long,
                      device=start.device)
    cur = start
    for step in range(walk_length):
        if step > 0:
            cur = torch.where(cur < 0, start, cur)
        cur = hop(csr.user_ptr, csr.user_items,
                  hop(csr.item_ptr, csr.item_users, cur))
        out[:, step] = cur
    return out


def reference_top_t(visits, seeds, num_items, num_neighbors):
    r"""The previous top-T counting: one global unique over all
    ``seed * N + item`` visit keys, two stable sorts, ranks, top T."""
    n = seeds.numel()
    row = torch.arange(n, device=seeds.device).repeat_interleave(
        visits.numel() // max(n, 1))
    visits = visits.reshape(-1)
    keep = (visits >= 0) & (visits != seeds[row])
    key = row[keep] * num_items + visits[keep]
    key, count = torch.unique(key, sorted=True, return_counts=True)
    row, item = key // num_items, key % num_items
    perm = torch.sort(count, descending=True, stable=True)[1]
    perm = perm[torch.sort(row[perm], stable=True)[1]]
    row, item, count = row[perm], item[perm], count[perm]
    group_start = index_to_ptr(row, n)
    rank = torch.arange(row.numel(), device=seeds.device) - group_start[row]
    top = rank < num_neighbors
    row, item, count = row[top], item[top], count[top].to(torch.float)
    total = torch.zeros(n, device=seeds.device).index_add_(0, row, count)
    return row, item, count / total[row]


def issue_graph(num_items=200_000, num_users=200_000, edges_per_user=20,
                exponent=0.8):
    from hard_negatives import zipf_bipartite
    return zipf_bipartite(num_items, num_users, edges_per_user,
                          exponent=exponent)


def sampler_bench(csr, seed_counts, repeat: int, T=50, W=20, L=3) -> list:
    from pinsage_pyg.sampler import importance_neighbors
    from pinsage_pyg.sampler import walks
    from pinsage_pyg.sampler.walks import _keyed_walk, walk_key
    counting = walks._top_t
    N = csr.num_items
    out = []
    for n in seed_counts:
        seeds = torch.randperm(N, generator=torch.Generator().manual_seed(
            n))[:n]
        start = seeds.repeat_interleave(W)
        walk_id = torch.arange(W).repeat(n)
        gen = torch.Generator().manual_seed(0)
        ref_visits = reference_walk(csr, start, L, gen)
        key = walk_key(0)
        # The two first sorts of the top-T counting, end to end
        # (walks._top_t(flat=...); the library picks flat on one thread).
        def with_sort(flat):
            walks._top_t = functools.partial(counting, flat=flat)
            try:
                return importance_neighbors(csr, seeds, T, W, L, key=key,
                                            backend='torch')
            finally:
                walks._top_t = counting
        t = best_of_interleaved({
            'total_flat': lambda: with_sort(True),
            'total_rows': lambda: with_sort(False),
            'ref_walk': lambda: reference_walk(csr, start, L, gen),
            'ref_top_t': lambda: reference_top_t(ref_visits.view(n, -1),
                                                 seeds, N, T),
            'walk': lambda: _keyed_walk(csr, start, walk_id, L, 0.0, key,
                                        None),
            'total': lambda: importance_neighbors(csr, seeds, T, W, L,
                                                  key=key, backend='torch'),
        }, repeat)
        ref_total = t['ref_walk'] + t['ref_top_t']
        top_t = max(t['total'] - t['walk'], 0.0)
        out.append({
            'seeds': n, 'num_walks': W, 'walk_length': L, 'T': T,
            'walk_seeds_per_s': n / t['walk'],
            'top_t_seeds_per_s': n / top_t if top_t > 0 else float('inf'),
            'total_seeds_per_s': n / t['total'],
            'ref_walk_seeds_per_s': n / t['ref_walk'],
            'ref_top_t_seeds_per_s': n / t['ref_top_t'],
            'ref_total_seeds_per_s': n / ref_total,
            'speedup_total': ref_total / t['total'],
            'speedup_walk': t['ref_walk'] / t['walk'],
            'speedup_top_t': t['ref_top_t'] / top_t if top_t > 0 else None,
            'top_t_over_walk': top_t / t['walk'],
            'ref_top_t_over_walk': t['ref_top_t'] / t['ref_walk'],
            'top_t_flat_over_walk': t['total_flat'] / t['walk'] - 1,
            'top_t_rows_over_walk': t['total_rows'] / t['walk'] - 1,
        })
    return out


def minibatch_bench(csr, repeat: int, batch=1024, negatives=500, T=50,
                    W=20, L=3, K=2) -> dict:
    from torch_geometric.sampler import EdgeSamplerInput, NegativeSampling
    from pinsage_pyg.sampler import PinSageSampler, importance_graph
    t0 = time.perf_counter()
    graph = importance_graph(csr, num_neighbors=T, num_walks=W,
                             walk_length=L, seed=0, backend='torch')
    build = time.perf_counter() - t0
    sampler = PinSageSampler(graph, K, seed=0)
    # Query items with a positive: two items of the same user.
    g = torch.Generator().manual_seed(1)
    user = torch.randint(csr.num_users, (batch, ), generator=g)
    lo, deg = csr.user_ptr[user], csr.user_ptr[user + 1] - csr.user_ptr[user]
    a = csr.user_items[lo + (torch.rand(batch, generator=g) * deg).long()]
    b = csr.user_items[lo + (torch.rand(batch, generator=g) * deg).long()]
    inp = EdgeSamplerInput(input_id=torch.arange(batch), row=a, col=b)
    neg = NegativeSampling('triplet', amount=negatives)
    out = sampler.sample_from_edges(inp, neg)
    sizes = torch.tensor(out.num_sampled_nodes).cumsum(0).tolist()
    t = timeit(lambda: sampler.sample_from_edges(inp, neg), repeat)
    return {'batch_size': batch, 'negatives': negatives, 'K': K,
            'graph_build_s': build, 'batches_per_s': 1 / t,
            'seconds_per_batch': t,
            'S2': sizes[0], 'S1': sizes[1], 'S0': sizes[-1],
            'edges': int(out.edge.numel())}


def training_bench(threads: int, num_workers: int, steps: int = 30) -> dict:
    from omegaconf import OmegaConf
    from pinsage_pyg.training.datamodule import PinSageDataModule, SamplerConfig
    from pinsage_pyg.training.module import PinSageModule
    from pinsage_pyg.training.pipeline import load_dataset
    from hydra import compose, initialize_config_module
    torch.set_num_threads(threads)
    with initialize_config_module('pinsage_pyg.configs', version_base='1.3'):
        cfg = compose('train')
    ds = load_dataset(cfg.data)
    dm = PinSageDataModule(ds, cfg.model.num_layers,
                           SamplerConfig(**cfg.sampler),
                           batch_size=cfg.data.batch_size,
                           num_workers=num_workers)
    module = PinSageModule(
        model=dict(in_channels=ds.num_features,
                   **OmegaConf.to_container(cfg.model)),
        loss=OmegaConf.to_container(cfg.loss),
        optimizer=OmegaConf.to_container(cfg.optimizer))
    opt = module.configure_optimizers()
    loader = dm.train_dataloader()
    it = iter(loader)
    n, t0 = 0, None
    for step in range(steps + 3):
        batch = next(it, None)
        if batch is None:
            it = iter(loader)
            batch = next(it)
        if step == 3:
            t0 = time.perf_counter()
            n = 0
        loss = module.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += batch.src_index.numel()
    dt = time.perf_counter() - t0
    return {'threads': threads, 'num_workers': num_workers,
            'batch_size': cfg.data.batch_size,
            'hidden': cfg.model.hidden_channels,
            'out': cfg.model.out_channels, 'T': cfg.sampler.num_neighbors,
            'pairs_per_s': n / dt, 'seconds_per_step': dt / steps}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--threads', type=int, default=2,
                   help='intra-op threads for the sampler benchmarks')
    p.add_argument('--seeds', type=int, nargs='+', default=[10_000, 100_000])
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--skip-training', action='store_true')
    p.add_argument('--out', default=None, help='write results as JSON')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = {'machine': f"{platform.machine()}, {os.cpu_count()} cores "
                      f"(shared with other jobs), torch {torch.__version__}",
           'threads': args.threads}
    csr = issue_graph()
    res['graph'] = {'items': csr.num_items, 'users': csr.num_users,
                    'edges': int(csr.item_users.numel()),
                    'popularity': 'Zipf-0.8'}
    res['sampler'] = sampler_bench(csr, args.seeds, args.repeat)
    res['minibatch'] = minibatch_bench(csr, args.repeat)
    if not args.skip_training:
        # Thread/worker combinations side by side (the main process'
        # intra-op threads x loader worker processes): on 2 cores
        # oversubscription hurts.
        res['training'] = [training_bench(t, w)
                           for t, w in ((1, 0), (1, 1), (2, 0), (2, 1))]
    gr = res['graph']
    print(f"machine: {res['machine']}, {args.threads} thread(s)")
    print(f"graph: {gr['items']} items, {gr['users']} users, {gr['edges']} "
          f"edges, Zipf-0.8")
    for s in res['sampler']:
        print(f"importance neighbourhoods, {s['seeds']} seeds (W={s['num_walks']}"
              f", L={s['walk_length']}, T={s['T']}), seeds/s "
              f"walk / top-T / total: now {s['walk_seeds_per_s']:.0f} / "
              f"{s['top_t_seeds_per_s']:.0f} / {s['total_seeds_per_s']:.0f}, "
              f"previous {s['ref_walk_seeds_per_s']:.0f} / "
              f"{s['ref_top_t_seeds_per_s']:.0f} / "
              f"{s['ref_total_seeds_per_s']:.0f}; speed-up x"
              f"{s['speedup_total']:.2f} (walk x{s['speedup_walk']:.2f}); "
              f"top-T time = {s['top_t_over_walk']:.2f} x walk (previous "
              f"{s['ref_top_t_over_walk']:.2f}); first sort flat / "
              f"row-wise: top-T = {s['top_t_flat_over_walk']:.2f} / "
              f"{s['top_t_rows_over_walk']:.2f} x walk")
    m = res['minibatch']
    print(f"minibatch (K={m['K']}, {m['batch_size']} query items + "
          f"positives, {m['negatives']} shared negatives): "
          f"{m['batches_per_s']:.2f} batches/s ({m['seconds_per_batch']:.3f}"
          f" s/batch); |S(2)|={m['S2']}, |S(1)|={m['S1']}, "
          f"|S(0)|={m['S0']}, {m['edges']} edges; importance graph of all "
          f"items built in {m['graph_build_s']:.1f} s")
    for t in res.get('training', []):
        print(f"training (ML-100K, batch {t['batch_size']}, hidden "
              f"{t['hidden']}, out {t['out']}, T={t['T']}, "
              f"{t['threads']} thread(s), {t['num_workers']} loader "
              f"worker(s)): {t['pairs_per_s']:.0f} positive pairs/s "
              f"({t['seconds_per_step']:.3f} s/step)")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=2)


if __name__ == '__main__':
    main()
