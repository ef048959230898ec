r"""The dataset builder: the chronological leave-last-out split, training
positives, the item-user graph and the item features."""
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from pinsage_pyg.data.dataset import ENGAGED_BY, ENGAGES, build_dataset
from pinsage_pyg.data.features import FeatureSpec
from pinsage_pyg.data.interactions import read_table


def _log(rows):
    return pd.DataFrame(rows, columns=['user', 'item', 'timestamp'])


# Rows are deliberately out of order. Expected split (per user, sorted by
# (timestamp, row)):
#   u1: e(5) a(10) c(20,row 3) d(20,row 5) b(40) -> train e,a,c; val d; test b
#   u2: a(10) c(20) b(30)                         -> train a;     val c; test b
#   u3: y(1) x(5)             (< 3 interactions) -> train y,x
#   u4: a(7) c(7) b(7)   (all tied: row order)    -> train a;     val c; test b
#   u5: z(2) z(3)             (< 3, a repeat)     -> train z,z
SPLIT_ROWS = [
    ('u2', 'b', 30),
    ('u1', 'a', 10),
    ('u3', 'x', 5),
    ('u1', 'c', 20),
    ('u2', 'a', 10),
    ('u1', 'd', 20),
    ('u1', 'b', 40),
    ('u3', 'y', 1),
    ('u4', 'a', 7),
    ('u2', 'c', 20),
    ('u1', 'e', 5),
    ('u4', 'c', 7),
    ('u5', 'z', 3),
    ('u4', 'b', 7),
    ('u5', 'z', 2),
]
TRAIN = {'u1': ['e', 'a', 'c'], 'u2': ['a'], 'u3': ['y', 'x'],
         'u4': ['a'], 'u5': ['z', 'z']}
VAL = {'u1': 'd', 'u2': 'c', 'u4': 'c'}
TEST = {'u1': 'b', 'u2': 'b', 'u4': 'b'}


def _ids(ds):
    return np.asarray(ds.user_ids), np.asarray(ds.item_ids)


def train_sequences(ds):
    users, items = _ids(ds)
    ptr = ds.train_ptr.tolist()
    return {users[u]: list(items[ds.train_item[ptr[u]:ptr[u + 1]].numpy()])
            for u in range(ds.num_users) if ptr[u + 1] > ptr[u]}


def held_out(ds, split):
    users, items = _ids(ds)
    u, i = getattr(ds, split).numpy()
    out = dict(zip(users[u], items[i]))
    assert len(out) == len(u), f'a user appears twice in {split}'
    return out


def raw_pairs(ds, pairs):
    _, items = _ids(ds)
    return sorted(zip(items[pairs[0].numpy()], items[pairs[1].numpy()]))


@pytest.fixture
def split_ds():
    return build_dataset(_log(SPLIT_ROWS))


def test_split_exact_contents(split_ds):
    ds = split_ds
    assert sorted(ds.user_ids) == ['u1', 'u2', 'u3', 'u4', 'u5']
    assert train_sequences(ds) == TRAIN
    assert held_out(ds, 'val') == VAL
    assert held_out(ds, 'test') == TEST
    n = sum(map(len, TRAIN.values()))
    assert ds.train_user.numel() == ds.train_item.numel() == n
    assert ds.val.shape == ds.test.shape == (2, 3)


def test_split_train_arrays_are_user_grouped_csr(split_ds):
    ds = split_ds
    ptr = ds.train_ptr
    assert ptr.shape == (ds.num_users + 1, ) and ptr[0] == 0
    assert ptr[-1] == ds.train_user.numel()
    expected_user = torch.repeat_interleave(torch.arange(ds.num_users),
                                            ptr.diff())
    assert torch.equal(ds.train_user, expected_user)


def test_split_independent_of_row_order_without_ties():
    rng = np.random.default_rng(0)
    rows = [(f'u{u}', f'i{rng.integers(20)}', int(t))
            for u in range(6) for t in rng.permutation(50)[:2 + u]]
    df = _log(rows)
    ref = build_dataset(df)
    shuffled = build_dataset(df.iloc[rng.permutation(len(df))])
    for split in ('val', 'test'):
        assert held_out(shuffled, split) == held_out(ref, split)
    assert train_sequences(shuffled) == train_sequences(ref)
    # Every eligible user's test item is the latest, val the one before.
    for user, g in df.groupby('user'):
        g = g.sort_values('timestamp')
        if len(g) >= 3:
            assert held_out(ref, 'test')[user] == g['item'].iloc[-1]
            assert held_out(ref, 'val')[user] == g['item'].iloc[-2]
        else:
            assert user not in held_out(ref, 'val')


