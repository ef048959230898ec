r"""From an interaction log (+ item table) to the PinSage bipartite graph.

:func:`build_dataset` is the one code path for every dataset: the built-in
MovieLens loaders produce the same ``(interactions, items)`` frames a user's
CSV/Parquet files do, and both go through the same validation, the same
chronological leave-last-out split, the same features and the same graph.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from pinsage_pyg.data.features import (FeatureSpec, FeatureStats,
                                       build_item_features, check_finite,
                                       standardize_column)
from pinsage_pyg.data.interactions import (DataError, check_feature_coverage,
                                           validate_interactions,
                                           validate_item_table)

log = logging.getLogger(__name__)

ENGAGES = ('user', 'engages', 'item')
ENGAGED_BY = ('item', 'engaged_by', 'user')
#: Feature columns computed from the interactions, not from the item table.
GRAPH_FEATURES = ('log_degree', 'mean_engagement_time',
                  'last_engagement_time')


@dataclass
class PinSageDataset:
    r"""A prepared dataset: id maps, item features, the chronological
    leave-last-out split and the item-user graph of the train split.

    Items and users are integer indices; :attr:`item_ids` / :attr:`user_ids`
    map them back to the raw ids of the input.

    Attributes:
        train_user, train_item (LongTensor): Train interactions sorted by
            user, then chronologically (stable on the input row order).
        train_ptr (LongTensor): CSR pointer of the train interactions per
            user, shape ``[num_users + 1]``.
        val, test (LongTensor): Held-out ``[2, n]`` (user, item) pairs: each
            user's second-to-last and last interaction.
        feature_stats (dict): Raw mean, std, min and max of every
            standardised feature column (numeric columns and
            :data:`GRAPH_FEATURES`), stored in checkpoints so that
            ``pinsage-embed`` standardises a newer log's features the same
            way (see :func:`build_dataset`).
    """
    name: str
    item_ids: np.ndarray
    user_ids: np.ndarray
    x: Tensor
    feature_names: List[str]
    train_user: Tensor
    train_item: Tensor
    train_ptr: Tensor
    val: Tensor
    test: Tensor
    item_info: pd.DataFrame = field(repr=False)
    feature_stats: Dict[str, Dict[str, float]] = field(default_factory=dict,
                                                       repr=False)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_features(self) -> int:
        return self.x.size(1)

    def hetero_data(self, context_size: Optional[int] = None) -> HeteroData:
        r"""The bipartite item-context graph of the train split, in both
        directions (items carry features; contexts, the paper's "boards",
        do not).

        Args:
            context_size (int, optional): With :obj:`None` (default) every
                user is one context node. With an integer :math:`S`, each
                user's chronological train history is cut into consecutive
                chunks of :math:`S` engagements and every chunk is a context
                node ("sessions"), so random walks connect items engaged
                close in time rather than anywhere in a user's history.
                The context node type keeps the name ``user``.
        """
        data = HeteroData()
        data['item'].x = self.x
        data['item'].num_nodes = self.num_items
        ctx, num_ctx = self.train_user, self.num_users
        if context_size is not None:
            if context_size < 1:
                raise DataError(f"data.context_size must be >= 1 or null "
                                f"(got {context_size}).")
            pos = torch.arange(self.train_user.numel()) - \
                self.train_ptr[self.train_user]
            chunks = (self.train_ptr[1:] - self.train_ptr[:-1] +
                      context_size - 1) // context_size
            first = torch.cumsum(chunks, 0) - chunks
            ctx = first[self.train_user] + pos // context_size
            num_ctx = int(chunks.sum())
        data['user'].num_nodes = num_ctx
        ei = torch.stack([ctx, self.train_item])
        data[ENGAGES].edge_index = ei
        data[ENGAGED_BY].edge_index = ei.flip(0)
        return data

    def last_train_item(self) -> Tensor:
        r"""Each user's last train item (``-1`` for a user with none)."""
        out = torch.full((self.num_users, ), -1, dtype=torch.long)
        has = self.train_ptr[1:] > self.train_ptr[:-1]
        out[has] = self.train_item[self.train_ptr[1:][has] - 1]
        return out

    def positive_pairs(self, window: int = 1, return_distance: bool = False,
                       return_user: bool = False):
        r"""Training positives ``[2, P]`` (query, positive): for every user,
        item ``i`` engaged within :obj:`window` train steps after ``q``
        (``window=1``: the next engagement, as in the paper). Pairs of an
        item with itself are dropped. With :obj:`return_distance`, also
        returns each pair's distance in steps (``1..window``); with
        :obj:`return_user`, also the user of each pair (in that order)."""
        if window < 1:
            raise DataError(f"positives.window must be >= 1 (got {window}).")
        out, dist, users = [], [], []
        for d in range(1, window + 1):
            same = self.train_user[d:] == self.train_user[:-d]
            out.append(torch.stack([self.train_item[:-d][same],
                                    self.train_item[d:][same]]))
            dist.append(torch.full((int(same.sum()), ), d, dtype=torch.long))
            users.append(self.train_user[d:][same])
        pairs, dist = torch.cat(out, dim=1), torch.cat(dist)
        keep = pairs[0] != pairs[1]
        extra = []
        if return_distance:
            extra.append(dist[keep])
        if return_user:
            extra.append(torch.cat(users)[keep])
        return (pairs[:, keep], *extra) if extra else pairs[:, keep]

    def item_degree(self) -> Tensor:
        return torch.bincount(self.train_item, minlength=self.num_items)


