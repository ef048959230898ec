r"""Reading and validating interaction logs and item-feature tables.

Every dataset, built-in or the user's own, enters the package through
:func:`read_table` + :func:`validate_interactions` /
:func:`validate_item_table`, so the same checks protect every path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

PathLike = Union[str, os.PathLike]


class DataError(ValueError):
    r"""A user-supplied dataset or input (a table, an item-user or
    importance graph, a tensor of ids) is malformed. The message names the
    input and the fix."""


def read_table(path: PathLike, what: str = 'table',
               str_columns: Sequence[str] = ()) -> pd.DataFrame:
    r"""Reads a CSV, TSV or Parquet file into a :class:`pandas.DataFrame`.

    Args:
        path (str or os.PathLike): The file. ``.parquet``/``.pq`` files are
            read with pyarrow; ``.tsv``/``.tab`` are tab-separated; anything
            else is read as CSV.
        what (str): What the file is, used in error messages.
        str_columns (sequence of str): Id columns read verbatim as strings
            (so ``007`` stays ``"007"`` and matches across files).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} file '{path}' does not exist. Pass an "
                        f"existing CSV or Parquet file.")
    if path.is_dir():
        raise DataError(f"{what} path '{path}' is a directory. Pass a CSV "
                        f"or Parquet file.")
    if path.stat().st_size == 0:
        raise DataError(f"{what} file '{path}' is empty. It needs a header "
                        f"row and at least one data row.")
    suffix = path.suffix.lower()
    dtype = {c: str for c in str_columns}
    try:
        if suffix in {'.parquet', '.pq'}:
            df = pd.read_parquet(path)
        elif suffix in {'.tsv', '.tab'}:
            df = pd.read_csv(path, sep='\t', dtype=dtype)
        else:
            df = pd.read_csv(path, dtype=dtype)
    except Exception as e:  # pandas/pyarrow raise many different types
        detail = ' '.join(str(e).split())
        raise DataError(f"Could not parse {what} file '{path}' "
                        f"({type(e).__name__}: {detail}). Expected a CSV "
                        f"(comma separated, header row), TSV or Parquet "
                        f"file.") from e
    if len(df) == 0:
        raise DataError(f"{what} file '{path}' has a header but no rows. "
                        f"Add at least one data row.")
    return df


def check_id_characters(ids: pd.Series, col: str, source: str) -> None:
    r"""Refuses ids with NUL characters: NumPy's string arrays (which hold
    the id maps) drop trailing NULs, so ``'a\x00'`` would silently become
    ``'a'``, merged with another id or colliding with it."""
    bad = ids.str.contains('\x00', regex=False).to_numpy(dtype=bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column '{col}' has {int(bad.sum())} id(s)"
                        f" with NUL characters (first at row {row}: "
                        f"{ids.iloc[row]!r}). Remove the NUL characters "
                        f"(\\x00) from the ids.")


