r"""Every bad input a user can supply ends in one clear error (DataError or
ConfigError, both ValueErrors) that names the input and says what to do."""
import re
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from pinsage_pyg.data.dataset import build_dataset
from pinsage_pyg.data.features import FeatureSpec
from pinsage_pyg.data.interactions import DataError, read_table
from pinsage_pyg.config import SamplerConfig
from pinsage_pyg.training.pipeline import (ConfigError, check_config,
                                           load_dataset)


def _log(n_users=3, per_user=4):
    rows = [(f'u{u}', f'i{(u + t) % 6}', 100 * t)
            for u in range(n_users) for t in range(per_user)]
    return pd.DataFrame(rows, columns=['user', 'item', 'timestamp'])


def _items(ids=None):
    ids = [f'i{k}' for k in range(6)] if ids is None else ids
    return pd.DataFrame({'item': ids, 'title': [f't {i}' for i in ids],
                         'year': np.arange(len(ids), dtype=np.float64)})


@contextmanager
def raises(exc, *words, one_line=True):
    r"""``pytest.raises`` that also requires a (one-line) message holding
    every one of :obj:`words`."""
    with pytest.raises(exc) as info:
        yield info
    msg = str(info.value)
    if one_line:
        assert '\n' not in msg.strip(), f'multi-line message: {msg!r}'
    for w in words:
        assert w in msg, f'{w!r} not in message {msg!r}'


def test_error_types_are_value_errors():
    assert issubclass(DataError, ValueError)
    assert issubclass(ConfigError, ValueError)


# --------------------------------------------------------------- files ---
def test_missing_file(tmp_path):
    with raises(DataError, 'nope.csv', 'does not exist', 'existing CSV'):
        read_table(tmp_path / 'nope.csv', 'interactions')


def test_directory_instead_of_file(tmp_path):
    with raises(DataError, str(tmp_path), 'directory', 'CSV or Parquet'):
        read_table(tmp_path, 'interactions')


def test_empty_file(tmp_path):
    path = tmp_path / 'log.csv'
    path.write_bytes(b'')
    with raises(DataError, 'interactions', 'log.csv', 'empty',
                'header row'):
        read_table(path, 'interactions')


def test_header_only_csv(tmp_path):
    path = tmp_path / 'log.csv'
    path.write_text('user,item,timestamp\n')
    with raises(DataError, 'interactions', 'log.csv', 'header',
                'no rows'):
        read_table(path, 'interactions')


def test_binary_garbage_parquet(tmp_path):
    path = tmp_path / 'log.parquet'
    path.write_bytes(bytes(range(256)) * 4)
    with raises(DataError, 'Could not parse', 'log.parquet',
                'Parquet') as info:
        read_table(path, 'interactions')
    assert info.value.__cause__ is not None  # original error chained


def _ragged_csv(tmp_path):
    path = tmp_path / 'items.csv'
    path.write_text('item,year\ni1,1990\ni2,1991,extra,fields\n')
    return path


def test_ragged_csv(tmp_path):
    with raises(DataError, 'item features', 'items.csv', 'Could not parse',
                'line 3', 'CSV', one_line=False):
        read_table(_ragged_csv(tmp_path), 'item features')


def test_ragged_csv_message_is_one_line(tmp_path):
    with raises(DataError, 'items.csv'):
        read_table(_ragged_csv(tmp_path), 'item features')


# ------------------------------------------------------- interactions ---
def test_not_a_dataframe():
    with raises(DataError, 'expected a pandas DataFrame', 'list'):
        build_dataset([('u', 'i', 1)])


def test_empty_dataframe():
    with raises(DataError, 'no interactions'):
        build_dataset(_log().iloc[:0])


def test_missing_columns():
    df = _log().rename(columns={'timestamp': 'time'})
    with raises(DataError, "['timestamp']", "'time'", 'data.time_col'):
        build_dataset(df)
    # The fix the message names works.
    assert build_dataset(df, time_col='time').test.size(1) == 3


def test_missing_weight_column():
    with raises(DataError, "['rating']", 'data.weight_col'):
        build_dataset(_log(), weight_col='rating')


@pytest.mark.parametrize('col', ['user', 'item'])
def test_nan_ids(col):
    df = _log()
    df[col] = df[col].astype(object)
    df.loc[5, col] = None
    with raises(DataError, f"column '{col}'", '1 missing value',
                'row 5', 'Drop or fill'):
        build_dataset(df)


