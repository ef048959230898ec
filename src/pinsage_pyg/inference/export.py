r"""Writing embeddings and faiss indexes atomically.

Layout of an embeddings directory (readable with numpy and pandas alone)::

    items.parquet           one row per item, in embedding-row order:
                            ``index`` (row), ``item_id`` (raw id, str),
                            ``num_interactions`` (in the graph embedded
                            with; 0: from features alone; pinsage-train
                            and pinsage-embed write it) and display
                            columns such as ``title`` when known
    item_embeddings.npy     float32 [num_items, d], L2-normalised (the
                            candidate side: index these)
    query_embeddings.npy    float32 [num_items, d]: the query side; only
                            written by asymmetric models
    index.faiss             faiss inner-product index over
                            item_embeddings.npy (exact by default; IVF,
                            IVF-PQ or HNSW for large catalogues)

A catalogue too large for one index (or one machine) is indexed in shards
by the Spark pipeline (``index_shards``); :func:`load_index_shards` reads
them back as one :class:`faiss.IndexShards`.

Every file is written to a temporary name in the same directory and moved
into place with :func:`os.replace`, so readers never see a half-written
file under the final name; files get the permissions of the user's umask.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import pandas as pd
import torch

from pinsage_pyg.utils import open_temp_sibling

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[str], None]) -> Path:
    r"""Calls ``write(tmp_path)`` and then atomically renames the temporary
    file to :obj:`path` (removing it if :obj:`write` fails). The file gets
    the permissions of the user's umask (see
    :func:`~pinsage_pyg.utils.open_temp_sibling`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp_sibling(path)
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
    r"""Atomically writes :obj:`array` (numpy or torch) as a ``.npy``."""
    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            np.save(f, _to_numpy(array))
    return atomic_write(path, write)


INDEX_KINDS = ('flat', 'ivf', 'ivfpq', 'hnsw')