def validate_interactions(
    df: pd.DataFrame,
    user_col: str = 'user',
    item_col: str = 'item',
    time_col: str = 'timestamp',
    weight_col: Optional[str] = None,
    source: str = 'interactions',
    allow_duplicates: bool = False,
) -> pd.DataFrame:
    r"""Checks an interaction table and returns it in canonical form.

    The result has columns ``user`` and ``item`` (strings), ``timestamp``
    (float64) and ``weight`` (float32, 1 if no weight column), in the input's
    row order (which is the tie-breaker of the chronological split).

    Raises:
        DataError: on missing columns, missing/NaN ids or timestamps,
            non-numeric or non-finite timestamps/weights, negative weights,
            or duplicate rows (same user, item and timestamp) unless
            :obj:`allow_duplicates` is set.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{source}: expected a pandas DataFrame, got "
                        f"{type(df).__name__}.")
    if len(df) == 0:
        raise DataError(f"{source}: no interactions (empty table).")
    cols = [user_col, item_col, time_col]
    if weight_col is not None:
        cols.append(weight_col)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; found "
            f"{list(df.columns)}. Rename the columns or set "
            f"data.user_col / data.item_col / data.time_col / "
            f"data.weight_col to match.")

    for col in (user_col, item_col):
        bad = df[col].isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{source}: column '{col}' has {int(bad.sum())} "
                            f"missing value(s) (first at row {row}). Drop or "
                            f"fill those rows.")

    ts = pd.to_numeric(df[time_col], errors='coerce')
    bad = ts.isna() | ~np.isfinite(ts.to_numpy(dtype=np.float64, na_value=0))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{source}: column '{time_col}' must hold finite numbers "
            f"(e.g. Unix seconds); {int(bad.sum())} value(s) are missing or "
            f"not numeric (first at row {row}: {df[time_col].iloc[row]!r}). "
            f"Convert datetimes with `pd.to_datetime(...).astype('int64')`.")

    out = pd.DataFrame({
        'user': df[user_col].astype(str).to_numpy(),
        'item': df[item_col].astype(str).to_numpy(),
        'timestamp': ts.to_numpy(dtype=np.float64),
    })
    for col, name in (('user', user_col), ('item', item_col)):
        check_id_characters(out[col], name, source)
    if weight_col is not None:
        w = pd.to_numeric(df[weight_col], errors='coerce').to_numpy(
            dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{source}: column '{weight_col}' must hold "
                            f"finite non-negative numbers; {int(bad.sum())} "
                            f"do not (first at row {row}).")
        out['weight'] = w.astype(np.float32)
    else:
        out['weight'] = np.ones(len(out), dtype=np.float32)

    if not allow_duplicates:
        dup = out.duplicated(subset=['user', 'item', 'timestamp'])
        if dup.any():
            row = int(np.flatnonzero(dup.to_numpy())[0])
            raise DataError(
                f"{source}: {int(dup.sum())} duplicate row(s) with the same "
                f"(user, item, timestamp) (first at row {row}: "
                f"{tuple(out.iloc[row][['user', 'item', 'timestamp']])}). "
                f"Deduplicate the log (`df.drop_duplicates(...)`) or set "
                f"data.allow_duplicates=true.")
    return out


def validate_item_table(
    items: pd.DataFrame,
    item_col: str = 'item',
    source: str = 'item features',
) -> pd.DataFrame:
    r"""Checks an item-feature table: an id column with unique, non-missing
    ids. Returns a copy indexed by the string item id."""
    if item_col not in items.columns:
        raise DataError(f"{source}: missing item id column '{item_col}'; "
                        f"found {list(items.columns)}. Rename it or set "
                        f"data.item_col.")
    if items[item_col].isna().any():
        raise DataError(f"{source}: column '{item_col}' has "
                        f"{int(items[item_col].isna().sum())} missing id(s). "
                        f"Drop those rows or give them ids.")
    ids = items[item_col].astype(str)
    check_id_characters(ids, item_col, source)
    dup = ids.duplicated()
    if dup.any():
        raise DataError(
            f"{source}: {int(dup.sum())} duplicated item id(s), e.g. "
            f"{ids[dup].iloc[0]!r}. Each item must appear once.")
    out = items.drop(columns=[item_col]).copy()
    out.index = pd.Index(ids.to_numpy(), name='item')
    return out


def check_feature_coverage(item_index: pd.Index, interaction_items: np.ndarray,
                           source: str = 'item features') -> None:
    r"""Every interacted item needs a feature row (the model is inductive:
    features are its only input)."""
    # Hash lookup (np.isin on strings is quadratic).
    known = item_index.get_indexer(interaction_items) >= 0
    if not known.all():
        miss = pd.unique(interaction_items[~known])
        raise DataError(
            f"{source}: {len(miss)} item(s) in the interactions have no "
            f"feature row, e.g. {list(miss[:5])}. Add rows for them to the "
            f"item table (the model embeds items from their features only).")


def columns_present(items: pd.DataFrame, cols: Sequence[str],
                    source: str, what: str) -> None:
    r"""Raises :class:`DataError` naming :obj:`source` if any of
    :obj:`cols` (:obj:`what` they are, for the message) is missing."""
    missing = [c for c in cols if c not in items.columns]
    if missing:
        raise DataError(f"{source}: {what} column(s) {missing} not found; "
                        f"available: {list(items.columns)}.")