def test_non_numeric_timestamp():
    df = _log()
    df['timestamp'] = df['timestamp'].astype(object)
    df.loc[2, 'timestamp'] = 'yesterday'
    with raises(DataError, "'timestamp'", "'yesterday'", 'row 2',
                'pd.to_datetime'):
        build_dataset(df)


@pytest.mark.parametrize('value', [np.inf, -np.inf, np.nan])
def test_non_finite_timestamp(value):
    df = _log().astype({'timestamp': np.float64})
    df.loc[7, 'timestamp'] = value
    with raises(DataError, "'timestamp'", 'finite', 'row 7'):
        build_dataset(df)


@pytest.mark.parametrize('value', [-1.0, np.nan, np.inf, 'lots'])
def test_bad_weight(value):
    df = _log()
    df['rating'] = pd.Series([1.0] * len(df), dtype=object)
    df.loc[4, 'rating'] = value
    with raises(DataError, "'rating'", 'non-negative', 'row 4'):
        build_dataset(df, weight_col='rating')


def test_duplicate_rows():
    df = _log()
    df = pd.concat([df, df.iloc[[1]]], ignore_index=True)
    with raises(DataError, 'duplicate', "'u0'", "'i1'",
                'data.allow_duplicates=true', 'drop_duplicates'):
        build_dataset(df)
    ds = build_dataset(df, allow_duplicates=True)
    # Both copies are kept (u0 now has 5 rows: 3 train, val, test).
    assert int((ds.train_user == list(ds.user_ids).index('u0')).sum()) == 3


def test_no_user_with_three_interactions():
    with raises(DataError, 'no user has 3 or more interactions',
                'longer log'):
        build_dataset(_log(n_users=4, per_user=2))


def test_bad_unknown_feature_items_value():
    with raises(DataError, 'data.unknown_feature_items', "'keep'"):
        build_dataset(_log(), _items(), unknown_feature_items='keep')


# -------------------------------------------------------- item table ---
def test_feature_rows_for_unknown_items():
    items = _items([f'i{k}' for k in range(6)] + ['ghost'])
    with raises(DataError, '1 item(s) have feature rows but no interactions',
                "'ghost'", 'data.unknown_feature_items=embed'):
        build_dataset(_log(), items)
    ds = build_dataset(_log(), items, unknown_feature_items='embed')
    assert 'ghost' in list(ds.item_ids) and ds.num_items == 7


def test_features_missing_for_known_items():
    items = _items([f'i{k}' for k in range(5)])  # i5 has no row
    with raises(DataError, '1 item(s)', "'i5'", 'no feature row',
                'Add rows'):
        build_dataset(_log(), items)


def test_duplicated_item_table_ids():
    items = _items([f'i{k}' for k in range(6)] + ['i3'])
    with raises(DataError, 'duplicated item id', "'i3'", 'appear once'):
        build_dataset(_log(), items)


def test_item_table_missing_id_column():
    items = _items().rename(columns={'item': 'movie_id'})
    with raises(DataError, "'item'", "'movie_id'", 'data.item_col'):
        build_dataset(_log(), items)


def test_item_table_nan_id():
    items = _items([f'i{k}' for k in range(6)] + [None])
    with raises(DataError, 'item features', "'item'", 'missing id(s)', 'Drop those rows'):
        build_dataset(_log(), items)


def test_feature_columns_not_in_table():
    with raises(DataError, 'text', "['plot']", 'available', "'title'"):
        build_dataset(_log(), _items(), FeatureSpec(text_columns=['plot']))


def test_feature_columns_without_item_table():
    with raises(DataError, 'no item table', 'data.items'):
        build_dataset(_log(), None, FeatureSpec(numeric_columns=['year']))


def test_nan_numeric_feature():
    items = _items()
    items.loc[2, 'year'] = np.nan
    spec = FeatureSpec(numeric_columns=['year'])
    with raises(DataError, "'year'", '1 missing', "'i2'",
                'data.features.missing=indicator'):
        build_dataset(_log(), items, spec)
    ds = build_dataset(_log(), items,
                       FeatureSpec(numeric_columns=['year'],
                                   missing='indicator'))
    assert 'year_missing' in ds.feature_names
    col = ds.x[:, ds.feature_names.index('year_missing')]
    assert col.tolist() == [float(k == 2) for k in range(6)]


