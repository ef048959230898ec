r"""Property-based tests (hypothesis) of the interaction and item-feature
readers: random tables with bad values, empty groups, huge and unicode
ids. Every input ends either in a result that keeps the input's meaning
or in the library's own :class:`DataError`: never another exception,
never a silently wrong result."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pinsage_pyg.data import (DataError, FeatureSpec, build_dataset,
                              build_item_features, read_table,
                              validate_interactions, validate_item_table)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

#: Ids as users write them: unicode text, huge and negative integers,
#: floats, and now and then a missing value.
text_ids = st.text(min_size=0, max_size=6)
ids = st.one_of(text_ids, st.integers(-2**70, 2**70),
                st.sampled_from(['0', '007', '１', 'é', '🎬', ' a ', 'nan',
                                 'None', '']))
maybe_missing = st.one_of(ids, st.none(), st.just(float('nan')))
timestamps = st.one_of(st.integers(-2**62, 2**62),
                       st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from(['12', 'x', '', '1e3']), st.none())
weights = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-5, 10**30), st.none(), st.just('w'))


#: Found by hypothesis: NumPy's string arrays drop trailing NULs, so
#: users '' and '\x00' collided in the id map (a pandas crash).
NUL_IDS = pd.DataFrame({'user': ['', '', '', '\x00'], 'item': ['a', 'b',
                                                             'c', 'a'],
                        'timestamp': [0, 1, 2, 0]})


def rows(elements, min_size=0, max_size=25):
    return st.lists(elements, min_size=min_size, max_size=max_size)


@st.composite
def interaction_tables(draw, clean=False):
    n = draw(st.integers(0, 25))
    idv = ids if clean else maybe_missing
    users = draw(st.lists(idv, min_size=n, max_size=n))
    items = draw(st.lists(idv, min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 10**6) if clean else timestamps,
                       min_size=n, max_size=n))
    df = pd.DataFrame({'user': pd.Series(users, dtype=object),
                       'item': pd.Series(items, dtype=object),
                       'timestamp': pd.Series(ts, dtype=object)})
    if draw(st.booleans()):
        w = draw(st.lists(st.floats(0, 10) if clean else weights,
                          min_size=n, max_size=n))
        df['w'] = pd.Series(w, dtype=object)
    return df


def _finite_number(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError, OverflowError):
        return False


@SETTINGS
@given(df=interaction_tables(), allow_dup=st.booleans())
@example(df=NUL_IDS, allow_dup=False)
def test_validate_interactions(df, allow_dup):
    weight_col = 'w' if 'w' in df else None
    try:
        out = validate_interactions(df, weight_col=weight_col,
                                    allow_duplicates=allow_dup)
    except DataError as e:
        assert str(e).startswith('interactions: '), e
        return
    # Accepted: same rows, same meaning.
    assert len(out) == len(df) > 0
    assert list(out['user']) == [str(v) for v in df['user']]
    assert list(out['item']) == [str(v) for v in df['item']]
    assert not df[['user', 'item']].isna().any().any()
    assert all(_finite_number(v) for v in df['timestamp'])
    np.testing.assert_array_equal(
        out['timestamp'].to_numpy(),
        pd.to_numeric(df['timestamp']).to_numpy(dtype=np.float64))
    assert out['timestamp'].dtype == np.float64
    assert np.isfinite(out['weight']).all() and (out['weight'] >= 0).all()
    if weight_col is None:
        assert (out['weight'] == 1).all()
    if not allow_dup:
        assert not out.duplicated(['user', 'item', 'timestamp']).any()


@SETTINGS
@given(ids=rows(maybe_missing, max_size=15), extra=rows(st.floats(),
                                                       max_size=15))
def test_validate_item_table(ids, extra):
    n = len(ids)
    table = pd.DataFrame({'item': pd.Series(ids, dtype=object),
                          'x': (extra + [0.0] * n)[:n]})
    try:
        out = validate_item_table(table)
    except DataError as e:
        assert str(e).startswith('item features: '), e
        return
    assert list(out.index) == [str(v) for v in ids]
    assert out.index.is_unique
    assert list(out['x']) == pytest.approx(list(table['x']), nan_ok=True)


numeric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.integers(-10**20, 10**20), st.none(),
                           st.sampled_from(['3', 'abc', '', '1e400']))
label_values = st.one_of(st.text(max_size=12), st.none(),
                         st.integers(-3, 3), st.sampled_from(
                             ['a|b', '|', 'a||b', ' a | b ', 'é|🎬']))


@SETTINGS
@given(data=st.data(), n=st.integers(1, 12),
       missing=st.sampled_from(['error', 'indicator']))
def test_build_item_features(data, n, missing):
    table = pd.DataFrame({
        'num': pd.Series(data.draw(st.lists(numeric_values, min_size=n,
                                            max_size=n)), dtype=object),
        'labels': pd.Series(data.draw(st.lists(label_values, min_size=n,
                                               max_size=n)), dtype=object),
        'text': pd.Series(data.draw(st.lists(st.one_of(
            st.text(max_size=20), st.none()), min_size=n, max_size=n)),
            dtype=object),
    })
    table.index = pd.Index([f'i{k}' for k in range(n)])
    spec = FeatureSpec(text_columns=['text'], text_dim=8,
                       multilabel_columns=['labels'],
                       numeric_columns=['num'], missing=missing)
    try:
        x, names = build_item_features(table, spec)
    except DataError as e:
        assert str(e).startswith('item features: '), e
        return
    assert x.shape[0] == n and x.shape[1] == len(names)
    assert x.dtype == np.float32 and np.isfinite(x).all()
    # Every label of the table is a feature of its rows (none dropped):
    for row, value in enumerate(table['labels']):
        if value is None:
            continue
        for token in str(value).split('|'):
            if token.strip():
                col = names.index(f'labels={token.strip()}')
                assert x[row, col] == 1.0, (value, token)




@SETTINGS
@given(df=interaction_tables(clean=True))
@example(df=NUL_IDS)
def test_build_dataset_split_keeps_every_interaction(df):
    try:
        ds = build_dataset(df, weight_col='w' if 'w' in df else None)
    except DataError as e:
        assert str(e).startswith('custom'), e
        return
    counts = df.assign(u=df['user'].astype(str)).groupby('u').size()
    n_val = int((counts >= 3).sum())
    assert ds.val.size(1) == ds.test.size(1) == n_val
    assert len(ds.train_item) + 2 * n_val == len(df)
    assert sorted(ds.user_ids) == sorted(counts.index)
    assert set(ds.item_ids) == set(df['item'].astype(str))
    # Raw ids come back unchanged (unicode, huge numbers, '007'):
    assert set(ds.item_ids[ds.train_item.numpy()]) <= set(
        df['item'].astype(str))
    assert int(ds.train_ptr[-1]) == len(ds.train_item)


@SETTINGS
@given(text=st.text(max_size=200), suffix=st.sampled_from(
    ['.csv', '.tsv', '.parquet', '.txt']))
def test_read_table_on_arbitrary_text(tmp_path, text, suffix):
    path = tmp_path / f'log{suffix}'
    path.write_text(text, encoding='utf-8')
    try:
        df = read_table(path, 'interactions', str_columns=('user', 'item'))
    except DataError as e:
        assert 'interactions' in str(e) and str(path) in str(e), e
        return
    assert isinstance(df, pd.DataFrame) and len(df) > 0


@SETTINGS
@given(blob=st.binary(max_size=300), suffix=st.sampled_from(
    ['.csv', '.parquet']))
def test_read_table_on_arbitrary_bytes(tmp_path, blob, suffix):
    path = tmp_path / f'log{suffix}'
    path.write_bytes(blob)
    try:
        df = read_table(path, 'interactions')
    except DataError as e:
        assert 'interactions' in str(e) and str(path) in str(e), e
        return
    assert isinstance(df, pd.DataFrame) and len(df) > 0
