r"""Item input features (the model is inductive: these are its only input).

Columns of the item table are turned into one dense float matrix:

* ``text_columns``: hashed word/char n-grams (:func:`hash_text_features`),
* ``multilabel_columns``: multi-hot over the tokens of a separated string
  (e.g. MovieLens genres ``"Animation|Comedy"``),
* ``numeric_columns``: standardised numbers; missing values are an error
  unless ``missing='indicator'`` (then 0 plus a 0/1 "missing" column),

and the dataset builder appends the paper's ``log(degree)`` feature.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from pinsage_pyg.data.interactions import DataError, columns_present
from pinsage_pyg.data.text import hash_text_features


@dataclass
class FeatureSpec:
    r"""Which item-table columns become which features.

    Args:
        text_columns: Free-text columns, feature-hashed.
        text_dim: Hashed dimensions per text column.
        multilabel_columns: Columns of separated tokens, multi-hot encoded.
        multilabel_sep: Token separator of those columns.
        numeric_columns: Numeric columns, standardised.
        missing: ``'error'`` (default) refuses missing numeric values;
            ``'indicator'`` fills them with the column mean and adds a 0/1
            ``<col>_missing`` column.
    """
    text_columns: List[str] = field(default_factory=list)
    text_dim: int = 128
    multilabel_columns: List[str] = field(default_factory=list)
    multilabel_sep: str = '|'
    numeric_columns: List[str] = field(default_factory=list)
    missing: str = 'error'

    def __post_init__(self) -> None:
        if self.missing not in {'error', 'indicator'}:
            raise DataError(f"features.missing must be 'error' or "
                            f"'indicator' (got {self.missing!r}).")
        if self.text_columns and self.text_dim < 1:
            raise DataError(f"features.text_dim must be >= 1 (got "
                            f"{self.text_dim}).")


def _is_missing(value) -> bool:
    if isinstance(value, str):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or other container
        return False


def multi_hot(values: Sequence, sep: str = '|'
              ) -> tuple[np.ndarray, List[str]]:
    r"""Multi-hot encodes separated token strings. Returns the ``[N, V]``
    float32 matrix and the sorted vocabulary. A missing value (``None``,
    NaN) has no tokens; any other value is read as its string, so a column
    of numeric category codes is encoded rather than silently dropped."""
    tokens = [[t for t in str(v).split(sep) if t.strip()]
              if not _is_missing(v) else [] for v in values]
    vocab = sorted({t.strip() for row in tokens for t in row})
    pos = {t: i for i, t in enumerate(vocab)}
    rows = np.repeat(np.arange(len(tokens)), [len(r) for r in tokens])
    cols = np.array([pos[t.strip()] for r in tokens for t in r], dtype=np.int64)
    out = np.zeros((len(tokens), len(vocab)), dtype=np.float32)
    out[rows, cols] = 1.0
    return out, vocab


#: ``{feature name: {'mean', 'std', 'min', 'max'}}``: the raw statistics
#: of the standardised feature columns (see :func:`standardize_column`).
FeatureStats = Dict[str, Dict[str, float]]


def standardize_column(x: np.ndarray, name: str,
                       stats: Optional[Mapping[str, Mapping[str, float]]],
                       stats_out: Optional[FeatureStats] = None,
                       clip: bool = False) -> np.ndarray:
    r"""Standardises one raw column ``[N]`` into ``[N, 1]`` float32.

    Without :obj:`stats` (or without an entry for :obj:`name`) the column's
    own mean and standard deviation are used, as in training. With the
    statistics a checkpoint stored at training time, the column is
    standardised with *those*, so an item's value does not depend on which
    other items the (newer) table or log holds; with :obj:`clip`, raw values
    outside the trained ``[min, max]`` are clipped to it first (the model
    never saw them). The statistics used are recorded in :obj:`stats_out`.
    """
    x = np.asarray(x, dtype=np.float64)
    own = (stats or {}).get(name)
    if own is None:
        own = dict(mean=float(x.mean()), std=float(x.std()),
                   min=float(x.min()), max=float(x.max())) if x.size else \
            dict(mean=0.0, std=1.0, min=0.0, max=0.0)
    elif clip:
        x = np.clip(x, own['min'], own['max'])
    if stats_out is not None:
        stats_out[name] = {k: float(own[k])
                           for k in ('mean', 'std', 'min', 'max')}
    std = own['std'] if own['std'] > 0 else 1.0
    return ((x - own['mean']) / std).astype(np.float32)[:, None]


def build_item_features(items: pd.DataFrame, spec: FeatureSpec,
                        source: str = 'item features',
                        stats: Optional[Mapping[str, Mapping[str, float]]]
                        = None,
                        stats_out: Optional[FeatureStats] = None
                        ) -> tuple[np.ndarray, List[str]]:
    r"""Builds the ``[num_items, F]`` float32 feature matrix of an item table
    (rows in the table's order) and the feature names.

    Numeric columns are standardised with :obj:`stats` where given (the
    training run's, see :func:`standardize_column`; missing values are
    then imputed with the trained mean); the statistics used go into
    :obj:`stats_out`."""
    columns_present(items, spec.text_columns, source, 'text')
    columns_present(items, spec.multilabel_columns, source, 'multi-label')
    columns_present(items, spec.numeric_columns, source, 'numeric')
    blocks: List[np.ndarray] = []
    names: List[str] = []
    n = len(items)

    for col in spec.text_columns:
        texts = items[col].where(items[col].notna(), '').astype(str).tolist()
        blocks.append(hash_text_features(texts, num_features=spec.text_dim))
        names += [f'{col}#h{i}' for i in range(spec.text_dim)]

    for col in spec.multilabel_columns:
        mh, vocab = multi_hot(items[col].tolist(), spec.multilabel_sep)
        blocks.append(mh)
        names += [f'{col}={v}' for v in vocab]

    for col in spec.numeric_columns:
        vals = pd.to_numeric(items[col], errors='coerce')
        non_numeric = vals.isna() & items[col].notna()
        if non_numeric.any():
            i = int(np.flatnonzero(non_numeric.to_numpy())[0])
            raise DataError(f"{source}: numeric column '{col}' holds a "
                            f"non-numeric value {items[col].iloc[i]!r} (item "
                            f"{items.index[i]!r}). Fix the value or list the "
                            f"column under text/multi-label columns.")
        x = vals.to_numpy(dtype=np.float64, na_value=np.nan)
        inf = np.isinf(x)
        if inf.any():
            i = int(np.flatnonzero(inf)[0])
            raise DataError(f"{source}: column '{col}' has {int(inf.sum())} "
                            f"infinite value(s) (first: item "
                            f"{items.index[i]!r}). Replace them with finite "
                            f"numbers.")
        nan = np.isnan(x)
        if nan.any():
            if spec.missing == 'error':
                i = int(np.flatnonzero(nan)[0])
                raise DataError(
                    f"{source}: column '{col}' has {int(nan.sum())} missing/"
                    f"NaN value(s) (first: item {items.index[i]!r}). Fill "
                    f"them, or set data.features.missing=indicator to impute "
                    f"with the mean and add a missing-indicator feature.")
            if nan.all():
                raise DataError(f"{source}: column '{col}' has no values at "
                                f"all. Remove it from numeric_columns.")
            fill = (stats or {}).get(col, {}).get('mean', np.nanmean(x))
            x = np.where(nan, fill, x)
            blocks.append(standardize_column(x, col, stats, stats_out))
            blocks.append(nan.astype(np.float32)[:, None])
            names += [col, f'{col}_missing']
        else:
            blocks.append(standardize_column(x, col, stats, stats_out))
            names.append(col)

    if not blocks:
        return np.zeros((n, 0), dtype=np.float32), names
    out = np.concatenate(blocks, axis=1).astype(np.float32)
    if not np.isfinite(out).all():  # pragma: no cover - guarded above
        raise DataError(f"{source}: non-finite feature values remain.")
    return out, names


def check_finite(x: np.ndarray, names: Sequence[str], item_ids: np.ndarray,
                 source: str) -> None:
    r"""Refuses NaN/inf in a ready feature matrix, naming item and column."""
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(
            f"{source}: {int(bad.sum())} NaN/inf feature value(s), first at "
            f"item {item_ids[r]!r}, feature {names[c]!r}. Clean the feature "
            f"table (the model cannot train on non-finite inputs).")


def feature_dict(spec: FeatureSpec) -> Dict:
    r"""The :class:`FeatureSpec` as a plain dict (stored with a dataset so
    a checkpoint records how its features were built)."""
    return dict(text_columns=spec.text_columns, text_dim=spec.text_dim,
                multilabel_columns=spec.multilabel_columns,
                multilabel_sep=spec.multilabel_sep,
                numeric_columns=spec.numeric_columns, missing=spec.missing)
