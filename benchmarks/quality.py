"""Quality of the main job over several seeds, next to the baselines.

    python benchmarks/quality.py --data movielens_100k --seeds 0 1 2 \
        [-- extra Hydra overrides]

Runs `pinsage-train` once per seed (the same command the README gives),
reads each run's metrics.csv and prints/writes one markdown table with the
mean and standard deviation over seeds (baselines are deterministic given
the split, so their spread is 0 except for `random`).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data', default='movielens_100k')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--out-dir', default=str(ROOT / 'benchmarks' / 'runs'))
    p.add_argument('--write', default=None,
                   help='markdown file to write the table to')
    p.add_argument('overrides', nargs='*')
    args = p.parse_args()
    exe = Path(sys.executable).parent / 'pinsage-train'
    tables, seconds = [], []
    for seed in args.seeds:
        run_dir = Path(args.out_dir) / f'{args.data}-seed{seed}'
        cmd = [str(exe), f'data={args.data}', f'seed={seed}',
               'trainer.enable_progress_bar=false',
               f'hydra.run.dir={run_dir}', *args.overrides]
        print('$', ' '.join(cmd[1:]), flush=True)
        t = time.time()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds.append(time.time() - t)
        df = pd.read_csv(run_dir / 'metrics.csv')
        df['seed'] = seed
        tables.append(df)
    all_runs = pd.concat(tables)
    cols = [c for c in all_runs.columns if c not in ('method', 'seed')]
    mean = all_runs.groupby('method', sort=False)[cols].mean()
    std = all_runs.groupby('method', sort=False)[cols].std(ddof=0)
    fmt = mean.copy().astype(object)
    for c in cols:
        fmt[c] = [f'{m:.4f} ± {s:.4f}' for m, s in zip(mean[c], std[c])]
    header = (f"# {args.data}: mean ± std over seeds {args.seeds}\n\n"
              f"Command: `python benchmarks/quality.py --data {args.data} "
              f"--seeds {' '.join(map(str, args.seeds))}"
              f"{' -- ' + ' '.join(args.overrides) if args.overrides else ''}`"
              f"  \nMachine: {platform.machine()}, {os.cpu_count()} CPU "
              f"cores; wall time per run (train + embed + evaluate): "
              f"{sum(seconds) / len(seconds):.0f} s\n\n")
    t = fmt.reset_index()
    table = '\n'.join(['| ' + ' | '.join(t.columns) + ' |',
                       '|' + '---|' * len(t.columns)] +
                      ['| ' + ' | '.join(map(str, r)) + ' |'
                       for r in t.itertuples(index=False)])
    print(header + table)
    if args.write:
        Path(args.write).write_text(header + table + '\n')


if __name__ == '__main__':
    main()
