"""Training throughput against catalogue size (prints numbers).

    python benchmarks/train_scaling.py [--cases ml100k ml1m syn100k syn1m]
        [--threads 1] [--steps 10] [--warmup 2]
        [--train-num-neighbors 0 10] [--out results.json]

For every catalogue, in a fresh subprocess (so that the memory peak is the
catalogue's own): the importance graph of every item is precomputed once,
as the datamodule does once per epoch (timed and reported separately), then
training steps of the default model (configs/model, configs/loss,
configs/optimizer) on minibatches of the default sampler settings
(configs/sampler: T=50, K=2 layers, 500 shared negatives, batch 1024 of
configs/data) run in the main process (no loader workers, so sampling and
compute are both counted): ``--warmup`` steps, then ``--steps`` timed
steps (fewer for a case slower than ``--budget-s``, at least two). The
cores are shared, so the fastest timed step (the least disturbed) gives
the pairs/s; the mean is recorded too. Reported: positive pairs/s (pairs
of 1,024 per step), seconds per step split into minibatch
construction and forward/backward/update, the sizes of S(2), S(1), S(0)
(cumulative node sets, S(0) the whole computation graph) and the edges
of a minibatch, the precomputation time and its share of
one epoch, and the peak resident memory (``ru_maxrss``) of the case.

Catalogues: MovieLens-100K and -1M (the datamodule's graph and positives)
and synthetic 100K- and 1M-item graphs
(:func:`pinsage_pyg.data.synthetic.synthetic_graph`, 20 interactions per
warm item on average, half as many users as items, the same feature width
as MovieLens-100K so that the model is the same size); their positives are
consecutive items of a user's list.

``--train-num-neighbors`` lists the values of
``sampler.train_num_neighbors`` to measure (0: off, the full top-T; the
default), e.g. ``0 10``: every minibatch then keeps, per node, T_train
draws from its top-T neighbours by importance.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

CASES = ('ml100k', 'ml1m', 'syn100k', 'syn1m')
DATA = {'ml100k': 'movielens_100k', 'ml1m': 'movielens_1m'}
SYNTHETIC = {'syn100k': 100_000, 'syn1m': 1_000_000}


def compose_config(case: str):
    from hydra import compose, initialize_config_module
    overrides = [f'data={DATA[case]}'] if case in DATA else []
    with initialize_config_module('pinsage_pyg.configs', version_base='1.3'):
        return compose('train', overrides=overrides)


def catalogue(case: str, cfg, num_features: int):
    r"""``(name, csr, x, pairs)`` of one case."""
    from pinsage_pyg.config import SamplerConfig
    if case in DATA:
        from pinsage_pyg.training.datamodule import PinSageDataModule
        from pinsage_pyg.training.pipeline import load_dataset
        ds = load_dataset(cfg.data)
        dm = PinSageDataModule(ds, cfg.model.num_layers,
                               SamplerConfig(**cfg.sampler),
                               batch_size=cfg.data.batch_size,
                               positive_window=cfg.data.positives.window,
                               context_size=cfg.data.context_size)
        return ds.name, dm.csr, ds.x, dm.pairs
    from pinsage_pyg.data.synthetic import synthetic_graph
    csr, x = synthetic_graph(SYNTHETIC[case], mean_degree=20.0,
                             num_features=num_features, seed=0)
    # Positives: consecutive items of a user's list (no self pairs).
    a, b = csr.user_items[:-1], csr.user_items[1:]
    same_user = torch.ones(a.numel(), dtype=torch.bool)
    last = csr.user_ptr[1:-1] - 1  # the last entry of every user but one
    same_user[last[(last >= 0) & (last < a.numel())]] = False
    keep = same_user & (a != b)
    return f'synthetic_{SYNTHETIC[case] // 1000}k', csr, x, \
        torch.stack([a[keep], b[keep]])


def run_case(case: str, threads: int, steps: int, warmup: int,
             train_num_neighbors: list, num_features: int,
             budget_s: float) -> list:
    r"""One catalogue: its graph is precomputed once, then every value of
    :obj:`train_num_neighbors` is measured, smallest first and ``0``
    (off) last, so that the running peak RSS after each is its own."""
    from pinsage_pyg.config import SamplerConfig
    from pinsage_pyg.sampler import importance_graph
    torch.set_num_threads(threads)
    cfg = compose_config(case)
    sc = SamplerConfig(**cfg.sampler)
    t = time.perf_counter()
    name, csr, x, pairs = catalogue(case, cfg, num_features)
    load_s = time.perf_counter() - t

    t = time.perf_counter()  # what the datamodule does once per epoch
    graph = importance_graph(csr, None, sc.num_neighbors, sc.num_walks,
                             sc.walk_length, sc.restart_prob, seed=0,
                             backend=sc.resolve_backend(), window=sc.window)
    precompute_s = time.perf_counter() - t
    graph.x = x
    out = []
    for tt in sorted(train_num_neighbors, key=lambda v: v or float('inf')):
        r = measure(cfg, sc, graph, pairs, steps, warmup, tt, budget_s)
        r.update({'case': case, 'dataset': name,
                  'items': int(csr.num_items), 'users': int(csr.num_users),
                  'interactions': int(csr.item_users.numel()),
                  'features': int(x.size(1)), 'threads': threads,
                  'load_s': load_s, 'precompute_s': precompute_s,
                  'precompute_share_of_epoch':
                  precompute_s / (precompute_s + r['epoch_train_s'])})
        out.append(r)
    return out


def measure(cfg, sc, graph, pairs: torch.Tensor, steps: int, warmup: int,
            train_num_neighbors: int, budget_s: float) -> dict:
    r"""Training steps of a fresh default model on one precomputed
    graph."""
    from omegaconf import OmegaConf
    from torch_geometric.sampler import NegativeSampling
    from pinsage_pyg.sampler import PinSageLinkLoader, PinSageSampler
    from pinsage_pyg.training.module import PinSageModule
    torch.manual_seed(0)
    x = graph.x
    sampler = PinSageSampler(graph, cfg.model.num_layers,
                             shared_negatives=sc.shared_negatives,
                             exclude_pairs=sc.exclude_pairs, seed=0,
                             train_num_neighbors=train_num_neighbors or None)
    batch_size = int(cfg.data.batch_size)
    order = torch.randperm(pairs.size(1),
                           generator=torch.Generator().manual_seed(0))
    loader = PinSageLinkLoader(
        graph, link_sampler=sampler, edge_label_index=pairs,
        neg_sampling=NegativeSampling('triplet', sc.num_negatives),
        batch_size=batch_size, sampler=order[:batch_size * (steps + warmup)]
        .tolist(), num_workers=0)
    # Minibatch steps: the default softmax in its minibatch form (sampled,
    # logQ, in-batch negatives); loss.mode=auto would pick the full-graph
    # softmax on the small catalogues, which is not a minibatch step.
    loss_cfg = OmegaConf.to_container(cfg.loss)
    if loss_cfg.get('name') == 'softmax':
        loss_cfg['mode'] = 'sampled'
    module = PinSageModule(
        model=dict(in_channels=x.size(1),
                   **OmegaConf.to_container(cfg.model)),
        loss=loss_cfg,
        optimizer=OmegaConf.to_container(cfg.optimizer))
    opt = module.configure_optimizers()
    if isinstance(opt, tuple):  # ([optimizers], [schedulers])
        opt = opt[0][0]
    elif isinstance(opt, dict):
        opt = opt['optimizer']
    sample_s, compute_s, step_s = [], [], []
    sizes, edges = [], []
    it = iter(loader)
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        elif step > warmup + 1 and time.perf_counter() - start > budget_s:
            break  # a slow case: at least two timed steps
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss = module.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        t2 = time.perf_counter()
        if step >= warmup:
            assert int(batch.src_index.numel()) == batch_size
            sample_s.append(t1 - t0)
            compute_s.append(t2 - t1)
            step_s.append(t2 - t0)
            sizes.append(torch.tensor(batch.num_sampled_nodes).cumsum(0))
            edges.append(int(batch.edge_index.size(1)))
    timed = len(step_s)
    sizes = torch.stack(sizes).double().mean(0).tolist()
    # The machine's cores are shared: the fastest timed step is the least
    # disturbed one (the mean is recorded too).
    best = min(step_s)
    pps = batch_size / best
    num_pairs = int(pairs.size(1))
    epoch_s = num_pairs / pps
    return {
        'train_pairs': num_pairs, 'steps': timed, 'warmup': warmup,
        'batch_size': batch_size, 'T': sc.num_neighbors,
        'train_num_neighbors': train_num_neighbors or None,
        'num_walks': sc.num_walks, 'walk_length': sc.walk_length,
        'K': int(cfg.model.num_layers),
        'hidden': int(cfg.model.hidden_channels),
        'out': int(cfg.model.out_channels),
        'negatives': sc.num_negatives,
        'loss': f"{loss_cfg.get('name')}/{loss_cfg.get('mode', '-')}",
        'pairs_per_s': pps,
        'pairs_per_s_mean': batch_size * timed / sum(step_s),
        'seconds_per_step': best,
        'sample_seconds_per_step': sample_s[step_s.index(best)],
        'compute_seconds_per_step': compute_s[step_s.index(best)],
        'S2': sizes[0], 'S1': sizes[1], 'S0': sizes[-1],
        'edges': sum(edges) / len(edges),
        'epoch_train_s': epoch_s,
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        / 1024,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--cases', nargs='+', choices=CASES, default=list(CASES))
    p.add_argument('--threads', type=int, default=1,
                   help='torch intra-op threads (default 1)')
    p.add_argument('--steps', type=int, default=10,
                   help='timed training steps per case')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--budget-s', type=float, default=60.0,
                   help='stop timing a case after this many seconds (at '
                        'least two timed steps)')
    p.add_argument('--train-num-neighbors', type=int, nargs='+',
                   default=[0], help='sampler.train_num_neighbors values '
                   '(0: off, the default)')
    p.add_argument('--num-features', type=int, default=534,
                   help='feature width of the synthetic catalogues (default:'
                        ' MovieLens-100K\'s 534)')
    p.add_argument('--out', default=None, help='write results as JSON')
    p.add_argument('--one', default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # one case in this (fresh) process, JSON on stdout
        res = run_case(args.one, args.threads, args.steps, args.warmup,
                       args.train_num_neighbors, args.num_features,
                       args.budget_s)
        print('RESULT ' + json.dumps(res))
        return
    machine = (f"{platform.machine()}, {os.cpu_count()} cores (shared with "
               f"other jobs), torch {torch.__version__}")
    print(f"machine: {machine}; {args.threads} torch thread(s), no loader "
          f"workers; {args.warmup} warm-up + {args.steps} timed steps")
    results = []
    for case in args.cases:
        cmd = [sys.executable, __file__, '--one', case,
               '--threads', str(args.threads), '--steps', str(args.steps),
               '--warmup', str(args.warmup), '--budget-s',
               str(args.budget_s), '--num-features', str(args.num_features),
               '--train-num-neighbors', *map(str, args.train_num_neighbors)]
        out = subprocess.run(cmd, check=True, capture_output=True,
                             text=True).stdout
        for r in json.loads(next(line for line in out.splitlines()
                                 if line.startswith('RESULT '))[7:]):
            results.append(r)
            print(f"{r['dataset']} ({r['items']} items, {r['interactions']} "
                  f"interactions, {r['features']} features), T={r['T']}, "
                  f"T_train={r['train_num_neighbors'] or 'off'}: "
                  f"{r['pairs_per_s']:.0f} pairs/s (mean "
                  f"{r['pairs_per_s_mean']:.0f}, {r['steps']} steps), best "
                  f"{r['seconds_per_step']:.3f} s/step (minibatch "
                  f"{r['sample_seconds_per_step']:.3f} + train "
                  f"{r['compute_seconds_per_step']:.3f}); |S(2)|="
                  f"{r['S2']:.0f} |S(1)|={r['S1']:.0f} |S(0)|={r['S0']:.0f}"
                  f", {r['edges']:.0f} edges; neighbourhoods precomputed in "
                  f"{r['precompute_s']:.1f} s per epoch "
                  f"({100 * r['precompute_share_of_epoch']:.2f}% of an "
                  f"epoch of {r['train_pairs']} pairs); peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB", flush=True)
    ref = next((r['pairs_per_s'] for r in results if r['case'] == 'ml100k'
                and r['train_num_neighbors'] is None), None)
    for r in results:
        r['ratio_to_ml100k_default'] = r['pairs_per_s'] / ref if ref else None
        if ref and r['case'] != 'ml100k':
            tt = r['train_num_neighbors'] or 'off'
            print(f"{r['dataset']}, T_train={tt}: "
                  f"{r['ratio_to_ml100k_default']:.3f} x the "
                  f"ML-100K pairs/s at the default settings (issue target "
                  f"at 1M items: >= 0.333)")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'machine': machine, 'threads': args.threads,
                       'results': results}, f, indent=2)


if __name__ == '__main__':
    main()