def test_split_ties_follow_row_order_not_item_id():
    # The same three tied rows in two orders: the split follows the rows.
    fwd = build_dataset(_log([('u', 'p', 1), ('u', 'q', 1), ('u', 'r', 1)]))
    rev = build_dataset(_log([('u', 'r', 1), ('u', 'q', 1), ('u', 'p', 1)]))
    assert (held_out(fwd, 'val'), held_out(fwd, 'test')) == (
        {'u': 'q'}, {'u': 'r'})
    assert (held_out(rev, 'val'), held_out(rev, 'test')) == (
        {'u': 'q'}, {'u': 'p'})


def test_positive_pairs_window_1(split_ds):
    pairs = split_ds.positive_pairs(window=1)
    assert pairs.dtype == torch.long and pairs.size(0) == 2
    # Consecutive train items per user; u5's (z, z) is a self pair; no pair
    # spans two users (e.g. u2's a -> u1's e in the train array).
    assert raw_pairs(split_ds, pairs) == sorted(
        [('e', 'a'), ('a', 'c'), ('y', 'x')])


def test_positive_pairs_window_2(split_ds):
    pairs = split_ds.positive_pairs(window=2)
    assert raw_pairs(split_ds, pairs) == sorted(
        [('e', 'a'), ('a', 'c'), ('y', 'x'), ('e', 'c')])
    assert bool((pairs[0] != pairs[1]).all())


def test_positive_pairs_never_cross_users():
    # Two users of 5 rows each: their train items are adjacent in the array.
    rows = [('u1', f'a{t}', t) for t in range(5)] + \
        [('u2', f'b{t}', t) for t in range(5)]
    ds = build_dataset(_log(rows))
    for window in (1, 2, 3):
        got = raw_pairs(ds, ds.positive_pairs(window))
        assert all(q[0] == p[0] for q, p in got), got
        # 3 train items per user: pairs at distance <= window.
        per_user = sum(3 - d for d in range(1, min(window, 2) + 1))
        assert len(got) == 2 * per_user


def test_last_train_item(split_ds):
    users, items = _ids(split_ds)
    last = split_ds.last_train_item()
    assert last.shape == (split_ds.num_users, )
    assert dict(zip(users, items[last.numpy()])) == {
        u: seq[-1] for u, seq in TRAIN.items()}


def test_hetero_data_has_both_directions_of_train_edges_only(split_ds):
    ds = split_ds
    data = ds.hetero_data()
    assert data['item'].num_nodes == ds.num_items
    assert data['user'].num_nodes == ds.num_users
    assert data['item'].x.shape == (ds.num_items, ds.num_features)
    fwd = data[ENGAGES].edge_index
    bwd = data[ENGAGED_BY].edge_index
    assert torch.equal(bwd, fwd.flip(0))
    users, items = _ids(ds)
    edges = Counter(zip(users[fwd[0].numpy()], items[fwd[1].numpy()]))
    expected = Counter((u, i) for u, seq in TRAIN.items() for i in seq)
    assert edges == expected
    # Held-out interactions are not edges.
    for split in (VAL, TEST):
        for pair in split.items():
            assert pair not in edges


def test_item_degree_counts_train_interactions(split_ds):
    _, items = _ids(split_ds)
    deg = dict(zip(items, split_ds.item_degree().tolist()))
    # b and d occur only held out.
    assert deg == {'a': 3, 'b': 0, 'c': 1, 'd': 0, 'e': 1, 'x': 1, 'y': 1,
                   'z': 2}


def test_log_degree_feature(split_ds):
    ds = split_ds
    assert ds.feature_names == ['log_degree']
    col = ds.x[:, ds.feature_names.index('log_degree')].double()
    deg = ds.item_degree()
    ref = torch.log1p(deg.double())
    # Items without train interactions get the others' average:
    assert (deg == 0).any() and (deg > 0).any()
    ref[deg == 0] = ref[deg > 0].mean()
    ref = (ref - ref.mean()) / ref.std(unbiased=False)
    assert torch.allclose(col, ref, atol=1e-5)
    assert torch.allclose(col[deg == 0], torch.zeros(1).double(), atol=1e-6)
    no_deg = build_dataset(_log(SPLIT_ROWS), _items(list('abcdexyz')),
                           FeatureSpec(numeric_columns=['year']),
                           degree_feature=False)
    assert 'log_degree' not in no_deg.feature_names


def _items(ids, **extra):
    n = len(ids)
    return pd.DataFrame({
        'item': ids,
        'title': [f'title of {i}' for i in ids],
        'genres': ['Drama|Comedy' if k % 2 else 'Horror' for k in range(n)],
        'year': np.arange(1990, 1990 + n, dtype=np.float64),
        **extra,
    })