def build_faiss_index(emb, kind: str = 'flat', nlist: Optional[int] = None,
                      nprobe: Optional[int] = None, hnsw_m: int = 32,
                      ef_search: int = 128, ef_construction: int = 80,
                      pq_m: Optional[int] = None, seed: int = 0):
    r"""A faiss inner-product index over :obj:`emb` (L2-normalised
    embeddings, so inner product = cosine).

    Args:
        emb: ``[n, d]`` float32 array or tensor (a numpy memmap is fine).
        kind (str): ``'flat'`` (exact, default); approximate for large
            catalogues: ``'ivf'`` (inverted lists of exact vectors),
            ``'ivfpq'`` (inverted lists of product-quantised vectors,
            built by PyG's
            :class:`~torch_geometric.nn.pool.ApproxMIPSKNNIndex`) or
            ``'hnsw'`` (a navigable small-world graph).
        nlist (int, optional): IVF cells. (default: ``sqrt(n)``, at most
            ``n / 39``)
        nprobe (int, optional): IVF cells visited per query, stored in the
            index. (default: ``max(1, nlist // 16)``)
        hnsw_m (int): HNSW links per node. (default: ``32``)
        ef_search (int): HNSW search depth, stored in the index.
            (default: ``128``)
        ef_construction (int): HNSW build depth. (default: ``80``)
        pq_m (int, optional): IVFPQ sub-quantisers (must divide ``d``).
            (default: the largest of 32, 16, 8, ... dividing ``d``)
        seed (int): Seed of the k-means training sample. (default: ``0``)
    """
    import faiss
    x = _to_numpy(emb)
    n, d = x.shape
    if kind not in INDEX_KINDS:
        raise ValueError(f"faiss index kind must be one of "
                         f"{list(INDEX_KINDS)} (got {kind!r})")
    if kind == 'flat':
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index
    if kind == 'hnsw':
        index = faiss.IndexHNSWFlat(d, int(hnsw_m),
                                    faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
        index.add(x)
        return index
    nlist = int(nlist or max(1, min(n // 39, int(np.sqrt(n)))))
    if nlist > n:
        raise ValueError(f"nlist={nlist} IVF cells for {n} vectors: use at "
                         f"most {n} (about sqrt(n) is typical)")
    nprobe = int(nprobe or max(1, nlist // 16))
    # k-means on at most 128 points per cell (faiss wants >= 39):
    train = x
    if n > 128 * nlist:
        rows = np.sort(np.random.default_rng(seed).choice(n, 128 * nlist,
                                                          replace=False))
        train = np.ascontiguousarray(x[rows])
    if kind == 'ivf':
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(train)
    else:
        from torch_geometric.nn.pool import ApproxMIPSKNNIndex
        pq_m = int(pq_m or next(m for m in (32, 16, 8, 4, 2, 1)
                                if d % m == 0))
        if d % pq_m:
            raise ValueError(f"pq_m={pq_m} must divide the embedding size "
                             f"{d}")
        knn = ApproxMIPSKNNIndex(num_cells=nlist, num_cells_to_visit=nprobe,
                                 bits_per_vector=pq_m)
        index = knn._create_index(d)
        index.train(train)
    index.nprobe = nprobe
    for lo in range(0, n, 1 << 20):  # add in blocks: no full copy
        index.add(np.ascontiguousarray(x[lo:lo + (1 << 20)]))
    return index


def serialize_index(index) -> bytes:
    r"""A faiss :obj:`index` as bytes (:func:`faiss.serialize_index`)."""
    import faiss
    return faiss.serialize_index(index).tobytes()


#: Format tag of a sharded index (one Parquet row per shard).
SHARDS_FORMAT = 'pinsage_pyg.index_shards'


def load_index_shards(path: PathLike, shards=None
                      ) -> tuple[np.ndarray, object]:
    r"""Reads a sharded faiss index, as written by the Spark pipeline with
    ``index_shards > 1``: a Parquet dataset of rows ``shard`` (int),
    ``part`` (int), ``ntotal`` (the shard's vectors), ``item_ids`` and
    ``index`` (byte ranges of the shard's item ids, int64 in the shard's
    row order, and of its serialised faiss index; a shard's parts
    concatenated in ``part`` order give the whole).

    Returns ``(item_ids, index)``: a :class:`faiss.IndexShards` that
    searches every loaded shard (in threads) and merges their top-k, whose
    result row ``r`` is item ``item_ids[r]`` (the shards in increasing
    ``shard`` order, each in its own row order). With ``flat`` shards the
    merged top-k equals an exact search over all items.

    Args:
        path: The dataset directory (local).
        shards (sequence of int, optional): Load only these shards (e.g. the
            ones one serving machine holds). (default: all)

    Raises:
        DataError: for a directory that is not such a dataset, shards asked
            for but absent, or a shard whose parts do not add up.
    """
    import faiss
    import pyarrow.dataset as pads
    from pinsage_pyg.data.interactions import DataError
    redo = "re-run the pipeline that wrote it"
    need = ['shard', 'part', 'ntotal', 'item_ids', 'index']
    try:
        data = pads.dataset(os.fspath(path), format='parquet')
        names = data.schema.names
    except Exception as e:  # pyarrow raises many types
        raise DataError(f"'{path}' is not a readable sharded index "
                        f"({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}); {redo}."
                        ) from None
    if not set(need) <= set(names):
        raise DataError(f"'{path}' is not a sharded index (columns {names}, "
                        f"expected {need}); {redo}.")
    meta = data.to_table(columns=['shard', 'part', 'ntotal'])
    shard = meta.column('shard').to_numpy()
    have = np.unique(shard)
    want = have
    if shards is not None:
        want = np.unique(np.asarray(list(shards), dtype=np.int64))
        missing = np.setdiff1d(want, have)
        if missing.size:
            raise DataError(f"'{path}' has no shard(s) {missing[:5].tolist()}"
                            f" (it holds {have.tolist()[:10]}"
                            f"{' ...' if len(have) > 10 else ''}).")
    ids, merged = [], None
    for s in want.tolist():  # one shard's bytes in memory at a time
        t = data.to_table(filter=pads.field('shard') == s)
        order = np.argsort(t.column('part').to_numpy(), kind='stable')
        parts = t.column('part').to_numpy()[order]
        ntotal = np.unique(t.column('ntotal').to_numpy())
        blob = b''.join(t.column('index')[int(r)].as_py() for r in order)
        part_ids = np.frombuffer(b''.join(
            t.column('item_ids')[int(r)].as_py() for r in order),
            dtype=np.int64)
        bad = (not np.array_equal(parts, np.arange(len(parts)))
               or len(ntotal) != 1 or len(part_ids) != ntotal[0])
        sub = None
        if not bad:
            try:
                sub = faiss.deserialize_index(np.frombuffer(blob, np.uint8))
            except RuntimeError:
                bad = True
        if bad or sub.ntotal != ntotal[0]:
            raise DataError(f"'{path}': shard {s} is incomplete or corrupt "
                            f"(parts {parts.tolist()[:10]}, {len(part_ids)} "
                            f"item ids, ntotal {ntotal.tolist()}); {redo}.")
        if merged is None:
            merged = faiss.IndexShards(sub.d, True, True)
            merged.metric_type = sub.metric_type
        merged.add_shard(sub)  # faiss' wrapper keeps the shard alive
        ids.append(part_ids)
    if merged is None:
        raise DataError(f"'{path}' holds no shards; {redo}.")
    return np.concatenate(ids), merged


def recall_at_k(index, emb, queries, k: int = 10,
                exact=None) -> float:
    r"""Recall@k of :obj:`index` against exact inner-product search:
    the mean over :obj:`queries` of
    :math:`|\mathrm{top}_k^{approx}(q) \cap \mathrm{top}_k^{exact}(q)| / k`
    (the standard ANN recall; the query item itself counts like any
    other item).

    Args:
        index: A faiss index over :obj:`emb`.
        emb: The indexed embeddings ``[n, d]``.
        queries: Query embeddings ``[q, d]``.
        k (int): Cut-off. (default: ``10``)
        exact: A flat index over :obj:`emb` to reuse. (default: built)
    """
    q = _to_numpy(queries)
    exact = exact if exact is not None else build_faiss_index(emb, 'flat')
    _, truth = exact.search(q, k)
    _, found = index.search(q, k)
    hit = (truth[:, :, None] == found[:, None, :]) & (found[:, None, :] >= 0)
    return float(hit.any(-1).mean())


def save_faiss_index(path: PathLike, index) -> Path:
    r"""Atomically writes a faiss :obj:`index` to :obj:`path`."""
    import faiss
    return atomic_write(path, lambda tmp: faiss.write_index(index, tmp))


def write_items_table(out_dir: PathLike, item_ids: np.ndarray,
                      info: Optional[pd.DataFrame] = None,
                      num_interactions=None) -> Path:
    r"""Writes ``items.parquet``: embedding row, raw ``item_id``, the
    number of interactions of each item in the graph it was embedded with
    (``num_interactions``, when given; 0 for an item embedded from its
    features alone) and the display columns of :obj:`info` (indexed by
    raw item id)."""
    table = pd.DataFrame({'index': np.arange(len(item_ids)),
                          'item_id': np.asarray(item_ids).astype(str)})
    if num_interactions is not None:
        n = np.asarray(num_interactions, dtype=np.int64).reshape(-1)
        if len(n) != len(item_ids):
            raise ValueError(f"{len(n)} interaction counts for "
                             f"{len(item_ids)} item ids")
        table['num_interactions'] = n
    if info is not None:
        for col in ('title', 'genres', 'year'):
            if col in info.columns:
                table[col] = info[col].reindex(table['item_id']).to_numpy()
    return atomic_write(Path(out_dir) / 'items.parquet',
                        lambda tmp: table.to_parquet(tmp, index=False))


def write_embeddings(out_dir: PathLike, item_ids: np.ndarray, item_emb,
                     query_emb=None, info: Optional[pd.DataFrame] = None,
                     faiss_index: bool = True, index_kind: str = 'flat',
                     index_params: Optional[dict] = None,
                     num_interactions=None) -> Path:
    r"""Writes an embeddings directory (see the module docstring).

    Args:
        out_dir: Target directory (created if needed).
        item_ids (np.ndarray): Raw item id per embedding row.
        item_emb: ``[num_items, d]`` candidate-side embeddings.
        query_emb: Query-side embeddings, if different from :obj:`item_emb`.
        info (pandas.DataFrame, optional): Display columns (e.g. ``title``)
            indexed by raw item id.
        faiss_index (bool): Also write ``index.faiss``.
        index_kind (str): Its kind (see :func:`build_faiss_index`).
            (default: ``'flat'``, exact)
        index_params (dict, optional): Its parameters.
        num_interactions (array, optional): Interactions per item in the
            graph the embeddings come from (``items.parquet`` column; what
            ``pinsage-embed keep=`` uses to tell engaged items from items
            embedded from their features alone).
    """
    out = Path(out_dir)
    item_np = _to_numpy(item_emb)
    if item_np.shape[0] != len(item_ids):
        raise ValueError(f"{item_np.shape[0]} embeddings for "
                         f"{len(item_ids)} item ids")
    write_items_table(out, item_ids, info, num_interactions)
    save_npy(out / 'item_embeddings.npy', item_np)
    if query_emb is not None:
        save_npy(out / 'query_embeddings.npy', query_emb)
    if faiss_index:
        save_faiss_index(out / 'index.faiss', build_faiss_index(
            item_np, index_kind, **(index_params or {})))
    return out


def load_embeddings(out_dir: PathLike
                    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    r"""Reads an embeddings directory: ``(items, item_emb, query_emb)``
    (``query_emb`` is ``item_emb`` for symmetric models).

    Raises:
        DataError: in one line, for a file that is unreadable, holds
            pickled Python objects (never unpickled: that could run code)
            or is not a 2-D numeric matrix with one row per item.
    """
    from pinsage_pyg.data.interactions import DataError
    out = Path(out_dir)
    redo = ("Re-run the export (pinsage-train or pinsage-embed) that wrote "
            "this directory.")
    try:
        items = pd.read_parquet(out / 'items.parquet')
    except Exception as e:  # pyarrow raises many types
        raise DataError(f"'{out / 'items.parquet'}' is not a readable "
                        f"Parquet table ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}). {redo}"
                        ) from None
    if 'item_id' not in items.columns:
        raise DataError(f"'{out / 'items.parquet'}' has no item_id column "
                        f"(columns: {list(items.columns)}). {redo}")

    def matrix(path: Path) -> np.ndarray:
        try:
            with open(path, 'rb') as f:
                is_npy = f.read(6) == b'\x93NUMPY'
            emb = np.load(path, allow_pickle=False) if is_npy else None
        except ValueError as e:
            if 'allow_pickle' in str(e):
                raise DataError(f"'{path}' holds pickled Python objects, not "
                                f"a float embedding matrix; it is refused "
                                f"(unpickling can run code). {redo}"
                                ) from None
            raise DataError(f"'{path}' is not a readable .npy file "
                            f"({' '.join(str(e).split())[:200]}). {redo}"
                            ) from None
        except (OSError, EOFError) as e:
            raise DataError(f"'{path}' is not a readable .npy file "
                            f"({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]}). {redo}"
                            ) from None
        if emb is None:
            raise DataError(f"'{path}' is not a .npy file (no NumPy header). "
                            f"{redo}")
        if not isinstance(emb, np.ndarray) or emb.ndim != 2 or not (
                np.issubdtype(emb.dtype, np.floating)
                or np.issubdtype(emb.dtype, np.integer)):
            raise DataError(f"'{path}' holds a {getattr(emb, 'dtype', '?')} "
                            f"array of shape {getattr(emb, 'shape', '?')}, "
                            f"not a [num_items, dim] float matrix. {redo}")
        if len(emb) != len(items):
            raise DataError(f"'{path}' has {len(emb)} rows but "
                            f"items.parquet lists {len(items)} items. "
                            f"{redo}")
        if not np.isfinite(emb).all():
            raise DataError(f"'{path}' holds NaN/inf values. {redo}")
        return emb

    item_emb = matrix(out / 'item_embeddings.npy')
    q = out / 'query_embeddings.npy'
    query_emb = matrix(q) if q.exists() else item_emb
    if query_emb.shape != item_emb.shape:
        raise DataError(f"'{q}' has shape {query_emb.shape} but "
                        f"item_embeddings.npy {item_emb.shape}. {redo}")
    return items, item_emb, query_emb
