import numpy as np
import pandas as pd
import pytest
import torch

from pinsage_pyg.data import build_dataset, synthetic_interactions
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.evaluation.cold_start import (cold_start_splits,
                                               new_item_mask, new_item_split,
                                               timeline_split,
                                               timeline_splits)


def test_new_item_split_leaks_nothing_into_training():
    inter, items = synthetic_interactions(80, 120, 3000, seed=1)
    split = new_item_split(inter, 0.2)
    first = inter.groupby('item')['timestamp'].min()
    assert set(split.new_items) == set(first.index[first >= split.cutoff])
    assert not split.train['item'].isin(split.new_items).any()
    assert len(split.train) == (~inter['item'].isin(split.new_items)).sum()
    old = build_dataset(split.train, items, unknown_feature_items='embed')
    full = build_dataset(inter, items, unknown_feature_items='embed')
    is_new = new_item_mask(old, split.new_items)
    assert old.item_degree()[is_new].sum() == 0  # not in the train graph
    ei = old.hetero_data()['user', 'engages', 'item'].edge_index
    assert not is_new[ei[1]].any()
    groups = cold_start_splits(full, split.new_items)
    assert is_new[groups['new target'].target_item].all()
    assert is_new[groups['new query'].query_item].all()
    assert not is_new[groups['warm'].target_item].any()
    with pytest.raises(DataError, match='share'):
        new_item_split(inter, 1.0)


def test_synthetic_catalogue_released_over_time_has_new_items():
    kw = dict(num_users=200, num_items=300, num_interactions=6000,
              with_cluster=True, seed=5)
    a, items = synthetic_interactions(**kw)
    b, items_b = synthetic_interactions(**kw, release_share=0.5)
    # Same users, times and cluster chain; only which item of the cluster
    # is engaged changes (among the items released by then):
    assert items.equals(items_b)
    assert a[['user', 'timestamp']].equals(b[['user', 'timestamp']])
    cluster = items.set_index('item')['cluster']
    assert np.array_equal(cluster.loc[a['item']].to_numpy(),
                          cluster.loc[b['item']].to_numpy())
    assert not a['item'].equals(b['item'])
    # Users' random time offsets leave few items first engaged late; a
    # catalogue that grows over time has many:
    few = len(new_item_split(a, 0.2).new_items)
    many = len(new_item_split(b, 0.2).new_items)
    assert many >= 3 * max(few, 1)
    # An item engaged at time t in its cluster was released by t: the
    # later the engagement, the more items it chose from.
    t = b['timestamp'].to_numpy()
    early, late = t < np.quantile(t, 0.2), t > np.quantile(t, 0.8)
    assert b['item'][early].nunique() < b['item'][late].nunique()
    with pytest.raises(ValueError, match='release_share'):
        synthetic_interactions(**kw, release_share=1.0)


def test_timeline_split_rows_histories_and_no_leak():
    inter, items = synthetic_interactions(80, 120, 3000, seed=1,
                                          release_share=0.5)
    sp = timeline_split(inter, 0.3, 0.15)
    t = inter['timestamp']
    assert sp.cutoff < sp.eval_time
    # Training sees nothing from the cutoff on, hence no new item at all;
    # the newer log everything before the evaluation time:
    assert len(sp.train) == (t < sp.cutoff).sum() and \
        (sp.train['timestamp'] < sp.cutoff).all()
    assert not sp.train['item'].isin(sp.new_items).any()
    assert len(sp.newer) == (t < sp.eval_time).sum()
    first = inter.groupby('item')['timestamp'].min()
    assert set(sp.new_items) == set(first.index[first >= sp.cutoff])
    assert sp.newer['item'].isin(sp.new_items).any()  # fresh has some
    # One row per engagement from the evaluation time on that has an
    # earlier engagement of its user (its query), repeats left out:
    log = inter.sort_values(['user', 'timestamp'], kind='stable')
    has_prev = log.groupby('user').cumcount() > 0
    repeat = log.duplicated(['user', 'item'])
    assert repeat.any()  # the generator re-engages: those are no rows
    assert len(sp.rows) == ((log['timestamp'] >= sp.eval_time)
                            & has_prev & ~repeat).sum()
    full = build_dataset(inter, items, unknown_feature_items='embed')
    groups = timeline_splits(full, sp, max_warm_rows=50, seed=3)
    assert set(groups) == {f'{p} {g}' for p in ('val', 'test')
                           for g in ('new target', 'new query', 'warm')}
    is_new = new_item_mask(full, sp.new_items)
    for p in ('val', 'test'):
        assert is_new[groups[f'{p} new target'].target_item].all()
        assert is_new[groups[f'{p} new query'].query_item].all()
        w = groups[f'{p} warm']
        assert w.query_item.numel() == 50  # sampled down
        assert not is_new[w.target_item].any()
        assert not is_new[w.query_item].any()
    n_new = sum(int(groups[f'{p} new target'].query_item.numel())
                for p in ('val', 'test'))
    assert n_new == int(is_new[torch.as_tensor(pd.Index(full.item_ids)
                        .get_indexer(sp.rows['target'].astype(str)))]
                        .sum())
    # A row's excluded items are its user's earlier engagements, the query
    # (the previous one) last; the target is not among them.
    ids = np.asarray(full.item_ids)
    r = groups['test new target']
    for j in range(r.query_item.numel()):
        hist = r.exclude_item[r.exclude_ptr[j]:r.exclude_ptr[j + 1]]
        assert int(hist[-1]) == int(r.query_item[j])
        assert int(r.target_item[j]) not in hist.tolist()
        # the same history in the raw log:
        tgt = ids[int(r.target_item[j])]
        match = sp.rows[(sp.rows['target'].astype(str) == tgt) &
                        (sp.rows['position'] == hist.numel())]
        assert len(match) >= 1
    assert groups['val warm'].query_item.numel() > 0
    with pytest.raises(DataError, match='eval_share must be in'):
        timeline_split(inter, 0.2, 0.3)
    with pytest.raises(DataError, match='share must be in'):
        timeline_split(inter, 0.0, 0.1)
