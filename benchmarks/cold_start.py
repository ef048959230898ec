"""The item cold-start protocol (pinsage_pyg.evaluation.cold_start), 3 seeds.

    python benchmarks/cold_start.py --data movielens_100k --seeds 0 1 2 \
        --neighbor-dropout 0 0.3 -- trainer.max_epochs=5
    python benchmarks/cold_start.py --data synthetic --seeds 0 1 2 \
        --neighbor-dropout 0 0.3 -- trainer.max_epochs=5

For every seed and neighbour-dropout value: the items first engaged in the
last --share of the timeline are held out, `pinsage-train` (pipeline.run)
trains on the log without them, then `pinsage-embed` (inference.embed.run)
embeds the catalogue twice with the trained checkpoint and no retraining:
on the training log (zero-shot: new items features only) and on the full
log (fresh: the newer log up to each user's evaluation point, i.e.
`graph=train`). Validation- and test-split leave-last-out HR@10 is
reported for rows whose target is a new item, rows whose query is a new
item, and warm rows, next to the baselines of
cold_start_baselines on the same split.

`--protocol timeline --share S --eval-share E` (timeline_split) instead
trains on everything before the (1 - S) time quantile and evaluates every
engagement after the (1 - E) quantile (query = the user's previous
engagement), users split into validation and test halves: zero-shot embeds
on the training log, fresh on the newer log (everything before the
evaluation time, graph=all), baselines on the same logs:

    python benchmarks/cold_start.py --data movielens_100k --protocol \
        timeline --share 0.3 --eval-share 0.15 --seeds 0 1 2 On `--data synthetic` (clustered
catalogue, noisy features) it also reports the same-cluster share of the
new items' top-10 neighbours. Writes benchmarks/results/cold_start_<data>.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module

from pinsage_pyg.data.dataset import build_dataset
from pinsage_pyg.data.features import FeatureSpec
from pinsage_pyg.evaluation.baselines import EmbeddingScorer
from pinsage_pyg.evaluation.cold_start import (cold_start_baselines,
                                               cold_start_splits,
                                               content_features,
                                               evaluate_cold_start,
                                               new_item_mask, new_item_split,
                                               timeline_split,
                                               timeline_splits)
from pinsage_pyg.inference import embed
from pinsage_pyg.training import pipeline

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS_FEATURES = dict(text_columns=['title'], text_dim=512,
                          multilabel_columns=['genres'], multilabel_sep='|',
                          numeric_columns=['year'], missing='indicator')
SYNTH_FEATURES = dict(text_columns=['title'], text_dim=128,
                      multilabel_columns=['genres'], multilabel_sep='|',
                      numeric_columns=['year'], missing='indicator')


def load(name: str):
    r"""``(interactions, items, feature spec, true cluster or None)``."""
    if name == 'synthetic':
        from pinsage_pyg.data.synthetic import synthetic_interactions
        inter, items = synthetic_interactions(
            num_users=600, num_items=800, num_interactions=30000,
            num_clusters=16, stay_prob=0.85, feature_noise=0.5,
            with_cluster=True, release_share=0.5, seed=0)
        truth = items['cluster'].to_numpy()
        return inter, items.drop(columns='cluster'), SYNTH_FEATURES, truth
    from pinsage_pyg.data.movielens import fetch_movielens
    root = Path.home() / '.cache' / 'pinsage_pyg'
    inter, items = fetch_movielens(name, root)
    return inter, items, MOVIELENS_FEATURES, None


def data_overrides(path: Path, items: Path, spec) -> list:
    out = ['data=files', f'data.interactions={path}', f'data.items={items}',
           'data.unknown_feature_items=embed', 'data.name=cold_start']
    for key, value in spec.items():
        if isinstance(value, list):
            value = '[' + ','.join(value) + ']'
        elif key == 'multilabel_sep':
            value = f"'{value}'"
        out.append(f'data.features.{key}={value}')
    return out


def embeddings(out: Path, item_ids: np.ndarray):
    table = pd.read_parquet(out / 'items.parquet')
    assert np.array_equal(table['item_id'].astype(str).to_numpy(), item_ids)
    item = torch.from_numpy(np.load(out / 'item_embeddings.npy'))
    q = out / 'query_embeddings.npy'
    query = torch.from_numpy(np.load(q)) if q.exists() else item
    return query, item


def same_cluster_share(emb: torch.Tensor, rows: torch.Tensor,
                       truth: np.ndarray, k: int = 10) -> float:
    emb = F.normalize(emb.float(), dim=-1)
    s = emb[rows] @ emb.T
    s[torch.arange(rows.numel()), rows] = -float('inf')
    top = s.topk(k, dim=1).indices.numpy()
    t = truth
    return float((t[top] == t[rows.numpy()][:, None]).mean())


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data', default='movielens_100k')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--neighbor-dropout', type=float, nargs='+',
                   default=[0.0, 0.3])
    p.add_argument('--share', type=float, default=0.1,
                   help='share of the timeline whose first-time items are '
                   'new (default 0.1)')
    p.add_argument('--protocol', choices=['last', 'timeline'],
                   default='last',
                   help="'last': leave-last-out rows of the full log; "
                   "'timeline': every engagement after --eval-share")
    p.add_argument('--eval-share', type=float, default=0.15,
                   help='timeline: share of the timeline whose engagements '
                   'are evaluated (default 0.15)')
    p.add_argument('--max-warm-rows', type=int, default=20000,
                   help='timeline: warm rows kept per half (a sample)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--work-dir', default=None)
    p.add_argument('--write', default=None)
    p.add_argument('overrides', nargs='*',
                   help='Hydra overrides of the training run (after --)')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    inter, items, spec, truth = load(args.data)
    timeline = args.protocol == 'timeline'
    split = timeline_split(inter, args.share, args.eval_share) if timeline \
        else new_item_split(inter, args.share)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix='cold_start_'))
    work.mkdir(parents=True, exist_ok=True)
    items_p, old_p, full_p = (work / 'items.parquet', work / 'train.parquet',
                              work / 'full.parquet')
    items.to_parquet(items_p, index=False)
    # Training knows nothing of the new items: not their interactions, nor
    # their rows of the item table (they would be negatives of every batch,
    # told apart by their log degree 0 and pushed away from every query).
    old_items_p = work / 'train_items.parquet'
    items[~items['item'].astype(str).isin(split.new_items)] \
        .to_parquet(old_items_p, index=False)
    split.train.to_parquet(old_p, index=False)
    # The fresh setting's log: the full log (its graph=train leaves each
    # user's last two out), or on the timeline everything before the
    # evaluation time (all of it in the graph).
    (split.newer if timeline else inter).to_parquet(full_p, index=False)
    fs = FeatureSpec(**spec)
    common = dict(features=fs, unknown_feature_items='embed')
    old_ds = build_dataset(split.train, items, name='cold_start', **common)
    full_ds = build_dataset(inter, items, name='cold_start', **common)
    newer_ds = build_dataset(split.newer, items, name='cold_start',
                             holdout='none', **common) if timeline \
        else full_ds
    assert np.array_equal(full_ds.item_ids, newer_ds.item_ids)
    # Validation rows choose (e.g. the neighbour dropout), test rows report:
    if timeline:
        splits = timeline_splits(full_ds, split,
                                 max_warm_rows=args.max_warm_rows)
    else:
        splits = {f'{part} {group}': rows for part in ('val', 'test')
                  for group, rows in cold_start_splits(
                      full_ds, split.new_items, part).items()}
    is_new = new_item_mask(full_ds, split.new_items)
    print(f"{args.data}: {len(split.new_items)} new items (first engaged "
          f"after the {1 - args.share:.0%} time quantile), "
          f"{len(split.train)} of {len(inter)} interactions kept for "
          f"training; test rows: " + ', '.join(
              f"{k} {v.query_item.numel()}" for k, v in splits.items()),
          flush=True)
    base = cold_start_baselines(old_ds, newer_ds,
                                transition=dict(window=8, decay=0.75,
                                                backward_weight=0.5))
    base_table = evaluate_cold_start(base, splits)
    extra = {}
    if truth is not None:
        x = content_features(old_ds)
        extra['raw-feature cosine'] = same_cluster_share(
            x, torch.nonzero(is_new).flatten(), truth)

    # Feature switches of the training run (data.recency_feature, ...)
    # must reach the embedding job too (its schema check refuses others).
    data_extra = [o for o in args.overrides
                  if o.lstrip('+').startswith('data.')]
    rows = []
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base=None):
        for p_drop in args.neighbor_dropout:
            for seed in args.seeds:
                run = work / f'nd{p_drop}-seed{seed}'
                t0 = time.time()
                cfg = compose('train', overrides=[
                    *data_overrides(old_p, old_items_p, spec), f'seed={seed}',
                    f'threads={args.threads}', f'output.dir={run}',
                    'evaluate.baselines=false', 'output.embeddings=false',
                    'trainer.enable_progress_bar=false',
                    f'model.neighbor_dropout={p_drop}', *args.overrides])
                summary = pipeline.run(cfg)
                fit = time.time() - t0
                ckpt = summary['best_checkpoint']
                out = {}
                # The incremental update is pinsage-embed keep=<the
                # zero-shot embeddings> on the newer log: items engaged in
                # the training log keep their vectors, new ones are fresh.
                for setting, name, log, extra in (
                        ('zero-shot', 'zero-shot', old_p, []),
                        ('fresh', 'fresh', full_p, []),
                        ('fresh, new items only', 'keep', full_p,
                         [f"keep='{run}/emb-zero-shot'"])):
                    ecfg = compose('embed', overrides=[
                        *data_overrides(log, items_p, spec),
                        f"checkpoint='{ckpt}'", f'seed={seed}',
                        f'threads={args.threads}', 'progress=false',
                        f'output.dir={run}/emb-{name}', *data_extra,
                        f"graph={'all' if timeline else 'train'}",
                        'output.index=none', 'output.overwrite=true',
                        *extra])
                    embed.run(ecfg)
                    out[setting] = embeddings(run / f'emb-{name}',
                                              full_ds.item_ids)
                scorers = {f'PinSage {s}': EmbeddingScorer(*e)
                           for s, e in out.items()}
                table = evaluate_cold_start(scorers, splits)
                table['neighbor_dropout'] = p_drop
                table['seed'] = seed
                table['seconds'] = round(fit, 1)
                if truth is not None:
                    new_rows = torch.nonzero(is_new).flatten()
                    table['same-cluster@10'] = [
                        same_cluster_share(out[s][1], new_rows, truth)
                        for s in out]
                print(table.to_string(index=False), flush=True)
                rows.append(table)
    report(args, pd.concat(rows), base_table, extra, split, splits,
           time.time() - t_start)


PROTOCOL_LAST = (
    "HR@10 on the leave-last-out rows of the validation and test splits "
    "(choose on val, report test). Both settings embed with pinsage-embed "
    "graph=train (each user's last two interactions, the evaluation "
    "targets, stay out of the graph).")
PROTOCOL_TIMELINE = (
    "Timeline protocol: training on every interaction before the cutoff; "
    "HR@10 over every engagement in the last {e:.0%} of the timeline "
    "(query = the user's previous engagement, candidates = all items minus "
    "the user's earlier ones), users split at random into validation and "
    "test halves (choose on val, report test), warm rows sampled. "
    "Zero-shot embeds on the training log, fresh on the newer log "
    "(everything before the evaluation time), both graph=all, with the "
    "trained checkpoint; the newer-log baselines count on that same log.")


def report(args, runs, base_table, extra, split, splits, seconds):
    metrics = [c for c in runs.columns if c.endswith('hr@10')]
    if 'same-cluster@10' in runs.columns:
        metrics.append('same-cluster@10')
    n = runs.groupby(['neighbor_dropout', 'method']).size().max()
    lines = [f"# Item cold start on {args.data}", "",
             f"Command: `python benchmarks/cold_start.py --data {args.data} "
             f"--seeds {' '.join(map(str, args.seeds))} --neighbor-dropout "
             f"{' '.join(map(str, args.neighbor_dropout))} --share "
             f"{args.share}" + (f" --protocol timeline --eval-share "
                                f"{args.eval_share}"
                                if args.protocol == 'timeline' else '')
             + (f" -- {' '.join(args.overrides)}"
                                if args.overrides else '') + "`", "",
             f"Machine: {platform.machine()}, {args.threads} torch threads "
             f"on 2 CPU cores shared with other jobs; {seconds / 60:.0f} min "
             f"in all. New items: {len(split.new_items)} (first engaged in "
             f"the last {args.share:.0%} of the timeline), all their "
             f"interactions and their item-table rows removed from "
             f"training. Rows: " + ', '.join(
                 f"{k} {v.query_item.numel()}" for k, v in splits.items())
             + ". " + (PROTOCOL_TIMELINE.format(e=args.eval_share)
                       if args.protocol == 'timeline' else PROTOCOL_LAST)
             + f" PinSage mean ± standard error over {n} seed(s).", "",
             "| method | neighbor_dropout | " + ' | '.join(metrics) + " |",
             "|---" * (len(metrics) + 2) + "|"]
    for (p_drop, method), g in runs.groupby(['neighbor_dropout', 'method'],
                                            sort=True):
        cells = []
        for m in metrics:
            v = g[m].to_numpy(dtype=float)
            se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
            cells.append(f"{v.mean():.4f} ± {se:.4f}")
        lines.append(f"| {method} | {p_drop} | " + ' | '.join(cells) + " |")
    for _, r in base_table.iterrows():
        cells = [f"{r[m]:.4f}" if m in r else
                 (f"{extra[r['method']]:.4f}" if r['method'] in extra
                  else '') for m in metrics]
        lines.append(f"| {r['method']} | — | " + ' | '.join(cells) + " |")
    lines += ["", "Per run:", "", "```",
              runs.to_string(index=False), "```", ""]
    path = Path(args.write or ROOT / 'benchmarks' / 'results' /
                f'cold_start_{args.data}.md')
    path.write_text('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    sys.exit(main())