def test_cold_start_items_get_feature_rows():
    table = _items(['cold', 'a', 'b', 'c', 'd', 'e', 'x', 'y', 'z', 'cold2'])
    spec = FeatureSpec(text_columns=['title'], text_dim=16,
                       multilabel_columns=['genres'],
                       numeric_columns=['year'])
    ds = build_dataset(_log(SPLIT_ROWS), table, spec,
                       unknown_feature_items='embed')
    # Item order is the item table's, cold-start items included.
    assert list(ds.item_ids) == list(table['item'])
    assert ds.x.shape == (10, ds.num_features)
    assert ds.num_features == 16 + 3 + 1 + 1  # text, genres, year, degree
    assert ds.feature_names[16:] == ['genres=Comedy', 'genres=Drama',
                                     'genres=Horror', 'year', 'log_degree']
    assert torch.isfinite(ds.x).all()
    deg = ds.item_degree()
    cold = [list(ds.item_ids).index(c) for c in ('cold', 'cold2')]
    assert deg[cold].tolist() == [0, 0]
    # Their features come from their own rows: 'cold' (row 0) is Horror,
    # 'cold2' (row 9) is Drama|Comedy, and the latest year.
    g = ds.x[:, 16:19]
    assert g[cold[0]].tolist() == [0.0, 0.0, 1.0]
    assert g[cold[1]].tolist() == [1.0, 1.0, 0.0]
    year = ds.x[:, 19]
    assert int(year.argmax()) == cold[1]
    # Zero-degree items get the average log degree (0 once standardised),
    # not a value below every engaged item's.
    logdeg = ds.x[:, -1]
    assert torch.allclose(logdeg[cold], torch.zeros(2), atol=1e-6)
    assert logdeg.min() < 0 < logdeg.max()
    # Split and graph only involve interacted items.
    assert not np.isin(cold, ds.train_item.numpy()).any()
    assert ds.hetero_data()['item'].x.size(0) == 10


def test_item_order_without_item_table_is_first_appearance(split_ds):
    assert list(split_ds.item_ids) == ['b', 'a', 'x', 'c', 'd', 'y', 'e',
                                       'z']
    assert list(split_ds.user_ids) == ['u2', 'u1', 'u3', 'u4', 'u5']


def test_numeric_missing_indicator_imputes_mean():
    table = _items(list('abcdexyz'))
    table.loc[table['item'] == 'c', 'year'] = np.nan
    ds = build_dataset(_log(SPLIT_ROWS), table,
                       FeatureSpec(numeric_columns=['year'],
                                   missing='indicator'))
    assert ds.feature_names == ['year', 'year_missing', 'log_degree']
    c = list(ds.item_ids).index('c')
    ind = ds.x[:, 1]
    assert ind.tolist() == [1.0 if k == c else 0.0
                            for k in range(ds.num_items)]
    # Mean imputation, then standardisation: the imputed value is 0.
    assert ds.x[c, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(ds.x).all()
    # Without missing values no indicator column is added.
    clean = build_dataset(_log(SPLIT_ROWS), _items(list('abcdexyz')),
                          FeatureSpec(numeric_columns=['year'],
                                      missing='indicator'))
    assert clean.feature_names == ['year', 'log_degree']


def test_custom_column_names_and_weights():
    df = _log(SPLIT_ROWS).rename(columns={'user': 'uid', 'item': 'movie',
                                          'timestamp': 'ts'})
    df['w'] = 2.0
    ds = build_dataset(df, user_col='uid', item_col='movie', time_col='ts',
                       weight_col='w')
    assert train_sequences(ds) == TRAIN
    assert held_out(ds, 'test') == TEST


@pytest.mark.parametrize('suffix', ['.csv', '.tsv', '.parquet'])
def test_read_table_formats_give_the_same_split(tmp_path, suffix):
    df = _log(SPLIT_ROWS)
    path = tmp_path / f'log{suffix}'
    if suffix == '.parquet':
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep='\t' if suffix == '.tsv' else ',')
    ds = build_dataset(read_table(path, 'interactions'))
    assert train_sequences(ds) == TRAIN
    assert held_out(ds, 'val') == VAL
    assert held_out(ds, 'test') == TEST


@pytest.mark.parametrize('with_items', [False, True])
def test_ids_map_back_from_index_tensors(with_items):
    items = _items(list('abcdexyz')) if with_items else None
    spec = FeatureSpec(numeric_columns=['year']) if with_items else None
    ds = build_dataset(_log(SPLIT_ROWS), items, spec)
    assert isinstance(ds.user_ids, np.ndarray)
    assert isinstance(ds.item_ids, np.ndarray)
    u, i = ds.test
    assert dict(zip(ds.user_ids[u], ds.item_ids[i])) == TEST


