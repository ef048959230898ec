r"""Importance neighbourhoods on Spark (``local[2]``) against the local
sampler: the keyed walk stream makes them equal, edge for edge and weight
for weight, to ``importance_graph(..., backend='torch')`` with the same
seed on the same graph; the partitioning into groups changes nothing and
another seed changes the walks; bad input ends in one message and leaves
no output. Uses the session-wide ``spark`` fixture (tests/conftest.py).
"""
import numpy as np
import pandas as pd
import pytest

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.spark import main
from pinsage_pyg.inference.spark.walks import (local_csr,
                                               spark_importance_neighbors)
from pinsage_pyg.sampler.walks import importance_graph

PARAMS = dict(num_neighbors=6, num_walks=12, walk_length=3,
              restart_prob=0.3)


def _interactions(num_users=40, num_items=70, num=500, seed=0):
    r"""Random interactions with repeated (user, item) pairs, tied
    timestamps, a popular item and items without interactions."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, num_users, num)
    item = rng.integers(0, num_items - 6, num)
    item[:60] = 3  # a popular item
    user[60:80], item[60:80] = user[80:100], item[80:100]  # repeats
    t = rng.integers(0, 50, num).astype(float)  # ties in time
    return pd.DataFrame({'user_id': user, 'item_id': item, 'timestamp': t})


def _local(df, seed, **params):
    g = importance_graph(local_csr(df['user_id'], df['item_id'],
                                   df['timestamp']), seed=seed,
                         backend='torch', **params)
    return _sorted(pd.DataFrame({'target': g.edge_index[1].numpy(),
                                 'neighbor': g.edge_index[0].numpy(),
                                 'weight': g.edge_weight.numpy()}))


def _sorted(df):
    return df.sort_values(['target', 'neighbor']).reset_index(drop=True)


@pytest.fixture(scope='module')
def interactions(tmp_path_factory):
    df = _interactions()
    path = tmp_path_factory.mktemp('walks') / 'interactions.parquet'
    df.to_parquet(path)
    return df, str(path)


@pytest.mark.slow
def test_equals_local_sampler_and_partitioning_is_invisible(
        spark, interactions, tmp_path):
    df, path = interactions
    summary = spark_importance_neighbors(spark, path, tmp_path / 'nb',
                                         seed=7, **PARAMS)
    got = pd.read_parquet(tmp_path / 'nb')
    assert list(got.columns) == ['target', 'neighbor', 'weight']
    assert got['weight'].dtype == np.float32
    expected = _local(df, 7, **PARAMS)
    assert len(expected) > 300
    pd.testing.assert_frame_equal(_sorted(got), expected, check_dtype=False)
    assert summary['num_edges'] == len(expected)
    assert summary['num_items'] == df['item_id'].nunique()
    # Weights of each item sum to 1 and an item never neighbours itself:
    np.testing.assert_allclose(got.groupby('target')['weight'].sum(), 1.0,
                               rtol=1e-5)
    assert not (got['target'] == got['neighbor']).any()
    # Other groups (task boundaries), same walks; no temporaries left.
    spark_importance_neighbors(spark, path, tmp_path / 'nb5', seed=7,
                               num_groups=5, **PARAMS)
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(tmp_path / 'nb5')),
                                  _sorted(got))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['nb', 'nb5']


@pytest.mark.slow
def test_other_seed_and_plain_walks(spark, interactions, tmp_path):
    r"""Without restarts, without a timestamp column (a user's items by
    id), walk_length 1 and another seed: still the local result, and not
    the seed-7 one."""
    df, _ = interactions
    plain = df.drop(columns='timestamp')
    plain.to_parquet(tmp_path / 'plain.parquet')
    params = dict(num_neighbors=4, num_walks=10, walk_length=2)
    spark_importance_neighbors(spark, tmp_path / 'plain.parquet',
                               tmp_path / 'nb', seed=8, **params)
    got = _sorted(pd.read_parquet(tmp_path / 'nb'))
    local = _local(df.assign(timestamp=0.0), 8, **params)
    pd.testing.assert_frame_equal(got, local, check_dtype=False)
    other = _local(df.assign(timestamp=0.0), 7, **params)
    assert not (len(other) == len(got) and (other.values == got.values)
                .all())


def test_bad_interactions_leave_no_output(spark, interactions, tmp_path):
    df, path = interactions
    out = tmp_path / 'nb'
    cases = {
        'columns': (df.rename(columns={'item_id': 'item'}),
                    "no column 'item_id'"),
        'types': (df.assign(user_id=df['user_id'].astype(str)),
                  "column 'user_id' .* must be of integer type"),
        'negative': (df.assign(item_id=df['item_id'].where(df.index != 4,
                                                           -2)),
                     '1 rows with a negative user_id or item_id'),
        'nulls': (df.assign(timestamp=df['timestamp'].where(df.index != 1)),
                  '1 rows with a null user_id or item_id .*NaN timestamp'),
        'empty': (df.iloc[:0], 'has no rows'),
    }
    for name, (bad, match) in cases.items():
        p = tmp_path / f'{name}.parquet'
        bad.to_parquet(p)
        with pytest.raises(DataError, match=match):
            spark_importance_neighbors(spark, p, out)
    with pytest.raises(DataError, match="interactions '.*nope' does not"):
        spark_importance_neighbors(spark, tmp_path / 'nope', out)
    for bad, match in ((dict(num_walks=0), 'num_walks must be'),
                       (dict(restart_prob=1.0), r'restart_prob must be in'),
                       (dict(num_neighbors=2.5), 'num_neighbors must be')):
        with pytest.raises(ConfigError, match=match):
            spark_importance_neighbors(spark, path, out, **bad)
    assert not out.exists()
    out.mkdir()
    with pytest.raises(DataError, match='already exists.*overwrite'):
        spark_importance_neighbors(spark, path, out)
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == \
        ['nb']  # no temporary directories left next to it


def test_cli_neighbors_reports_errors(spark, interactions, tmp_path, capsys):
    _, path = interactions
    with pytest.raises(SystemExit) as exc:
        main(['neighbors', '--interactions', str(tmp_path / 'missing'),
              '--out', str(tmp_path / 'nb')])
    assert exc.value.code == 2
    assert "error: interactions '" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(['neighbors', '--interactions', path, '--out',
              str(tmp_path / 'nb'), '--restart-prob', '1.5'])
    assert exc.value.code == 2
    assert 'restart_prob must be in [0, 1)' in capsys.readouterr().err
    assert not (tmp_path / 'nb').exists()
