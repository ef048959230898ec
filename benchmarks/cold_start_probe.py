"""What places new items badly in zero-shot: their log degree, or their
empty neighbourhood?

    python benchmarks/cold_start_probe.py --data synthetic \
        --share 0.2 --run /tmp/cs_synth/nd0.0-seed0

Reads a run folder of benchmarks/cold_start.py (its checkpoint and its
zero-shot embeddings, kept with --work-dir) and re-embeds the new items
features-only (in the zero-shot graph they have no neighbours, and no warm
item has them as neighbours, so nothing else changes) with their log-degree
feature set to log(1 + 0) (clipped to the trained range; what
pinsage-embed gave them before commit 5dc6bdc), to the training mean (what
it gives them now) and to the training maximum, and once more with the mean
and the item itself as its only neighbour (a neighbourhood imputed from its
features, instead of pooling zero). Prints,
per value, the share of other new items among each new item's top-10
neighbours (all items are candidates; the base rate is the new items' share
of the catalogue) and, on --data synthetic, the same-cluster share of the
top 10, next to raw-feature cosine.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cold_start import load
from pinsage_pyg.data.dataset import GRAPH_FEATURES
from pinsage_pyg.data.features import (FeatureSpec, build_item_features,
                                       standardize_column)
from pinsage_pyg.evaluation.cold_start import new_item_split
from pinsage_pyg.inference.embed import build_model, load_checkpoint


def top10(emb: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    emb = F.normalize(emb.float(), dim=-1)
    sim = emb[rows] @ emb.T
    sim[torch.arange(len(rows)), torch.from_numpy(rows)] = -float('inf')
    return sim.topk(10, dim=1).indices.numpy()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--data', default='synthetic')
    p.add_argument('--share', type=float, default=0.2)
    p.add_argument('--run', required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    inter, items, spec, truth = load(args.data)
    split = new_item_split(inter, args.share)
    kwargs, weights, schema = load_checkpoint(run, return_features=True)
    stats = schema['feature_stats']
    if schema['feature_names'][-1] != 'log_degree':
        raise SystemExit(f"{run}: the model's last feature is not "
                         f"log_degree ({schema['feature_names'][-1:]})")
    model = build_model(kwargs, weights, len(schema['feature_names']))
    table = items.set_index('item')
    x, names = build_item_features(table, FeatureSpec(**spec), stats=stats)
    ids = pd.read_parquet(run / 'emb-zero-shot' / 'items.parquet')[
        'item_id'].astype(str)
    assert list(ids) == list(table.index.astype(str))
    is_new = ids.isin(split.new_items).to_numpy()
    rows = np.flatnonzero(is_new)
    stored = torch.from_numpy(np.load(run / 'emb-zero-shot' /
                                      'item_embeddings.npy'))
    print(f"{args.data}, {run.name}: {len(rows)} new items of {len(ids)} "
          f"(base rate {is_new.mean():.3f})")
    ld = stats['log_degree']
    none = torch.empty(2, 0, dtype=torch.long)
    self_loops = torch.arange(len(rows)).repeat(2, 1)
    for label, raw, edges in (
            ('log(1 + 0), clipped', 0.0, none),
            ('training mean (pinsage-embed)', ld['mean'], none),
            ('training max', ld['max'], none),
            ('training mean, self-neighbour', ld['mean'], self_loops)):
        deg = standardize_column(np.full(len(rows), raw), 'log_degree',
                                 stats, clip=True)
        xr = torch.from_numpy(np.concatenate([x[rows], deg], axis=1))
        with torch.no_grad():
            er = model.inference(xr, edges, torch.ones(edges.size(1)))[1]
        emb = stored.clone()
        emb[rows] = er
        top = top10(emb, rows)
        line = (f"log degree {label:30s} new items in top-10 {is_new[top].mean():.3f}"
                f"  (max |diff| to the stored zero-shot embeddings "
                f"{float((er - stored[rows]).abs().max()):.2g})")
        if truth is not None:
            line += (f"  same-cluster@10 "
                     f"{(truth[top] == truth[rows][:, None]).mean():.3f}")
        print(line)
    if truth is not None:
        cols = [j for j, n in enumerate(names) if n not in GRAPH_FEATURES]
        top = top10(torch.from_numpy(x[:, cols]), rows)
        print(f"{'raw-feature cosine':41s} new items in top-10 "
              f"{is_new[top].mean():.3f}  same-cluster@10 "
              f"{(truth[top] == truth[rows][:, None]).mean():.3f}")


if __name__ == '__main__':
    main()