def test_session_contexts_chunk_each_users_history():
    import torch
    from pinsage_pyg.data import build_dataset
    inter = pd.DataFrame({
        'user': ['a'] * 7 + ['b'] * 4,
        'item': ['i0', 'i1', 'i2', 'i3', 'i4', 'i5', 'i6',
                 'i6', 'i5', 'i4', 'i3'],
        'timestamp': list(range(7)) + list(range(4)),
    })
    ds = build_dataset(inter)
    # Train: a -> i0..i4 (5), b -> i6, i5 (2).
    full = ds.hetero_data()
    assert full['user'].num_nodes == 2
    data = ds.hetero_data(context_size=2)
    # a: [i0 i1] [i2 i3] [i4] ; b: [i6 i5]  -> 4 contexts
    assert data['user'].num_nodes == 4
    ctx, item = data['user', 'engages', 'item'].edge_index
    names = ds.item_ids[item.numpy()]
    groups = {}
    for c, n in zip(ctx.tolist(), names):
        groups.setdefault(c, []).append(n)
    assert sorted(map(sorted, groups.values())) == [
        ['i0', 'i1'], ['i2', 'i3'], ['i4'], ['i5', 'i6']]
    assert torch.equal(data['item', 'engaged_by', 'user'].edge_index,
                       data['user', 'engages', 'item'].edge_index.flip(0))
    with pytest.raises(ValueError, match='context_size'):
        ds.hetero_data(context_size=0)


def test_recency_feature_orders_items_by_engagement_time():
    # Each user's last two (x*, y*) are held out: only old/mid/new train.
    inter = pd.DataFrame({
        'user': ['a'] * 5 + ['b'] * 5,
        'item': ['old', 'mid', 'new', 'xa', 'ya',
                 'old', 'mid', 'new', 'xb', 'yb'],
        'timestamp': [1, 5, 9, 10, 11, 2, 6, 10, 11, 12],
    })
    items = pd.DataFrame({'item': ['old', 'mid', 'new', 'xa', 'ya', 'xb',
                                   'yb', 'cold'],
                          'year': [1, 2, 3, 4, 5, 6, 7, 8]})
    ds = build_dataset(inter, items, FeatureSpec(numeric_columns=['year']),
                       unknown_feature_items='embed', recency_feature=True)
    assert ds.feature_names[-2:] == ['mean_engagement_age',
                                     'last_engagement_age']
    mean_a = dict(zip(ds.item_ids, ds.x[:, -2].tolist()))
    last_a = dict(zip(ds.item_ids, ds.x[:, -1].tolist()))
    assert mean_a['old'] > mean_a['mid'] > mean_a['new']
    assert last_a['old'] > last_a['mid'] > last_a['new']
    # Items without train engagements (held out or cold) get the average:
    assert abs(mean_a['cold'] - mean_a['xa']) < 1e-6
    seen = ['old', 'mid', 'new']
    assert abs(mean_a['cold'] - np.mean([mean_a[k] for k in seen])) < 1e-5
    # Ages do not move with the clock: the same log a year later gives the
    # same features; on a newer log with the trained statistics, an item
    # engaged at its end is as recent as 'new' was in training (timestamps
    # would clip every active item to the trained maximum).
    later = inter.assign(timestamp=inter['timestamp'] + 10**7)
    again = build_dataset(later, items, FeatureSpec(numeric_columns=['year']),
                          unknown_feature_items='embed', recency_feature=True)
    assert torch.allclose(again.x, ds.x)
    newer = pd.concat([later, pd.DataFrame({
        'user': ['a', 'b'], 'item': ['cold', 'cold'],
        'timestamp': [10**7 + 11.5, 10**7 + 12]})])
    fresh = build_dataset(newer, items, FeatureSpec(numeric_columns=['year']),
                          unknown_feature_items='embed', recency_feature=True,
                          holdout='none', feature_stats=ds.feature_stats)
    f_last = dict(zip(fresh.item_ids, fresh.x[:, -1].tolist()))
    assert f_last['cold'] < f_last['mid']
    assert abs(f_last['cold'] - last_a['new']) < 1e-5
    # A checkpoint's statistics of the earlier timestamp features keep them:
    legacy = {k: v for k, v in ds.feature_stats.items()
              if 'engagement' not in k}
    legacy.update({'mean_engagement_time': {'mean': 5.0, 'std': 3.0,
                                            'min': 1.0, 'max': 10.0},
                   'last_engagement_time': {'mean': 7.0, 'std': 3.0,
                                            'min': 1.0, 'max': 10.0}})
    old = build_dataset(inter, items, FeatureSpec(numeric_columns=['year']),
                        unknown_feature_items='embed', recency_feature=True,
                        feature_stats=legacy)
    assert old.feature_names[-2:] == ['mean_engagement_time',
                                      'last_engagement_time']
    assert torch.isfinite(ds.x).all()
