r"""Producer-consumer overlap: time per training step with the minibatch
built in the main process (``num_workers=0``) or by 1-2 loader worker
processes that prepare batch t+1 (walk neighbourhoods, re-indexing,
feature gathering, negatives) while the model trains on batch t.

Also measures the two halves alone -- producing batches (loader only) and
consuming them (forward + backward + Adam on pre-built batches) -- so that
the serial bound (produce + consume) and the perfect-overlap bound
(max(produce, consume)) can be read next to the measured step time.

    python benchmarks/overlap.py                      # ML-100K defaults
    python benchmarks/overlap.py --steps 300 --workers 0 1 2 --out \
        benchmarks/results/overlap.md

``pin_memory`` only matters when batches go to a CUDA device (pinned host
memory enables asynchronous ``non_blocking`` copies); on a CPU-only
machine it is reported as not applicable.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf


def build(overrides, num_workers, pin_memory):
    from pinsage_pyg.config import SamplerConfig
    from pinsage_pyg.training.datamodule import PinSageDataModule
    from pinsage_pyg.training.module import PinSageModule
    from pinsage_pyg.training.pipeline import load_dataset
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        cfg = compose('train', overrides=list(overrides))
    ds = load_dataset(cfg.data)
    dm = PinSageDataModule(
        ds, num_layers=int(cfg.model.num_layers),
        sampler=SamplerConfig(**dict(cfg.sampler)),
        batch_size=int(cfg.data.batch_size), num_workers=num_workers,
        positive_window=int(cfg.data.positives.window), seed=0)
    module = PinSageModule(
        model=dict(in_channels=ds.num_features,
                   **OmegaConf.to_container(cfg.model)),
        loss=OmegaConf.to_container(cfg.loss),
        optimizer=OmegaConf.to_container(cfg.optimizer))
    return cfg, dm, module


class _Epoch:
    def __init__(self, epoch):
        self.current_epoch = epoch


def batches(dm, pin_memory):
    r"""Endless batches, epoch after epoch (a fresh loader per epoch, as
    with ``reload_dataloaders_every_n_epochs=1``)."""
    for epoch in itertools.count():
        dm.trainer = _Epoch(epoch)
        loader = dm.train_dataloader()
        loader.pin_memory = pin_memory
        yield from loader


def step(module, opt, batch, device):
    batch = batch.to(device, non_blocking=True)
    opt.zero_grad(set_to_none=True)
    loss = module.compute_loss(batch)
    loss.backward()
    opt.step()
    return float(loss)


def timed_steps(dm, module, steps, warmup, pin_memory, device):
    opt = torch.optim.Adam(module.parameters(), lr=3e-4)
    it = batches(dm, pin_memory)
    for _ in range(warmup):
        step(module, opt, next(it), device)
    t = time.perf_counter()
    for _ in range(steps):
        step(module, opt, next(it), device)
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--steps', type=int, default=200)
    p.add_argument('--warmup', type=int, default=10)
    p.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--threads', type=int, default=1,
                   help='intra-op threads of the training process')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available()
                   else 'cpu')
    p.add_argument('--out', type=Path, default=None)
    p.add_argument('overrides', nargs='*',
                   help='Hydra overrides of the train config')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pins = [False, True] if device.type == 'cuda' else [False]

    rows = []
    # The two halves alone, in the main process:
    cfg, dm, module = build(args.overrides, 0, False)
    module.to(device)
    it = batches(dm, False)
    t = time.perf_counter()
    pre = [next(it) for _ in range(min(args.steps, 60))]
    produce = (time.perf_counter() - t) / len(pre)
    opt = torch.optim.Adam(module.parameters(), lr=3e-4)
    for b in pre[:5]:
        step(module, opt, b, device)
    t = time.perf_counter()
    for b in pre:
        step(module, opt, b, device)
    consume = (time.perf_counter() - t) / len(pre)
    del pre
    for w in args.workers:
        for pin in pins:
            torch.manual_seed(0)
            _, dm, module = build(args.overrides, w, pin)
            module.to(device)
            s = timed_steps(dm, module, args.steps, args.warmup, pin, device)
            rows.append((w, pin, s))
            print(f"num_workers={w} pin_memory={pin}: {1e3 * s:.1f} ms/step",
                  flush=True)

    base = rows[0][2]
    lines = [
        f"# Producer-consumer overlap ({cfg.data.name}, default model and "
        f"sampler)", '',
        f"Command: `python benchmarks/overlap.py --steps {args.steps} "
        f"--workers {' '.join(map(str, args.workers))} --threads "
        f"{args.threads}{' ' + ' '.join(args.overrides) if args.overrides else ''}`",
        '',
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores visible, device `{device}`, torch "
        f"{torch.__version__}; {args.threads} intra-op thread(s) in the "
        f"training process, 1 per loader worker. Batch "
        f"{cfg.data.batch_size} pairs, T={cfg.sampler.num_neighbors}, "
        f"{cfg.sampler.num_walks} walks, {cfg.sampler.num_negatives} shared "
        f"negatives, hidden {cfg.model.hidden_channels}, out "
        f"{cfg.model.out_channels}, K={cfg.model.num_layers}; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps per "
        f"row.", '',
        f"Halves alone (main process): producing a batch "
        f"{1e3 * produce:.1f} ms, training on it {1e3 * consume:.1f} ms; "
        f"serial bound {1e3 * (produce + consume):.1f} ms/step, "
        f"perfect-overlap bound {1e3 * max(produce, consume):.1f} ms/step.",
        '',
        '| num_workers | pin_memory | ms / step | speed-up vs 0 workers |',
        '|---:|---|---:|---:|',
    ]
    for w, pin, s in rows:
        lines.append(f"| {w} | {'yes' if pin else 'n/a (CPU)' if device.type != 'cuda' else 'no'} | "
                     f"{1e3 * s:.1f} | {base / s:.2f}x |")
    text = '\n'.join(lines) + '\n'
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == '__main__':
    main()
