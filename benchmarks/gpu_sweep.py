"""A validation-only tuning sweep of `pinsage-train`, many runs side by side
on one machine (written for a lent GPU host: one short call, no network).

    python benchmarks/gpu_sweep.py --out DIR [--slots 8] [--budget 480] \
        [--phase2-at 300] [--top 3] [--seeds 1 2] [--quick]

Phase 1 runs every variant of VARIANTS (seed 0) as slots free up, in the
order listed. At --phase2-at seconds no further variant starts and, as
soon as one has finished (or when phase 1 is done), the finished
variants are ranked by **validation** HR@10 and the --top best, plus the
base recipe, are rerun with --seeds: test scores are read, never
used to choose. Every run gets a wall-clock cap (+trainer.max_time) so it
ends with the best-validation checkpoint evaluated before --budget runs
out. Writes DIR/sweep.md (one row per run, then mean ± std per variant
over the seeds it ran) and DIR/sweep.json.

--quick: ML-100K, one CPU epoch per run, two variants (a dry run of the
driver on any machine).

On the GPU host (no network): install hydra-core, omegaconf and antlr4
from benchmarks/wheels (see benchmarks/gpu.sh) into a --target folder on
PYTHONPATH, copy the MovieLens cache to build/data and set
PINSAGE_DATA_ROOT=build/data (both travel with the call).
Result of 2026-12-04: benchmarks/results/gpu_sweep_movielens_1m.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

BASE = ['experiment=movielens_1m', 'trainer=gpu', 'threads=1',
        'data.num_workers=1', 'evaluate.baselines=false',
        'output.faiss_index=false', 'output.embeddings=false',
        'checkpoint.every_n_train_steps=0', 'progress=log']

# (name, overrides) in priority order; every override is validated by the
# config checks of pinsage-train, a bad one fails its run only.
VARIANTS = [
    ('base', []),
    ('features_only', ['model.num_layers=0']),
    ('layers1', ['model.num_layers=1']),
    ('epochs40', ['trainer.max_epochs=40']),
    ('win12_d0.85', ['data.positives.window=12', 'data.positives.decay=0.85']),
    ('temp0.05', ['loss.temperature=0.05']),
    ('lr0.001_e40', ['loss.full.lr=0.001', 'trainer.max_epochs=40']),
    ('recency', ['data.recency_feature=true']),
    ('text2048', ['data.features.text_dim=2048']),
    ('hidden512', ['model.hidden_channels=512']),
    ('back1.0', ['data.positives.backward=1.0']),
    ('T10', ['sampler.num_neighbors=10']),
    ('walk_window1', ['sampler.window=1']),
    ('wd1e-5', ['optimizer.weight_decay=1e-5']),
    ('temp0.15', ['loss.temperature=0.15']),
    ('nbr_dropout0.3', ['model.neighbor_dropout=0.3']),
    ('lr0.004', ['loss.full.lr=0.004']),
    ('win5', ['data.positives.window=5']),
    ('back0.25', ['data.positives.backward=0.25']),
    ('no_degree', ['data.degree_feature=false']),
    ('dropout0.1_e40', ['model.dropout=0.1', 'trainer.max_epochs=40']),
    ('walks200_len3', ['sampler.num_walks=200', 'sampler.walk_length=3']),
]

QUICK_BASE = ['data=movielens_100k', 'trainer.max_epochs=1', 'threads=1',
              'data.num_workers=1', 'evaluate.baselines=false',
              'output.faiss_index=false', 'output.embeddings=false',
              'checkpoint.every_n_train_steps=0', 'progress=log',
              'loss.full.steps_per_epoch=3']
QUICK_VARIANTS = [('base', []), ('temp0.15', ['loss.temperature=0.15'])]


def max_time(seconds: float) -> str:
    s = max(30, int(seconds))
    return f'00:{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}'


class Run:
    def __init__(self, name, overrides, seed, out, base, deadline):
        self.name, self.overrides, self.seed = name, overrides, seed
        self.dir = out / f'{name}-seed{seed}'
        # Leave ~70 s after training for the test evaluation and exit.
        cap = deadline - time.time() - 70
        cmd = [sys.executable, '-c',
               'import sys; from pinsage_pyg.cli import train; '
               'sys.exit(train())', *base, *overrides, f'seed={seed}',
               f'+trainer.max_time={max_time(cap)}',
               f'hydra.run.dir={self.dir}']
        self.cmd = cmd
        self.t0 = time.time()
        self.log = open(out / f'{name}-seed{seed}.log', 'w')
        self.proc = subprocess.Popen(cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.result = None

    def poll(self):
        rc = self.proc.poll()
        if rc is None:
            return False
        self.log.close()
        self.seconds = time.time() - self.t0
        row = {'run': self.name, 'seed': self.seed, 'rc': rc,
               'seconds': round(self.seconds, 1),
               'overrides': ' '.join(self.overrides)}
        try:
            df = pd.read_csv(self.dir / 'metrics.csv')
            me = df[df['method'].str.startswith('PinSage')].iloc[0]
            for c in df.columns:
                if c != 'method':
                    row[c] = float(me[c])
        except Exception as e:  # a failed run: keep its return code
            row['error'] = f'{type(e).__name__}: {e}'
        try:
            s = json.loads((self.dir / 'summary.json').read_text())
            row['epochs'] = s.get('epochs_this_run')
            row['fit_seconds'] = s.get('fit_seconds')
            row['best'] = Path(str(s.get('best_checkpoint'))).name
        except Exception:
            pass
        self.result = row
        return True

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--out', required=True)
    p.add_argument('--slots', type=int, default=8)
    p.add_argument('--budget', type=float, default=480)
    p.add_argument('--phase2-at', type=float, default=300)
    p.add_argument('--top', type=int, default=3)
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2])
    p.add_argument('--quick', action='store_true')
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = QUICK_BASE if args.quick else BASE
    variants = QUICK_VARIANTS if args.quick else VARIANTS
    by_name = dict(variants)
    start = time.time()
    deadline = start + args.budget
    queue = [(n, o, 0) for n, o in variants]
    running, done = [], []
    phase2 = stop1 = False
    val_col = None
    while queue or running or (stop1 and not phase2 and not done):
        for r in list(running):
            if r.poll():
                running.remove(r)
                done.append(r.result)
                print(json.dumps(r.result), flush=True)
        now = time.time()
        if not phase2 and not stop1 and now - start >= args.phase2_at:
            stop1 = True
            queue = []  # unstarted phase-1 variants are dropped
        ok = [d for d in done if d['seed'] == 0 and d['rc'] == 0
              and any(k.startswith('val') for k in d)]
        # Phase 2 starts once phase 1 is stopped (or done) and at least
        # one variant has finished: the ranking waits for a first result.
        if not phase2 and ok and (stop1 or not (queue or running)):
            phase2 = True
            queue = []
            val_col = next(k for k in ok[0] if k.startswith('val')
                           and 'hr@' in k.lower())
            ranked = sorted(ok, key=lambda d: -d.get(val_col, -1))
            best = [d['run'] for d in ranked[:args.top]]
            if 'base' not in best:
                best.append('base')
            print(f'phase 2 at {now - start:.0f} s: {best} by {val_col}',
                  flush=True)
            queue = [(n, by_name[n], s) for s in args.seeds for n in best]
        while queue and len(running) < args.slots and \
                deadline - time.time() > 150:
            n, o, s = queue.pop(0)
            running.append(Run(n, o, s, out, base, deadline))
        if time.time() > deadline:
            for r in running:
                r.kill()
            break
        if not running and queue:  # not enough time left for another run
            break
        time.sleep(2)
    for r in running:
        if r.result is None:
            r.kill()
            r.poll()
            done.append(r.result)
    (out / 'sweep.json').write_text(json.dumps(done, indent=1))
    df = pd.DataFrame(done)
    lines = [f'# Sweep ({len(done)} runs, {time.time() - start:.0f} s)', '',
             'Base: `' + ' '.join(base) + '`', '']
    if len(df):
        lines += [df.to_markdown(index=False) if _has_tabulate()
                  else df.to_string(index=False), '']
        num = [c for c in df.columns if any(
            t in c.lower() for t in ('hr@', 'mrr', 'hit'))]
        if num and 'rc' in df:
            ok = df[df['rc'] == 0]
            agg = ok.groupby('run', sort=False)[num].agg(['mean', 'std'])
            agg.columns = [f'{a} {b}' for a, b in agg.columns]
            agg['seeds'] = ok.groupby('run', sort=False)['seed'].count()
            lines += ['Mean / std over the seeds run:', '',
                      agg.round(4).to_string(), '']
    (out / 'sweep.md').write_text('\n'.join(lines))
    print('\n'.join(lines))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    main()
