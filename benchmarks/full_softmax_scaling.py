"""Cost of one exact full-softmax training step against catalogue size, next
to one sampled-softmax minibatch step: the measurement behind
``loss.full.max_items`` (``loss.mode=auto``'s threshold).

    python benchmarks/full_softmax_scaling.py --items 2000 10000 50000 100000

For each size, a synthetic catalogue (20 interactions per item, genres +
title features as in data=files) is built once; then, at the default model
size (hidden 256, out 128, K=2, T=50) and window positives (next 5 items,
decay 0.75, backward 0.5):

* full: ``PinSageModule.full_softmax_step`` on a ``full_step`` batch (a
  full-graph forward with gradients over every item, the exact softmax of
  every query row over all items), forward + backward;
* sampled: one minibatch of 1,024 pairs (shared + in-batch negatives,
  logQ), forward + backward.

Prints seconds per step, query rows per second and the peak resident memory
growth of each, and writes a markdown table with --write.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import time

import torch


def rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def main():
    from pinsage_pyg.data import build_dataset, synthetic_interactions
    from pinsage_pyg.data.features import FeatureSpec
    from pinsage_pyg.training.datamodule import PinSageDataModule
    from pinsage_pyg.training.module import PinSageModule
    from pinsage_pyg.config import SamplerConfig
    p = argparse.ArgumentParser()
    p.add_argument('--items', type=int, nargs='+',
                   default=[2000, 10000, 50000])
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--repeat', type=int, default=2)
    p.add_argument('--write', default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for n in a.items:
        inter, items = synthetic_interactions(
            num_users=max(50, n // 4), num_items=n, num_interactions=20 * n,
            seed=0)
        ds = build_dataset(inter, items, FeatureSpec(
            text_columns=['title'], text_dim=128,
            multilabel_columns=['genres']), unknown_feature_items='embed')
        model = dict(in_channels=ds.num_features, hidden_channels=256,
                     out_channels=128, num_layers=2)
        dm = PinSageDataModule(ds, 2, SamplerConfig(), positive_window=5,
                               positive_decay=0.75, positive_backward=0.5,
                               full_softmax={}, batch_size=1024)
        t = time.perf_counter()
        batch = dm.full_step(0, 0)
        build = time.perf_counter() - t
        m = PinSageModule(model, {'name': 'softmax', 'mode': 'full',
                                  'temperature': 0.1}, {'lr': 1e-3})
        gc.collect()
        base = rss_mb()
        peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            loss, _ = m.full_softmax_step(batch)
            loss.backward()
            m.zero_grad()
            times.append(time.perf_counter() - t)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        full_s = min(times)
        # One sampled minibatch (the datamodule's own loader, epoch 0):
        dm_s = PinSageDataModule(ds, 2, SamplerConfig(), positive_window=5,
                                 positive_decay=0.75, positive_backward=0.5,
                                 batch_size=1024)
        ms = PinSageModule(model, {'name': 'softmax', 'mode': 'sampled',
                                   'temperature': 0.1}, {'lr': 1e-3})
        it = iter(dm_s.train_dataloader())
        stimes = []
        for _ in range(a.repeat):
            b = next(it)
            t = time.perf_counter()
            ms.compute_loss(b).backward()
            ms.zero_grad()
            stimes.append(time.perf_counter() - t)
        samp_s = min(stimes)
        r = int(batch.rows.numel())
        rows.append(dict(items=n, query_rows=r, graph_s=build,
                         full_step_s=full_s, full_rows_s=r / full_s,
                         full_peak_mb=max(0.0, peak - max(peak0, base)),
                         sampled_step_s=samp_s,
                         sampled_rows_s=1024 / samp_s,
                         pairs_per_epoch=int(dm_s.num_epoch_pairs)))
        print(rows[-1], flush=True)
        del batch, m, ms, dm, dm_s, ds
        gc.collect()
    head = ('| items | query rows | graph build s | full step s | full rows/s '
            '| full step peak MB (growth) | sampled step s (1,024 pairs) | '
            'sampled pairs/s | sampled steps per epoch |')
    lines = [head, '|' + '---|' * 9]
    for r in rows:
        lines.append(
            f"| {r['items']:,} | {r['query_rows']:,} | {r['graph_s']:.1f} | "
            f"{r['full_step_s']:.2f} | {r['full_rows_s']:,.0f} | "
            f"{r['full_peak_mb']:,.0f} | {r['sampled_step_s']:.3f} | "
            f"{r['sampled_rows_s']:,.0f} | "
            f"{r['pairs_per_epoch'] // 1024:,} |")
    text = (f"Command: `python benchmarks/full_softmax_scaling.py --items "
            f"{' '.join(map(str, a.items))} --threads {a.threads}`  \n"
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores "
            f"(shared with other jobs), {a.threads} torch thread(s)\n\n"
            + '\n'.join(lines))
    print(text)
    if a.write:
        with open(a.write, 'w') as f:
            f.write(text + '\n')


if __name__ == '__main__':
    main()
