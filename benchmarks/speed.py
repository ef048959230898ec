"""Sampler and training throughput on this machine (prints numbers).

    python benchmarks/speed.py [--threads 1] [--items 100000]

Measures, side by side in one run:
  * bare random walks (item->user->item steps/s),
  * importance neighbourhoods (walks + visit counting + top-T) in seeds/s,
    and the top-T overhead relative to the bare walk,
  * PinSageSampler K-hop subgraph construction (batches/s),
  * training throughput (positive pairs/s) of the default model on
    MovieLens-100K, with and without a loader worker process.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def timeit(fn, repeat=3):
    fn()  # warm-up
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def sampler_bench(num_items: int, threads: int) -> dict:
    from pinsage_pyg.data.synthetic import synthetic_interactions
    from pinsage_pyg.sampler import (BipartiteCSR, importance_neighbors,
                                     random_walk)
    torch.set_num_threads(threads)
    inter, _ = synthetic_interactions(num_users=num_items // 2,
                                      num_items=num_items,
                                      num_interactions=num_items * 10,
                                      num_clusters=max(1, num_items // 100))
    user = torch.from_numpy(inter['user'].str[1:].astype(int).to_numpy())
    item = torch.from_numpy(inter['item'].str[1:].astype(int).to_numpy())
    csr = BipartiteCSR.from_edges(user, item, num_items // 2, num_items)
    seeds = torch.randint(num_items, (2048, ))
    W, L, T = 100, 2, 50
    walk_t = timeit(lambda: random_walk(csr, seeds.repeat_interleave(W), L))
    imp_t = timeit(lambda: importance_neighbors(csr, seeds, T, W, L))
    steps = seeds.numel() * W * L
    return {
        'graph_items': num_items, 'graph_edges': int(item.numel()),
        'seeds': seeds.numel(), 'num_walks': W, 'walk_length': L, 'T': T,
        'walk_steps_per_s': steps / walk_t,
        'walk_only_seeds_per_s': seeds.numel() / walk_t,
        'importance_seeds_per_s': seeds.numel() / imp_t,
        'top_T_overhead': imp_t / walk_t,
    }


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
    p.add_argument('--threads', type=int, default=1,
                   help='intra-op threads for the sampler benchmark')
    p.add_argument('--items', type=int, default=100_000)
    p.add_argument('--out', default=None, help='write results as JSON')
    args = p.parse_args()
    res = {'machine': f"{platform.machine()}, {os.cpu_count()} cores, "
                      f"torch {torch.__version__}"}
    res['sampler'] = sampler_bench(args.items, args.threads)
    # Thread/worker combinations side by side (the main process' intra-op
    # threads x loader worker processes): on 2 cores oversubscription hurts.
    res['training'] = [training_bench(t, w)
                       for t, w in ((1, 0), (1, 1), (2, 0), (2, 1))]
    s = res['sampler']
    print(f"machine: {res['machine']}")
    print(f"random walk: {s['walk_steps_per_s']:.3g} steps/s "
          f"({s['graph_items']} items, {s['graph_edges']} edges)")
    print(f"importance neighbourhoods (W={s['num_walks']}, "
          f"L={s['walk_length']}, T={s['T']}): "
          f"{s['importance_seeds_per_s']:.0f} seeds/s vs bare walk "
          f"{s['walk_only_seeds_per_s']:.0f} seeds/s "
          f"(top-T overhead x{s['top_T_overhead']:.2f})")
    for t in res['training']:
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