def chronological_split(user: np.ndarray, timestamp: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The split rule: per user, stable-sort by (timestamp, row order); the
    last interaction is test, the second-to-last validation, the rest train.
    Users with fewer than 3 interactions keep all of them in train.

    Args:
        user (np.ndarray): Integer user index per row.
        timestamp (np.ndarray): Timestamp per row.

    Returns:
        ``(order, role)``-style triple ``(order, rank_from_end, count)``:
        :obj:`order` sorts rows by (user, timestamp, row); ``rank_from_end``
        is 0 for each user's last row (in that order), 1 for the one before;
        ``count`` is the user's number of rows (aligned with :obj:`order`).
    """
    order = np.lexsort((np.arange(len(user)), timestamp, user))
    u = user[order]
    counts = np.bincount(u)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    pos = np.arange(len(u)) - ptr[u]
    rank_from_end = counts[u] - 1 - pos
    return order, rank_from_end, counts[u]


def build_dataset(
    interactions: pd.DataFrame,
    items: Optional[pd.DataFrame] = None,
    features: Optional[FeatureSpec] = None,
    name: str = 'custom',
    user_col: str = 'user',
    item_col: str = 'item',
    time_col: str = 'timestamp',
    weight_col: Optional[str] = None,
    allow_duplicates: bool = False,
    unknown_feature_items: str = 'error',
    degree_feature: bool = True,
    recency_feature: bool = False,
    holdout: str = 'leave_last_out',
    feature_stats: Optional[Mapping[str, Mapping[str, float]]] = None,
) -> PinSageDataset:
    r"""Validates, splits and featurises an interaction log.

    Args:
        interactions (pandas.DataFrame): One row per engagement.
        items (pandas.DataFrame, optional): Item table (id column
            :obj:`item_col` + feature columns). Without it the only feature
            is ``log(degree)``.
        features (FeatureSpec, optional): Which columns become features.
        unknown_feature_items (str): What to do with item-table rows that
            never occur in the interactions: ``'error'`` (default) or
            ``'embed'`` (keep them as cold-start items, embedded from their
            features, e.g. MovieLens movies nobody rated).
        degree_feature (bool): Append standardised ``log(1 + train degree)``
            (the paper's degree feature; items without train interactions
            get the average of the others). (default: :obj:`True`)
        recency_feature (bool): Append the standardised ages of each
            item's mean and latest train engagement, ``log(1 + t_end - t)``
            with ``t_end`` the log's latest train timestamp (items without
            any get the average). Ages, not timestamps: on a newer log
            (``pinsage-embed``) a movie engaged yesterday looks as recent
            as one engaged the day before the training log ended, instead
            of clipped to the trained range with every other active item.
            A training run's :obj:`feature_stats` of the earlier timestamp
            features (``mean_engagement_time``) keep those. (default:
            :obj:`False`)
        holdout (str): ``'leave_last_out'`` (default) holds out each
            user's last two interactions (:attr:`~PinSageDataset.val`,
            :attr:`~PinSageDataset.test`), as training and evaluation need;
            ``'none'`` keeps every interaction in the graph and the
            degree/recency features (``val`` and ``test`` are empty), as
            embedding a newer log needs (``pinsage-embed graph=all``).
        feature_stats (dict, optional): A training run's
            :attr:`~PinSageDataset.feature_stats`: standardise numeric and
            interaction features with them instead of this data's own
            statistics (items without interactions get the trained
            average), and clip the interaction features (log degree,
            recency) to their trained range. Without them, an item's
            features would shift with every other item of a newer log
            (e.g. the log-degree mean).
    """
    if holdout not in {'leave_last_out', 'none'}:
        raise DataError(f"holdout must be 'leave_last_out' or 'none' (got "
                        f"{holdout!r}).")
    stats: FeatureStats = {}
    if unknown_feature_items not in {'error', 'embed'}:
        raise DataError(f"data.unknown_feature_items must be 'error' or "
                        f"'embed' (got {unknown_feature_items!r}).")
    inter = validate_interactions(interactions, user_col, item_col, time_col,
                                  weight_col, source=f'{name} interactions',
                                  allow_duplicates=allow_duplicates)
    features = features or FeatureSpec()

    if items is not None:
        table = validate_item_table(items, item_col,
                                    source=f'{name} item features')
        check_feature_coverage(table.index, inter['item'].to_numpy(),
                               source=f'{name} item features')
        extra = ~table.index.isin(inter['item'].unique())
        if extra.any() and unknown_feature_items == 'error':
            raise DataError(
                f"{name} item features: {int(extra.sum())} item(s) have "
                f"feature rows but no interactions, e.g. "
                f"{list(table.index[extra][:5])}. Remove them, or set "
                f"data.unknown_feature_items=embed to keep them as "
                f"cold-start items embedded from their features.")
        item_ids = table.index.to_numpy(dtype=str)
        x, names = build_item_features(table, features,
                                       source=f'{name} item features',
                                       stats=feature_stats, stats_out=stats)
    else:
        if (features.text_columns or features.multilabel_columns
                or features.numeric_columns):
            raise DataError(f"{name}: feature columns are configured but no "
                            f"item table was given (data.items).")
        log.warning("%s: no item table; the only item feature is "
                    "log(degree). Pass an item table for a useful model.",
                    name)
        item_ids = inter['item'].drop_duplicates().to_numpy(dtype=str)
        table = pd.DataFrame(index=pd.Index(item_ids, name='item'))
        x, names = np.zeros((len(item_ids), 0), np.float32), []

    item_index = pd.Index(item_ids)
    user_ids = inter['user'].drop_duplicates().to_numpy(dtype=str)
    user = pd.Index(user_ids).get_indexer(inter['user'])
    item = item_index.get_indexer(inter['item'])

    order, rank_from_end, count = chronological_split(
        user, inter['timestamp'].to_numpy())
    u, i = user[order], item[order]
    eligible = count >= 3
    if holdout == 'none':
        eligible = np.zeros_like(eligible)
    elif not eligible.any():
        raise DataError(
            f"{name} interactions: no user has 3 or more interactions, so "
            f"there is nothing to validate or test on (the split holds out "
            f"each user's last two). Provide a longer log.")
    is_test = eligible & (rank_from_end == 0)
    is_val = eligible & (rank_from_end == 1)
    is_train = ~(is_test | is_val)

    train_user = torch.from_numpy(u[is_train].astype(np.int64))
    train_item = torch.from_numpy(i[is_train].astype(np.int64))
    num_users = len(user_ids)
    ptr = torch.zeros(num_users + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(train_user, minlength=num_users), 0)

    if degree_feature:
        deg = np.bincount(i[is_train], minlength=len(item_ids))
        logd = np.log1p(deg).astype(np.float64)
        # Nobody engaged with the item (yet): its degree is unknown rather
        # than minimal, so it gets the average, as in the recency features.
        # A log degree of 0 marked such items apart from every item the
        # model trained on (the zero-shot embeddings of new items huddled
        # together: benchmarks/cold_start_probe.py).
        engaged = deg > 0
        if 'log_degree' in (feature_stats or {}):
            logd[~engaged] = feature_stats['log_degree']['mean']
        elif engaged.any():
            logd[~engaged] = logd[engaged].mean()
        x = np.concatenate([x, standardize_column(
            logd, 'log_degree', feature_stats, stats, clip=True)], axis=1)
        names = names + ['log_degree']
    if recency_feature:
        t = inter['timestamp'].to_numpy()[order][is_train]
        it = i[is_train]
        cnt = np.bincount(it, minlength=len(item_ids))
        mean_t = np.bincount(it, weights=t, minlength=len(item_ids))
        last_t = np.full(len(item_ids), -np.inf)
        np.maximum.at(last_t, it, t)
        seen = cnt > 0
        rec = np.stack([mean_t / np.maximum(cnt, 1), last_t], axis=1)
        if 'mean_engagement_time' in (feature_stats or {}):
            # A checkpoint from before the ages: its timestamp features.
            rec_names = ['mean_engagement_time', 'last_engagement_time']
        else:
            t_end = float(t.max()) if len(t) else 0.0
            rec = np.log1p(np.maximum(t_end - rec, 0.0))
            rec_names = ['mean_engagement_age', 'last_engagement_age']
        if seen.any():
            rec[~seen] = rec[seen].mean(axis=0)
        else:
            rec[:] = 0.0
        for j, n in enumerate(rec_names):
            if n in (feature_stats or {}):  # unseen: the trained mean
                rec[~seen, j] = feature_stats[n]['mean']
        x = np.concatenate([x, *(standardize_column(
            rec[:, j], n, feature_stats, stats, clip=True)
            for j, n in enumerate(rec_names))], axis=1)
        names = names + rec_names
    if x.shape[1] == 0:
        raise DataError(f"{name}: no item features at all (no item table and "
                        f"degree_feature=false). The model needs features.")
    check_finite(x, names, item_ids, f'{name} item features')

    def pairs(mask: np.ndarray) -> Tensor:
        return torch.from_numpy(np.stack([u[mask], i[mask]]).astype(np.int64))

    ds = PinSageDataset(
        name=name, item_ids=item_ids, user_ids=user_ids,
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        feature_names=names, train_user=train_user, train_item=train_item,
        train_ptr=ptr, val=pairs(is_val), test=pairs(is_test),
        item_info=table, feature_stats=stats)
    log.info("%s: %d users, %d items (%d without train interactions), "
             "%d train / %d val / %d test interactions, %d features", name,
             ds.num_users, ds.num_items,
             int((ds.item_degree() == 0).sum()), len(train_item),
             ds.val.size(1), ds.test.size(1), ds.num_features)
    return ds
