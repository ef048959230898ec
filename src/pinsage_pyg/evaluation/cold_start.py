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

The leave-last-out rows hold few new items (a user's last two ratings are
rarely of a movie released late: 30 test rows with a new target on
ML-100K, 0-9 on ML-1M), so there is also a **timeline** protocol
(:func:`timeline_split`, :func:`timeline_splits`) with every later
engagement as an evaluation row:

- the training log is everything before the cutoff, the
  :math:`(1 - \mathrm{share})` time quantile; the items first engaged at or
  after it are new (none of their interactions is in training);
- every engagement at or after the evaluation time (the
  :math:`(1 - \mathrm{eval\_share})` quantile, after the cutoff) is a row:
  query = the user's previous engagement, target = the engaged item,
  candidates = every item minus those the user engaged before;
- **zero-shot** embeds on the training log; **fresh** embeds on the newer
  log, everything before the evaluation time (new items first engaged
  between the cutoff and the evaluation time have interactions there), with
  the trained checkpoint and no retraining;
- rows are grouped as above and split by user into validation and test
  halves (choose on one, report the other).
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
    'TimelineSplit',
    'timeline_split',
    'timeline_splits',
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


def _first_engaged_from(interactions: pd.DataFrame, cutoff: float,
                        share: float, item_col: str, time_col: str,
                        fn: str) -> np.ndarray:
    r"""Sorted raw ids of the items first engaged at or after
    :obj:`cutoff` (the new items); refuses a split without any."""
    first = interactions.groupby(item_col, sort=False)[time_col].min()
    new = np.sort(first.index[first.to_numpy(dtype=np.float64) >= cutoff]
                  .to_numpy())
    if len(new) == 0:
        raise DataError(f"{fn}: no item is first engaged in the last "
                        f"{share:.0%} of the timeline; use a larger share.")
    return new


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
    new = _first_engaged_from(interactions, cutoff, share, item_col,
                              time_col, 'new_item_split')
    keep = ~interactions[item_col].isin(new)
    return NewItemSplit(interactions[keep].reset_index(drop=True), new,
                        cutoff)


class TimelineSplit(NamedTuple):
    r"""The output of :func:`timeline_split`."""
    #: The training log: every interaction before :attr:`cutoff`.
    train: pd.DataFrame
    #: The newer log of the fresh setting: every interaction before
    #: :attr:`eval_time`.
    newer: pd.DataFrame
    #: Raw ids of the new items (first engaged at or after the cutoff).
    new_items: np.ndarray
    #: The evaluation rows (raw ids): ``user``, ``query`` (the user's
    #: previous engagement), ``target`` and ``position`` (the target's
    #: 0-based position in the user's chronological log), one per
    #: engagement at or after :attr:`eval_time` that is not a repeat of an
    #: item the user engaged before.
    rows: pd.DataFrame
    #: The full log sorted by user, then time (the rows' histories).
    log: pd.DataFrame
    cutoff: float
    eval_time: float