def test_all_nan_numeric_feature_with_indicator():
    items = _items()
    items['year'] = np.nan
    with raises(DataError, "'year'", 'no values', 'numeric_columns'):
        build_dataset(_log(), items,
                      FeatureSpec(numeric_columns=['year'],
                                  missing='indicator'))


@pytest.mark.parametrize('missing', ['error', 'indicator'])
def test_inf_numeric_feature(missing):
    items = _items()
    items.loc[4, 'year'] = np.inf
    with raises(DataError, "'year'", 'infinite', "'i4'", 'finite numbers'):
        build_dataset(_log(), items,
                      FeatureSpec(numeric_columns=['year'], missing=missing))


def test_non_numeric_value_in_numeric_column():
    items = _items()
    items['year'] = items['year'].astype(object)
    items.loc[3, 'year'] = 'nineteen'
    with raises(DataError, "numeric column 'year'", "'nineteen'", "'i3'",
                'text/multi-label'):
        build_dataset(_log(), items, FeatureSpec(numeric_columns=['year']))


def test_feature_spec_bad_values():
    with raises(DataError, 'features.missing', "'drop'", "'indicator'"):
        FeatureSpec(missing='drop')
    with raises(DataError, 'features.text_dim', '>= 1'):
        FeatureSpec(text_columns=['title'], text_dim=0)


def test_no_features_at_all():
    with raises(DataError, 'no item features', 'degree_feature'):
        build_dataset(_log(), degree_feature=False)


# ------------------------------------------------ ids compared as str ---
def _files_cfg(**kw):
    cfg = OmegaConf.create({
        'name': 'mine', 'source': 'files', 'interactions': None,
        'items': None, 'unknown_feature_items': 'error',
        'features': {'numeric_columns': ['year']}})
    cfg.merge_with(kw)
    return cfg


def test_int_ids_in_log_match_string_ids_in_item_table(tmp_path):
    log = pd.DataFrame({'user': [1, 1, 1, 2, 2, 2],
                        'item': [10, 20, 30, 20, 30, 40],
                        'timestamp': [1, 2, 3, 1, 2, 3]})
    log.to_csv(tmp_path / 'log.csv', index=False)
    assert read_table(tmp_path / 'log.csv')['item'].dtype.kind == 'i'
    # Parquet keeps the ids as strings.
    items = pd.DataFrame({'item': ['10', '20', '30', '40'],
                          'year': [1.0, 2.0, 3.0, 4.0]})
    items.to_parquet(tmp_path / 'items.parquet', index=False)
    ds = load_dataset(_files_cfg(interactions=str(tmp_path / 'log.csv'),
                                 items=str(tmp_path / 'items.parquet')))
    assert list(ds.item_ids) == ['10', '20', '30', '40']
    # A CSV item table with a non-numeric id is read as strings too.
    items = pd.DataFrame({'item': ['10', '20', '30', '40', 'new'],
                          'year': [1.0, 2.0, 3.0, 4.0, 5.0]})
    items.to_csv(tmp_path / 'items.csv', index=False)
    assert read_table(tmp_path / 'items.csv')['item'].dtype.kind != 'i'
    ds = load_dataset(_files_cfg(interactions=str(tmp_path / 'log.csv'),
                                 items=str(tmp_path / 'items.csv'),
                                 unknown_feature_items='embed'))
    assert list(ds.item_ids) == ['10', '20', '30', '40', 'new']
    assert ds.item_degree().tolist() == [1, 1, 0, 0, 0]


def test_numeric_looking_ids_keep_their_spelling(tmp_path):
    (tmp_path / 'log.csv').write_text(
        'user,item,timestamp\nu1,007,1\nu1,008,2\nu1,009,3\n')
    (tmp_path / 'items.csv').write_text(
        'item,year\n007,1\n008,2\n009,3\nabc,4\n')
    ds = load_dataset(_files_cfg(interactions=str(tmp_path / 'log.csv'),
                                 items=str(tmp_path / 'items.csv'),
                                 unknown_feature_items='embed'))
    assert list(ds.item_ids) == ['007', '008', '009', 'abc']


# ----------------------------------------------------- load_dataset ---
def test_load_dataset_requires_interactions():
    with raises(ConfigError, 'data.interactions', 'data=files'):
        load_dataset(_files_cfg())


def test_load_dataset_unknown_source():
    with raises(ConfigError, 'data.source', "'s3'"):
        load_dataset(_files_cfg(source='s3'))


