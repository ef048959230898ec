"""The paper's ablations (Table 1 / Sec. 4.2) on MovieLens, one table.

    python benchmarks/ablation.py --data movielens_100k --seeds 0 1 2
    python benchmarks/ablation.py --data movielens_1m --seeds 0 \
        -- data.batch_size=2048 trainer.max_epochs=3

Runs `pinsage-train experiment=ablation/<variant>` for every variant and
seed with the same budget (the data config's epochs and batch size unless
overridden), then writes one markdown table: mean ± std over seeds of
leave-last-out HR@10 (val/test) and the paper's hit-rate@10 / scaled MRR,
plus the deterministic baselines (computed once, by the first run).
Finished runs (a metrics.csv in their folder) are reused, so an interrupted
benchmark continues where it stopped.
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
VARIANTS = {
    'features_only': 'features only (MLP, no graph)',
    'max_pool': 'max-pooling',
    'mean_pool': 'mean-pooling',
    'mean_pool_hard': 'mean-pooling + hard negatives',
    'importance': 'importance pooling, no curriculum',
    'pinsage': 'PinSage (importance + curriculum)',
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data', default='movielens_100k')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS))
    p.add_argument('--out-dir', default=str(ROOT / 'benchmarks' / 'runs'))
    p.add_argument('--write', default=None,
                   help='markdown file for the table (default: '
                   'benchmarks/results/ablation_<data>.md)')
    p.add_argument('--report-only', action='store_true',
                   help='only tabulate the runs that already finished')
    p.add_argument('overrides', nargs='*')
    args = p.parse_args()
    exe = Path(sys.executable).parent / 'pinsage-train'
    rows, baselines, seconds = [], None, []
    for variant in args.variants:
        for seed in args.seeds:
            run_dir = Path(args.out_dir) / f'ablation-{args.data}' / \
                f'{variant}-seed{seed}'
            first = baselines is None
            if args.report_only and not (run_dir / 'metrics.csv').exists():
                continue
            if not (run_dir / 'metrics.csv').exists():
                cmd = [str(exe), f'data={args.data}', f'seed={seed}',
                       f'experiment=ablation/{variant}',
                       f'evaluate.baselines={str(first).lower()}',
                       'trainer.enable_progress_bar=false',
                       f'hydra.run.dir={run_dir}', *args.overrides]
                print('$', ' '.join(cmd[1:]), flush=True)
                t = time.time()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                seconds.append(time.time() - t)
            df = pd.read_csv(run_dir / 'metrics.csv')
            ours = df[df.method == 'PinSage'].copy()
            ours['method'] = VARIANTS[variant]
            ours['seed'] = seed
            ours['variant'] = variant
            rows.append(ours)
            if first and len(df) > 1:
                baselines = df[df.method != 'PinSage']
            print(ours.drop(columns=['seed', 'variant']).to_string(
                index=False), flush=True)
    runs = pd.concat(rows)
    seeds = runs.groupby('method', sort=False)['seed'].apply(
        lambda v: ' '.join(map(str, sorted(v))))
    runs = runs.drop(columns='variant')
    cols = [c for c in runs.columns if c not in ('method', 'seed')]
    mean = runs.groupby('method', sort=False)[cols].mean()
    std = runs.groupby('method', sort=False)[cols].std(ddof=0).fillna(0.0)
    fmt = mean.copy().astype(object)
    for c in cols:
        fmt[c] = [f'{m:.4f} ± {s:.4f}' for m, s in zip(mean[c], std[c])]
    fmt.insert(0, 'seeds', seeds)
    table = fmt.reset_index()
    if baselines is not None:
        b = baselines.copy()
        for c in cols:
            b[c] = [f'{v:.4f}' for v in b[c]]
        b['seeds'] = '-'
        table = pd.concat([table, b[['method', 'seeds', *cols]]])
    lines = ['| ' + ' | '.join(table.columns) + ' |',
             '|' + '---|' * len(table.columns)]
    lines += ['| ' + ' | '.join(map(str, r)) + ' |'
              for r in table.itertuples(index=False)]
    variants = ('' if args.variants == list(VARIANTS) else
                f" --variants {' '.join(args.variants)}")
    cmd = (f"python benchmarks/ablation.py --data {args.data} --seeds "
           f"{' '.join(map(str, args.seeds))}{variants}"
           f"{' -- ' + ' '.join(args.overrides) if args.overrides else ''}")
    took = (f'; wall time per run {sum(seconds) / len(seconds):.0f} s'
            if seconds else '')
    header = (f"# Ablations on {args.data}: mean ± std over seeds "
              f"{args.seeds}\n\nCommand: `{cmd}`  \nMachine: "
              f"{platform.machine()}, {os.cpu_count()} CPU cores{took}. "
              f"Baselines are deterministic (one run).\n\n")
    text = header + '\n'.join(lines) + '\n'
    print(text)
    out = Path(args.write or ROOT / 'benchmarks' / 'results' /
               f'ablation_{args.data}.md')
    out.write_text(text)


if __name__ == '__main__':
    main()
