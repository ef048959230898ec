r"""The item cold-start protocol: new items, held out of training entirely.

1. **Split** (:func:`new_item_split`): the items whose *first* interaction
   falls in the last :obj:`share` of the log's timeline (global timestamp
   quantile) are the *new items*. Every interaction of a new item is removed
   from the training log, hence from training and from the training graph.
2. **Evaluation** (:func:`cold_start_splits`), on the dataset built from the
   *full* log with the same item table (same item order): the usual
   leave-last-out rows (query = the user's last train item, target = the
   user's last interaction, candidates = all items minus the user's train
   items), grouped into

   - ``new target``: the held-out next item is a new item;
   - ``new query``: the query item is a new item;
   - ``warm``: neither is new.

Two settings embed the new items differently:

- **zero-shot**: embed on the training log, where the new items have no
  interactions (features only);
- **fresh**: ``pinsage-embed`` with the trained checkpoint on the full
  log, whose graph holds every interaction up to each user's evaluation
  point (the dataset's train split: ``pinsage-embed graph=train``, since
  the evaluation targets are each user's last two interactions), without
  retraining (the paper's daily embedding of new pins).

Training should not know the new items at all: ``benchmarks/cold_start.py``
also leaves their rows out of the training item table (in it they would be
negatives of every batch, recognisable by their log degree of 0).

``benchmarks/cold_start.py`` runs both with the baselines of
:func:`cold_start_baselines`.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor
import torch.nn.functional as F

from pinsage_pyg.data.dataset import GRAPH_FEATURES, PinSageDataset
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.evaluation.baselines import (EmbeddingScorer, Scorer,
                                              cooccurrence_scorer,
                                              popularity_scorer,
                                              transition_scorer)
from pinsage_pyg.evaluation.protocols import (LeaveLastOutSplit,
                                              evaluate_leave_last_out)
from pinsage_pyg.utils import gather_csr_rows

__all__ = [
    'NewItemSplit',
    'new_item_split',
    'new_item_mask',
    'cold_start_splits',
    'content_features',
    'cold_start_baselines',
    'evaluate_cold_start',
    'GRAPH_FEATURES',
]



class NewItemSplit(NamedTuple):
    r"""The output of :func:`new_item_split`."""
    #: The training log: the input rows of items that are not new.
    train: pd.DataFrame
    #: Raw ids of the new items (sorted).
    new_items: np.ndarray
    #: Timestamp from which a first interaction makes an item new.
    cutoff: float


def new_item_split(interactions: pd.DataFrame, share: float,
                   item_col: str = 'item',
                   time_col: str = 'timestamp') -> NewItemSplit:
    r"""Holds out the items first engaged in the last :obj:`share` of the
    timeline.

    The cutoff is the :math:`(1 - \mathrm{share})` quantile of all
    timestamps; an item whose earliest interaction is at or after it is new,
    and all its rows leave the training log.

    Args:
        interactions (pandas.DataFrame): The full log.
        share (float): Share of the timeline, in :math:`(0, 1)`.
        item_col (str): Item id column. (default: ``'item'``)
        time_col (str): Timestamp column. (default: ``'timestamp'``)
    """
    if isinstance(share, bool) or not 0.0 < float(share) < 1.0:
        raise DataError(f"new_item_split: share must be in (0, 1) (got "
                        f"{share!r}), the share of the timeline whose "
                        f"first-time items are held out.")
    for col in (item_col, time_col):
        if col not in interactions.columns:
            raise DataError(f"new_item_split: the log has no column "
                            f"'{col}' (columns: "
                            f"{list(interactions.columns)}).")
    t = interactions[time_col].to_numpy(dtype=np.float64)
    cutoff = float(np.quantile(t, 1.0 - float(share)))
    first = interactions.groupby(item_col, sort=False)[time_col].min()
    new = np.sort(first.index[first.to_numpy(dtype=np.float64) >= cutoff]
                  .to_numpy())
    if len(new) == 0:
        raise DataError(f"new_item_split: no item is first engaged in the "
                        f"last {share:.0%} of the timeline; use a larger "
                        f"share.")
    keep = ~interactions[item_col].isin(new)
    return NewItemSplit(interactions[keep].reset_index(drop=True), new,
                        cutoff)


def _rows(ds: PinSageDataset, user: Tensor, query: Tensor,
          target: Tensor) -> LeaveLastOutSplit:
    ptr, pos = gather_csr_rows(ds.train_ptr, user)
    return LeaveLastOutSplit(query, target, ptr, ds.train_item[pos])


def cold_start_splits(ds: PinSageDataset, new_items: np.ndarray,
                      split: str = 'test') -> Dict[str, LeaveLastOutSplit]:
    r"""The leave-last-out rows of :obj:`ds` (the dataset of the *full*
    log) for :obj:`split`, grouped by whether the target or the query is a
    new item: ``{'new target', 'new query', 'warm'}`` (see the module
    docstring).

    Args:
        ds (PinSageDataset): The dataset built from the full log.
        new_items (numpy.ndarray): Raw ids of the new items
            (:attr:`NewItemSplit.new_items`).
        split (str): ``'test'`` or ``'val'``. (default: ``'test'``)
    """
    if split not in ('val', 'test'):
        raise ValueError(f"split must be 'val' or 'test' (got {split!r})")
    is_new = new_item_mask(ds, new_items)
    last = ds.last_train_item()
    user, target = getattr(ds, split)
    query = last[user]
    keep = query >= 0
    user, query, target = user[keep], query[keep], target[keep]
    groups = {
        'new target': is_new[target],
        'new query': is_new[query],
        'warm': ~is_new[target] & ~is_new[query],
    }
    return {name: _rows(ds, user[m], query[m], target[m])
            for name, m in groups.items()}


def new_item_mask(ds: PinSageDataset, new_items: np.ndarray) -> Tensor:
    r"""Boolean mask :math:`[I]` of the new items in :obj:`ds`'s item
    order."""
    idx = pd.Index(ds.item_ids).get_indexer(np.asarray(new_items, dtype=str))
    if (idx < 0).any():
        raise DataError(f"{ds.name}: {int((idx < 0).sum())} new item(s) are "
                        f"not in the dataset's catalogue, e.g. "
                        f"{list(np.asarray(new_items)[idx < 0][:5])}; build "
                        f"it with the full item table.")
    mask = torch.zeros(ds.num_items, dtype=torch.bool)
    mask[torch.from_numpy(idx.astype(np.int64))] = True
    return mask


def content_features(ds: PinSageDataset) -> Tensor:
    r"""The item-table features of :obj:`ds` (:attr:`~PinSageDataset.x`
    without the interaction-derived :data:`GRAPH_FEATURES`), the input of
    the raw-feature cosine baseline."""
    cols = [j for j, n in enumerate(ds.feature_names)
            if n not in GRAPH_FEATURES]
    if not cols:
        raise DataError(f"{ds.name}: no item-table features (only "
                        f"{list(ds.feature_names)}); the raw-feature "
                        f"baseline needs an item table.")
    return ds.x[:, cols]


def cold_start_baselines(train_ds: PinSageDataset,
                         newer_ds: Optional[PinSageDataset] = None,
                         transition: Optional[dict] = None
                         ) -> Dict[str, Scorer]:
    r"""The baselines of the protocol, on the same item order.

    - ``raw-feature cosine``: cosine of :func:`content_features` (needs no
      interactions at all);
    - ``popularity (training log)``: counts on :obj:`train_ds`;
    - with :obj:`newer_ds` (the fresh setting): ``popularity``,
      ``co-occurrence cosine`` and ``transition`` counts on its train
      interactions (the newer log up to each evaluation point).
    """
    if newer_ds is not None and not np.array_equal(train_ds.item_ids,
                                                   newer_ds.item_ids):
        raise DataError("cold_start_baselines: the two datasets have "
                        "different item orders; build both with the same "
                        "item table.")
    x = F.normalize(content_features(train_ds), dim=-1)
    out: Dict[str, Scorer] = {
        'raw-feature cosine': EmbeddingScorer(x, x),
        'popularity (training log)': popularity_scorer(
            train_ds.train_item, train_ds.num_items),
    }
    if newer_ds is not None:
        d = newer_ds
        out['popularity (newer log)'] = popularity_scorer(d.train_item,
                                                          d.num_items)
        out['co-occurrence (newer log)'] = cooccurrence_scorer(
            d.train_user, d.train_item, d.num_users, d.num_items)
        out['transition (newer log)'] = transition_scorer(
            d.train_user, d.train_item, d.num_items,
            **dict(transition or {}))
    return out


def evaluate_cold_start(scorers: Dict[str, Scorer],
                        splits: Dict[str, LeaveLastOutSplit], k: int = 10,
                        seed: int = 0) -> pd.DataFrame:
    r"""HR@:obj:`k` of every scorer on every group of
    :func:`cold_start_splits`: one row per scorer, columns
    ``method``, ``'{group} hr@k'`` and ``'{group} rows'``."""
    rows = []
    for method, scorer in scorers.items():
        row: Dict[str, object] = {'method': method}
        for name, data in splits.items():
            n = int(data.query_item.numel())
            row[f'{name} hr@{k}'] = evaluate_leave_last_out(
                scorer, *data, k=k, seed=seed) if n else float('nan')
            row[f'{name} rows'] = n
        rows.append(row)
    return pd.DataFrame(rows)