def timeline_split(interactions: pd.DataFrame, share: float,
                   eval_share: float, user_col: str = 'user',
                   item_col: str = 'item',
                   time_col: str = 'timestamp') -> TimelineSplit:
    r"""The timeline cold-start protocol (module docstring): the training
    log before the :math:`(1 - \mathrm{share})` time quantile, the newer
    log before the :math:`(1 - \mathrm{eval\_share})` quantile, and every
    engagement from there on as an evaluation row.

    Args:
        interactions (pandas.DataFrame): The full log.
        share (float): Share of the timeline whose first-time items are
            new, in :math:`(0, 1)`.
        eval_share (float): Share of the timeline whose engagements are
            evaluated, in :math:`(0, \mathrm{share})`.
    """
    for name, v, hi in (('share', share, 1.0),
                        ('eval_share', eval_share, share)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                not 0.0 < float(v) < float(hi):
            raise DataError(f"timeline_split: {name} must be in (0, "
                            f"{hi:g}) (got {v!r}): the evaluated share of "
                            f"the timeline must be smaller than the share "
                            f"whose first-time items are new.")
    for col in (user_col, item_col, time_col):
        if col not in interactions.columns:
            raise DataError(f"timeline_split: the log has no column "
                            f"'{col}' (columns: "
                            f"{list(interactions.columns)}).")
    t = interactions[time_col].to_numpy(dtype=np.float64)
    cutoff = float(np.quantile(t, 1.0 - float(share)))
    eval_time = float(np.quantile(t, 1.0 - float(eval_share)))
    if not cutoff < eval_time:
        raise DataError(f"timeline_split: the cutoff ({cutoff:g}) and the "
                        f"evaluation time ({eval_time:g}) coincide (too "
                        f"many equal timestamps); use shares further "
                        f"apart.")
    new = _first_engaged_from(interactions, cutoff, share, item_col,
                              time_col, 'timeline_split')
    log = interactions.sort_values([user_col, time_col], kind='stable') \
        .reset_index(drop=True)
    pos = log.groupby(user_col, sort=False).cumcount().to_numpy()
    prev = log.groupby(user_col, sort=False)[item_col].shift(1)
    # Re-engagements are no rows: the candidates exclude what the user
    # engaged before, the target included.
    again = log.duplicated([user_col, item_col]).to_numpy()
    at = (log[time_col].to_numpy(dtype=np.float64) >= eval_time) & \
        prev.notna().to_numpy() & ~again
    rows = pd.DataFrame({'user': log[user_col].to_numpy()[at],
                         'query': prev.to_numpy()[at],
                         'target': log[item_col].to_numpy()[at],
                         'position': pos[at]})
    rows['query'] = rows['query'].astype(log[item_col].dtype)
    if len(rows) == 0:
        raise DataError("timeline_split: no engagement after the "
                        "evaluation time has an earlier one of its user; "
                        "use a larger eval_share.")
    tt = interactions[time_col].to_numpy(dtype=np.float64)
    return TimelineSplit(
        interactions[tt < cutoff].reset_index(drop=True),
        interactions[tt < eval_time].reset_index(drop=True),
        new, rows, log.rename(columns={user_col: 'user', item_col: 'item'}),
        cutoff, eval_time)


def timeline_splits(ds: PinSageDataset, split: TimelineSplit,
                    max_warm_rows: Optional[int] = 20000,
                    seed: int = 0) -> Dict[str, LeaveLastOutSplit]:
    r"""The rows of :func:`timeline_split` as inputs of
    :func:`~pinsage_pyg.evaluation.evaluate_leave_last_out`, in
    :obj:`ds`'s item order (build :obj:`ds` with the full item table):
    ``'{val|test} {new target|new query|warm}'``. Users are split at random
    (:obj:`seed`) into a validation and a test half; at most
    :obj:`max_warm_rows` warm rows per half are kept (a random sample), the
    rows with a new item all. A row's candidates exclude every item its
    user engaged before the target."""
    index = pd.Index(ds.item_ids)
    log_item = index.get_indexer(split.log['item'].astype(str))
    q = index.get_indexer(split.rows['query'].astype(str))
    t = index.get_indexer(split.rows['target'].astype(str))
    if (log_item < 0).any():
        raise DataError(f"{ds.name}: {int((log_item < 0).sum())} logged "
                        f"item(s) are not in the dataset's catalogue; build "
                        f"it with the full item table.")
    is_new = new_item_mask(ds, split.new_items).numpy()
    users = split.rows['user'].to_numpy()
    g = np.random.default_rng(seed)
    uniq = np.unique(users)
    val_users = set(g.permutation(uniq)[:len(uniq) // 2].tolist())
    in_val = np.fromiter((u in val_users for u in users), bool, len(users))
    # Where each user's chronological log starts in split.log:
    log_users = split.log['user'].to_numpy()
    starts = pd.Series(np.arange(len(log_users))).groupby(
        log_users, sort=False).min()
    start = starts.reindex(users).to_numpy()
    pos = split.rows['position'].to_numpy()
    out = {}
    for part, m in (('val', in_val), ('test', ~in_val)):
        groups = {'new target': m & is_new[t], 'new query': m & is_new[q],
                  'warm': m & ~is_new[t] & ~is_new[q]}
        for name, sel in groups.items():
            idx = np.flatnonzero(sel)
            if name == 'warm' and max_warm_rows is not None and \
                    len(idx) > max_warm_rows:
                idx = np.sort(g.choice(idx, max_warm_rows, replace=False))
            lengths = pos[idx]
            ptr = np.zeros(len(idx) + 1, dtype=np.int64)
            np.cumsum(lengths, out=ptr[1:])
            hist = np.concatenate(
                [log_item[s:s + n] for s, n in zip(start[idx], lengths)]) \
                if len(idx) else np.zeros(0, dtype=np.int64)
            out[f'{part} {name}'] = LeaveLastOutSplit(
                torch.from_numpy(q[idx].astype(np.int64)),
                torch.from_numpy(t[idx].astype(np.int64)),
                torch.from_numpy(ptr), torch.from_numpy(
                    hist.astype(np.int64)))
    return out


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
