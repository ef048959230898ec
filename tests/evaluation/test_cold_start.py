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
