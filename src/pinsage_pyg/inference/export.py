r"""Writing embeddings and faiss indexes atomically.

Layout of an embeddings directory (readable with numpy and pandas alone)::

    items.parquet           one row per item, in embedding-row order:
                            ``index`` (row), ``item_id`` (raw id, str) and
                            display columns such as ``title`` when known
    item_embeddings.npy     float32 [num_items, d], L2-normalised (the
                            candidate side: index these)
    query_embeddings.npy    float32 [num_items, d]: the query side; only
                            written by asymmetric models
    index.faiss             faiss inner-product index over
                            item_embeddings.npy (exact by default)

Every file is written to a temporary name in the same directory and moved
into place with :func:`os.replace`, so readers never see a half-written
file under the final name.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import pandas as pd
import torch

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    r"""Calls ``write(tmp_path)`` and then atomically renames the temporary
    file to :obj:`path` (removing it if :obj:`write` fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                               suffix='.tmp')
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def save_npy(path: PathLike, array) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            np.save(f, _to_numpy(array))
    return atomic_write(path, write)


def build_faiss_index(emb, kind: str = 'flat', nlist: Optional[int] = None):
    r"""A faiss inner-product index over :obj:`emb`.

    Args:
        kind (str): ``'flat'`` (exact, default) or ``'ivf'`` (approximate,
            for large catalogues; ``nlist`` cells, default ``~4 sqrt(n)``).
    """
    import faiss
    x = _to_numpy(emb)
    n, d = x.shape
    if kind == 'flat':
        index = faiss.IndexFlatIP(d)
    elif kind == 'ivf':
        nlist = nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    else:
        raise ValueError(f"faiss index kind must be 'flat' or 'ivf' "
                         f"(got {kind!r})")
    index.add(x)
    return index


def save_faiss_index(path: PathLike, index) -> Path:
    import faiss
    return atomic_write(path, lambda tmp: faiss.write_index(index, tmp))


def write_embeddings(out_dir: PathLike, item_ids: np.ndarray, item_emb,
                     query_emb=None, info: Optional[pd.DataFrame] = None,
                     faiss_index: bool = True) -> Path:
    r"""Writes an embeddings directory (see the module docstring).

    Args:
        out_dir: Target directory (created if needed).
        item_ids (np.ndarray): Raw item id per embedding row.
        item_emb: ``[num_items, d]`` candidate-side embeddings.
        query_emb: Query-side embeddings, if different from :obj:`item_emb`.
        info (pandas.DataFrame, optional): Display columns (e.g. ``title``)
            indexed by raw item id.
        faiss_index (bool): Also write ``index.faiss``.
    """
    out = Path(out_dir)
    item_np = _to_numpy(item_emb)
    if item_np.shape[0] != len(item_ids):
        raise ValueError(f"{item_np.shape[0]} embeddings for "
                         f"{len(item_ids)} item ids")
    table = pd.DataFrame({'index': np.arange(len(item_ids)),
                          'item_id': np.asarray(item_ids).astype(str)})
    if info is not None:
        for col in ('title', 'genres', 'year'):
            if col in info.columns:
                table[col] = info[col].reindex(table['item_id']).to_numpy()
    atomic_write(out / 'items.parquet',
                 lambda tmp: table.to_parquet(tmp, index=False))
    save_npy(out / 'item_embeddings.npy', item_np)
    if query_emb is not None:
        save_npy(out / 'query_embeddings.npy', query_emb)
    if faiss_index:
        save_faiss_index(out / 'index.faiss', build_faiss_index(item_np))
    return out


def load_embeddings(out_dir: PathLike
                    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    r"""Reads an embeddings directory: ``(items, item_emb, query_emb)``
    (``query_emb`` is ``item_emb`` for symmetric models)."""
    out = Path(out_dir)
    items = pd.read_parquet(out / 'items.parquet')
    item_emb = np.load(out / 'item_embeddings.npy')
    q = out / 'query_embeddings.npy'
    query_emb = np.load(q) if q.exists() else item_emb
    return items, item_emb, query_emb