def test_load_dataset_missing_item_file(tmp_path):
    _log().to_csv(tmp_path / 'log.csv', index=False)
    with raises(DataError, 'item features', 'items.csv', 'does not exist'):
        load_dataset(_files_cfg(interactions=str(tmp_path / 'log.csv'),
                                items=str(tmp_path / 'items.csv')))


def test_load_dataset_error_names_the_dataset(tmp_path):
    df = _log().astype({'timestamp': object})
    df.loc[0, 'timestamp'] = 'soon'
    df.to_csv(tmp_path / 'log.csv', index=False)
    _items().to_csv(tmp_path / 'items.csv', index=False)
    with raises(DataError, 'mine interactions', "'timestamp'", "'soon'"):
        load_dataset(_files_cfg(interactions=str(tmp_path / 'log.csv'),
                                items=str(tmp_path / 'items.csv')))


# ------------------------------------------------------------- config ---
@pytest.mark.parametrize('kw, key', [
    ({'num_neighbors': 0}, 'sampler.num_neighbors'),
    ({'num_walks': 0}, 'sampler.num_walks'),
    ({'walk_length': 0}, 'sampler.walk_length'),
    ({'restart_prob': 1.0}, 'sampler.restart_prob'),
    ({'num_negatives': 0}, 'sampler.num_negatives'),
    ({'refresh_every_n_epochs': -1}, 'sampler.refresh_every_n_epochs'),
    ({'window': 0}, 'sampler.window'),
])
def test_sampler_config_bad_values(kw, key):
    with raises(ConfigError, key, "must be"):
        SamplerConfig(**kw)


def test_sampler_window_needs_the_torch_walk():
    assert SamplerConfig(window=3).resolve_backend() == 'torch'
    with raises(ConfigError, 'sampler.backend=torch_cluster',
                'no time-local walks', 'window null'):
        SamplerConfig(backend='torch_cluster', window=3)


@pytest.fixture(scope='module')
def compose_train():
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        yield lambda overrides=(): compose('train', overrides=list(overrides))


def test_default_config_passes(compose_train):
    check_config(compose_train())


@pytest.mark.parametrize('override, exc, key', [
    ('sampler.num_neighbors=0', ConfigError, 'sampler.num_neighbors'),
    ('sampler.walk_length=0', ConfigError, 'sampler.walk_length'),
    ('sampler.window=0', ConfigError, 'sampler.window'),
    ('loss=max_margin loss.margin=-0.1', ConfigError,
     'loss.margin must be >= 0'),
    ('optimizer.lr=0', ConfigError, 'optimizer.lr must be > 0'),
    ('optimizer.lr=-0.01', ConfigError, 'optimizer.lr must be > 0'),
    ('optimizer.ema_decay=1.0', ConfigError,
     'optimizer.ema_decay must be in (0, 1)'),
    ('optimizer.ema_decay=0', ConfigError,
     'optimizer.ema_decay must be in (0, 1)'),
    ('data.batch_size=0', ConfigError, 'data.batch_size must be >= 1'),
    ('model.aggr=sum', ConfigError, 'model.aggr must be'),
    ('model.query_mode=shared', ConfigError, 'model.query_mode must be'),
    ('loss.name=triplet', ConfigError, 'loss.name must be'),
    ('model.hidden_channels=0', ConfigError, 'model.hidden_channels'),
    ('model.out_channels=0', ConfigError, 'model.out_channels'),
    ('model.dropout=1.0', ConfigError, 'model.dropout'),
    ('model.feature_dropout=1.5', ConfigError,
     'model.feature_dropout must be in'),
    ('trainer.max_epochs=0', ConfigError, 'trainer.max_epochs'),
    ('evaluate.k=0', ConfigError, 'evaluate.k'),
    ('threads=0', ConfigError, 'threads'),
    ('data.positives.window=0', ConfigError, 'data.positives.window'),
])
def test_check_config_rejects(compose_train, override, exc, key):
    with raises(exc, key):
        check_config(compose_train(override.split()))


@pytest.mark.parametrize('override, key', [
    ('model.hidden_channels=abc', 'model.hidden_channels'),
    ('sampler.num_neighbors=abc', 'sampler.num_neighbors'),
])
def test_check_config_non_numeric_value(compose_train, override, key):
    with pytest.raises((ConfigError, DataError), match=re.escape(key)):
        check_config(compose_train([override]))
