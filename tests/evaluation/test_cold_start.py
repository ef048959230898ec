import numpy as np
import pytest

from pinsage_pyg.data import build_dataset, synthetic_interactions
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.evaluation.cold_start import (cold_start_splits,
                                               new_item_mask, new_item_split)


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
