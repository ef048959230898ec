r"""PinSage's layer-wise inference as a chain of Apache Spark jobs.

The paper embeds billions of items with a chain of MapReduce jobs that
compute each layer of every item exactly once (Ying et al., KDD 2018,
Sec. 3.4). This module is that chain on Spark, running unchanged on
``local[2]`` or on a YARN / Kubernetes / standalone cluster
(``pip install pinsage_pyg[spark]``; classic PySpark, not Spark Connect).

Inputs (Parquet, any number of files per dataset)::

    items       item_id  integer          one row per item (unique)
                features array<float>     length = the model's in_channels
    neighbors   target   integer          the item being updated (u)
                neighbor integer          one of its importance neighbours (v)
                weight   float, optional  the importance alpha_{u,v} >= 0
                                          (missing: all 1, a plain mean)
    model       a file written by :func:`save_model`, or a ``pinsage-train``
                Lightning checkpoint (``checkpoints/*.ckpt``)

Output (Parquet directory)::

    item_id          long
    embedding        array<float>  the item (candidate) side, L2-normalised
    query_embedding  array<float>  the query side; asymmetric models only

The job, for a model with :math:`K` layers:

1. the items are hashed into ``G`` groups (one shuffle partition each);
   every item becomes one row with its neighbour list and weights as
   arrays, and ``h0 = encode(features)`` (``mapInArrow``);
2. for :math:`k = 1..K`: every item is projected once,
   ``m = ReLU(Q h + q)`` (``mapInArrow``), and its message is sent once
   to each group that holds one of its targets (one row per
   (group, item), not per edge); one ``cogroup(...).applyInArrow`` per
   group pools and updates its items with :meth:`PinSage.convolve`, the
   call :meth:`PinSage.inference` makes; layer :math:`k` is written to
   Parquet atomically (so every layer is computed once and a failed task
   only recomputes from the last layer). This is ``gather='shuffle'``;
   with ``gather='broadcast'`` (the default ``auto`` picks it when the
   messages of all items fit in :data:`BROADCAST_LIMIT`) every layer
   also writes the next layer's messages ``m = project(h)`` in the same
   pass, the driver collects and broadcasts them, and one ``mapInArrow``
   over the previous layer pools and updates every partition in place:
   no shuffle, no join;
3. apply the heads (``mapInArrow``) and write the output.

Vectors travel between stages as packed float32 ``binary`` columns. All
per-layer maths calls the same torch modules as the local path
(:meth:`PinSage.encode`, :meth:`PinSageConv.project`,
:meth:`PinSage.convolve`, :meth:`PinSage.heads`; the weights are
broadcast to the workers), so there is one source of truth; items
without neighbours pool to zero, as in
:class:`~pinsage_pyg.nn.PinSageConv`. The result equals
:meth:`PinSage.inference` on the same neighbourhoods up to float32
rounding (the tests assert a max abs difference < 1e-5).

The output is written under a temporary sibling directory and renamed
into place only when complete, so readers never see half an output.

Example::

    from pinsage_pyg.inference.spark import (export_inputs, spark_session,
                                             spark_layerwise_embed,
                                             read_embeddings)
    paths = export_inputs('spark_in', data.x, data.edge_index,
                          data.edge_weight, model)
    spark = spark_session('local[2]')
    spark_layerwise_embed(spark, paths['items'], paths['neighbors'],
                          paths['model'], 'spark_out')
    item_ids, item_emb, query_emb = read_embeddings('spark_out')

Command line (``--master`` accepts anything ``spark-submit`` does)::

    python -m pinsage_pyg.inference.spark --items spark_in/items.parquet \
        --neighbors spark_in/neighbors.parquet --model spark_in/model.pt \
        --out spark_out --master 'local[2]'
"""
from __future__ import annotations

import io
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.export import atomic_write
from pinsage_pyg.nn.model import PinSage, upgrade_model_kwargs

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

MODEL_FORMAT = 'pinsage_pyg.PinSage'
MODEL_KWARGS = ('in_channels', 'hidden_channels', 'out_channels',
                'num_layers', 'aggr', 'asymmetric', 'query_mode', 'dropout')


# ---------------------------------------------------------------------------
# The model file
# ---------------------------------------------------------------------------

def model_kwargs(model: PinSage) -> Dict[str, Any]:
    r"""The constructor arguments that rebuild :obj:`model`."""
    return {k: getattr(model, k) for k in MODEL_KWARGS}


def save_model(path: PathLike, model: PinSage) -> Path:
    r"""Writes :obj:`model` (constructor arguments and ``state_dict``) to
    :obj:`path` atomically, for :func:`load_model` and the Spark job."""
    if not isinstance(model, PinSage):
        raise TypeError(f"save_model expects a PinSage model (got "
                        f"{type(model).__name__})")
    if model.in_channels == -1 and any(
            isinstance(p, torch.nn.parameter.UninitializedParameter)
            for p in model.parameters()):
        raise ConfigError("The model's encoder is lazy (in_channels=-1) and "
                          "not initialised yet: run one forward pass first.")
    kwargs = model_kwargs(model)
    if kwargs['in_channels'] == -1:
        kwargs['in_channels'] = int(model.encoder.in_channels)
    payload = {'format': MODEL_FORMAT, 'version': 1, 'model_kwargs': kwargs,
               'state_dict': {k: v.detach().cpu()
                              for k, v in model.state_dict().items()}}
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _model_from_bytes(data: bytes, what: str) -> PinSage:
    try:
        obj = torch.load(io.BytesIO(data), map_location='cpu',
                         weights_only=True)
    except Exception as e:  # corrupt, truncated or not a torch file
        raise ConfigError(
            f"{what} is not a readable PyTorch file ({type(e).__name__}: "
            f"{e}). Write it with pinsage_pyg.inference.spark.save_model(...)"
            f" or point at a pinsage-train checkpoint.") from None
    if not isinstance(obj, Mapping) or 'state_dict' not in obj:
        raise ConfigError(f"{what} holds no 'state_dict': write it with "
                          f"save_model(...) or use a pinsage-train "
                          f"checkpoint.")
    state = obj['state_dict']
    if obj.get('format') == MODEL_FORMAT:
        kwargs = dict(obj['model_kwargs'])
    elif isinstance(obj.get('hyper_parameters'), Mapping) and isinstance(
            obj['hyper_parameters'].get('model'), Mapping):
        # A Lightning checkpoint of PinSageModule: weights under 'model.'.
        kwargs = dict(obj['hyper_parameters']['model'])
        state = {k[len('model.'):]: v for k, v in state.items()
                 if k.startswith('model.')}
    else:
        raise ConfigError(f"{what} is neither a save_model(...) file nor a "
                          f"pinsage-train checkpoint (no model arguments "
                          f"found).")
    try:
        model = PinSage(**upgrade_model_kwargs(kwargs))
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{what}: the weights do not fit the model "
                          f"arguments {kwargs} ({e}).") from None
    return model.eval()


def load_model(path: PathLike) -> PinSage:
    r"""Reads a :class:`PinSage` written by :func:`save_model` (or from a
    ``pinsage-train`` Lightning checkpoint), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file '{path}' does not exist.")
    return _model_from_bytes(path.read_bytes(), f"model file '{path}'")


# ---------------------------------------------------------------------------
# Exporting local objects to the job's inputs
# ---------------------------------------------------------------------------

def _vector_column(x: np.ndarray):
    import pyarrow as pa
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32)
                       if n * d < 2**31 else
                       np.arange(0, (n + 1) * d, d, dtype=np.int64))
    values = pa.array(x.reshape(-1))
    cls = pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray
    return cls.from_arrays(offsets, values)


def _write_parquet(path: PathLike, columns: Dict[str, Any]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table(columns)
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def export_items(path: PathLike, x: Union[Tensor, np.ndarray],
                 item_ids: Optional[np.ndarray] = None) -> Path:
    r"""Writes the ``items`` input: one row per row of :obj:`x`.

    Args:
        path: Target Parquet file.
        x (Tensor or np.ndarray): Item features ``[num_items, F]``.
        item_ids (np.ndarray, optional): Integer id per row. (default: the
            row index ``0..num_items-1``, the node index of the local graph)
    """
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"item features must be 2-D [num_items, F] (got "
                        f"shape {tuple(x.shape)}).")
    ids = np.arange(len(x), dtype=np.int64) if item_ids is None else \
        _integer_ids(item_ids, 'item_ids')
    if len(ids) != len(x):
        raise DataError(f"{len(ids)} item ids for {len(x)} feature rows.")
    return _write_parquet(path, {'item_id': ids,
                                 'features': _vector_column(x)})


def export_neighbors(path: PathLike, edge_index: Tensor,
                     edge_weight: Optional[Tensor] = None,
                     item_ids: Optional[np.ndarray] = None) -> Path:
    r"""Writes the ``neighbors`` input from an importance graph as built by
    :func:`~pinsage_pyg.sampler.importance_graph` (``edge_index[0]`` the
    neighbour, ``edge_index[1]`` the target, ``edge_weight`` the
    importance).

    Args:
        path: Target Parquet file.
        edge_index (LongTensor): ``[2, num_edges]`` node indices.
        edge_weight (Tensor, optional): ``[num_edges]`` importances
            (omitted: the job pools with a plain mean).
        item_ids (np.ndarray, optional): Maps node index to the integer id
            used in the ``items`` input. (default: the node index)
    """
    ei = torch.as_tensor(edge_index).detach().cpu().long()
    if ei.dim() != 2 or ei.size(0) != 2:
        raise DataError(f"edge_index must have shape [2, num_edges] (got "
                        f"{tuple(ei.shape)}).")
    src, dst = ei[0].numpy(), ei[1].numpy()
    if item_ids is not None:
        ids = _integer_ids(item_ids, 'item_ids')
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= len(ids)):
            raise DataError(f"edge_index refers to nodes outside "
                            f"[0, {len(ids)}) of item_ids.")
        src, dst = ids[src], ids[dst]
    cols = {'target': dst.astype(np.int64), 'neighbor': src.astype(np.int64)}
    if edge_weight is not None:
        w = torch.as_tensor(edge_weight).detach().cpu().float().numpy()
        if w.shape != (ei.size(1), ):
            raise DataError(f"edge_weight has shape {w.shape}, expected "
                            f"({ei.size(1)},).")
        cols['weight'] = w
    return _write_parquet(path, cols)


def export_inputs(directory: PathLike, x: Tensor, edge_index: Tensor,
                  edge_weight: Optional[Tensor], model: PinSage
                  ) -> Dict[str, str]:
    r"""Writes ``items.parquet``, ``neighbors.parquet`` and ``model.pt``
    into :obj:`directory` (node index = item id) and returns their paths
    under the keys ``items``, ``neighbors`` and ``model``."""
    d = Path(directory)
    return {'items': str(export_items(d / 'items.parquet', x)),
            'neighbors': str(export_neighbors(d / 'neighbors.parquet',
                                              edge_index, edge_weight)),
            'model': str(save_model(d / 'model.pt', model))}


def _integer_ids(ids, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"{what} must be integers (got dtype {ids.dtype}); "
                        f"map raw ids to integers first and keep the map.")
    return ids.astype(np.int64)


def read_embeddings(path: PathLike
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Reads the job's output (a local directory) into
    ``(item_ids, item_emb, query_emb)`` numpy arrays sorted by ``item_id``
    (``query_emb`` is ``item_emb`` for symmetric models)."""
    import pyarrow.parquet as pq
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"'{path}' is not an output directory of the Spark "
                        f"job.")
    table = pq.read_table(path)
    ids = table.column('item_id').to_numpy()
    order = np.argsort(ids, kind='stable')

    def dense(name: str) -> np.ndarray:
        col = table.column(name).combine_chunks()
        n = len(col)
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(n, -1).astype(np.float32)[order] if n else \
            np.zeros((0, 0), np.float32)

    item = dense('embedding')
    query = dense('query_embedding') if 'query_embedding' in \
        table.column_names else item
    return ids[order], item, query


# ---------------------------------------------------------------------------
# Worker side: the torch modules, rebuilt once per Python worker
# ---------------------------------------------------------------------------

_WORKER_MODELS: Dict[str, PinSage] = {}


def _worker_model(broadcast, key: str, threads: int) -> PinSage:
    model = _WORKER_MODELS.get(key)
    if model is None:
        if threads > 0:
            torch.set_num_threads(threads)
        model = _model_from_bytes(broadcast.value, 'the broadcast model')
        _WORKER_MODELS.clear()  # one model per worker at a time
        _WORKER_MODELS[key] = model
    return model


def pack_vectors(x: Union[np.ndarray, Tensor], dtype=np.float32):
    r"""A float32 ``[n, d]`` matrix as an Arrow ``binary`` column, one
    ``4 d``-byte value per row, without a copy. The job's intermediate
    tables hold vectors this way: Spark moves a binary value as one
    ``memcpy`` (in shuffles, Parquet and the Arrow exchange with Python),
    where an ``array<float>`` costs a per-element copy in the JVM.
    :obj:`dtype` packs another fixed-size type (the walks' int64 visits)."""
    import pyarrow as pa
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=dtype)
    n, d = x.shape
    size = x.dtype.itemsize
    nbytes = n * d * size
    otype, odt = (pa.binary(), np.int32) if nbytes < 2**31 else \
        (pa.large_binary(), np.int64)
    offsets = np.arange(0, nbytes + 1, d * size, dtype=odt) if d else \
        np.zeros(n + 1, dtype=odt)
    return pa.Array.from_buffers(otype, n, [None, pa.py_buffer(offsets),
                                            pa.py_buffer(x.reshape(-1))])


def _one_chunk(col):
    r"""An Arrow column as one ``Array`` (a ``ChunkedArray`` combined)."""
    import pyarrow as pa
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def unpack_vectors(col, dim: int, dtype=np.float32) -> np.ndarray:
    r"""The inverse of :func:`pack_vectors`: a binary column (``Array`` or
    ``ChunkedArray``) of ``4 dim``-byte values as a float32
    ``[n, dim]`` matrix (zero-copy where the buffer is aligned)."""
    import pyarrow as pa
    dtype = np.dtype(dtype)
    size = dtype.itemsize
    col = _one_chunk(col)
    n = len(col)
    if n == 0:
        return np.zeros((0, dim), dtype=dtype)
    if col.null_count:
        raise DataError(f"{col.null_count} rows without a vector in an "
                        f"intermediate table of the Spark job.")
    odt = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    bufs = col.buffers()
    off = np.frombuffer(bufs[1], dtype=odt)[col.offset:col.offset + n + 1]
    if not (np.diff(off) == dim * size).all():
        raise DataError(f"an intermediate table of the Spark job holds "
                        f"vectors of another length than {dim} (a layer "
                        f"written by another model?).")
    out = np.frombuffer(bufs[2], dtype=np.uint8, count=int(off[-1] - off[0]),
                        offset=int(off[0]))
    if off[0] % size:
        out = out.copy()
    return out.view(dtype).reshape(n, dim)


def pack_lists(offsets: np.ndarray, values: np.ndarray, dtype):
    r"""Variable-length lists (row :math:`i` is
    ``values[offsets[i]:offsets[i + 1]]``) as an Arrow ``binary`` column
    of packed :obj:`dtype` values, without a copy of the values."""
    import pyarrow as pa
    values = np.ascontiguousarray(values, dtype=dtype)
    size = values.dtype.itemsize
    nbytes = len(values) * size
    otype, odt = (pa.binary(), np.int32) if nbytes < 2**31 else \
        (pa.large_binary(), np.int64)
    off = np.asarray(offsets, dtype=np.int64) * size
    return pa.Array.from_buffers(otype, len(offsets) - 1, [
        None, pa.py_buffer(off.astype(odt)), pa.py_buffer(values)])


def unpack_lists(col, dtype) -> tuple[np.ndarray, np.ndarray]:
    r"""The inverse of :func:`pack_lists`: ``(lengths, values)``."""
    import pyarrow as pa
    dtype = np.dtype(dtype)
    size = dtype.itemsize
    col = _one_chunk(col)
    n = len(col)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, dtype)
    if col.null_count:
        raise DataError(f"{col.null_count} rows without a neighbour list in "
                        f"an intermediate table of the Spark job.")
    odt = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    bufs = col.buffers()
    off = np.frombuffer(bufs[1], dtype=odt)[col.offset:col.offset + n + 1]
    if bufs[2] is None:
        return np.zeros(n, np.int64), np.zeros(0, dtype)
    out = np.frombuffer(bufs[2], dtype=np.uint8, count=int(off[-1] - off[0]),
                        offset=int(off[0]))
    if off[0] % size:
        out = out.copy()
    return (np.diff(off) // size).astype(np.int64), out.view(dtype)


def list_vectors(col, dim: int) -> np.ndarray:
    r"""An Arrow list column of equal-length numbers as float32
    ``[n, dim]`` (the ``features`` input, validated to length ``dim``)."""
    import pyarrow as pa
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(col), dim)


def _list_parts(col) -> tuple[np.ndarray, np.ndarray]:
    r"""``(lengths, values)`` of an Arrow list column; a null list is an
    empty one."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy()
    return lengths.astype(np.int64), col.flatten().to_numpy(
        zero_copy_only=False)


#: The state table of a layer (one row per item): ``g`` the item's group,
#: ``h`` its layer vector (packed float32), ``nbr`` / ``w`` its importance
#: neighbours and their weights, ``dest`` the groups that need its message.
STATE_SCHEMA = ('g int, item_id long, h binary, nbr array<long>, '
                'w array<float>, dest array<int>')
MSG_SCHEMA = 'g int, v long, m binary'
STATE_COLUMNS = ('g', 'item_id', 'h', 'nbr', 'w', 'dest')
#: The state of the broadcast gather (no ``dest``: messages reach every
#: task through the broadcast, not a shuffle; the neighbour lists packed
#: as ``binary`` int64 / float32 values, see :func:`pack_lists`, which
#: the JVM moves without a per-element copy).
BCAST_STATE_SCHEMA = 'g int, item_id long, h binary, nbr binary, w binary'
BCAST_STATE_COLUMNS = STATE_COLUMNS[:5]


def _state_batch(src, h: Tensor, names: Sequence[str] = STATE_COLUMNS,
                 m: Optional[Tensor] = None):
    import pyarrow as pa
    cols = [src.column('g'), src.column('item_id'), pack_vectors(h)] + \
        [src.column(c) for c in names[3:]]
    if m is not None:  # the next layer's messages (broadcast gather)
        cols.append(pack_vectors(m))
        names = list(names) + ['m']
    return pa.RecordBatch.from_arrays(cols, names=list(names)) \
        if isinstance(src, pa.RecordBatch) else \
        pa.Table.from_arrays(cols, names=list(names))


def _encode_fn(broadcast, key: str, threads: int, dim: int):
    r"""Layer 0 of the shuffle gather (``encode``)."""
    def encode(batches):
        model = _worker_model(broadcast, key, threads)
        for b in batches:
            x = torch.from_numpy(list_vectors(b.column('features'), dim))
            with torch.no_grad():
                yield _state_batch(b, model.encode(x))
    return encode


def _project_fn(broadcast, key: str, threads: int, layer: int, dim: int):
    r"""Projects every item once and sends the message to every group
    that holds one of its targets (one row per (group, item))."""
    def project(batches):
        import pyarrow as pa
        model = _worker_model(broadcast, key, threads)
        for b in batches:
            h = torch.from_numpy(unpack_vectors(b.column('h'), dim))
            with torch.no_grad():
                m = model.project(layer, h).numpy()
            lengths, dest = _list_parts(b.column('dest'))
            rows = np.repeat(np.arange(b.num_rows), lengths)
            ids = b.column('item_id').to_numpy()
            yield pa.RecordBatch.from_arrays(
                [pa.array(dest.astype(np.int32)), pa.array(ids[rows]),
                 pack_vectors(m[rows])], names=['g', 'v', 'm'])
    return project


def _update_fn(broadcast, key: str, threads: int, layer: int, dim: int,
               hidden: int):
    r"""One group's layer: its targets' neighbour messages (left) pooled
    with :meth:`PinSage.convolve`, the same call as the local path."""
    from pinsage_pyg.nn.conv import to_adj_t

    def update(msgs, state):
        model = _worker_model(broadcast, key, threads)
        h = torch.from_numpy(unpack_vectors(state.column('h'), dim))
        v = msgs.column('v').to_numpy()
        m = unpack_vectors(msgs.column('m'), hidden)
        order = np.argsort(v, kind='stable')
        lengths, nbr = _list_parts(state.column('nbr'))
        _, w = _list_parts(state.column('w'))
        src = order[np.searchsorted(v[order], nbr)] if len(nbr) else \
            np.zeros(0, np.int64)
        dst = np.repeat(np.arange(state.num_rows), lengths)
        ei = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
        ew = torch.from_numpy(w.astype(np.float32, copy=False))
        adj = to_adj_t(ei, ew, (len(m), state.num_rows), 'csr')
        with torch.no_grad():
            out = model.convolve(layer, torch.from_numpy(m), h, adj, ew)
        return _state_batch(state, out)
    return update


def _grouped_encode_fn(broadcast, key: str, threads: int, dim: int,
                       project: bool):
    r"""One group's layer 0 (broadcast gather): its items sorted by id,
    their neighbour lists sorted by (neighbor, weight) as in
    :func:`_initial_state`, ``h0 = encode(features)`` and, with
    :obj:`project`, the messages of layer 1."""
    def encode(items, edges):
        import pyarrow as pa
        model = _worker_model(broadcast, key, threads)
        ids = items.column('item_id').to_numpy()
        order = np.argsort(ids, kind='stable')
        ids = ids[order]
        tgt = edges.column('target').to_numpy()
        nbr = edges.column('neighbor').to_numpy()
        w = edges.column('weight').to_numpy(zero_copy_only=False)
        o = np.lexsort((w, nbr, tgt))
        tgt, nbr, w = tgt[o], nbr[o], w[o]
        # every target is an item (checked by read_inputs)
        offsets = np.append(np.searchsorted(tgt, ids, 'left'), len(tgt))
        x = torch.from_numpy(np.ascontiguousarray(
            list_vectors(items.column('features'), dim)[order]))
        with torch.no_grad():
            h = model.encode(x)
            m = model.project(0, h) if project else None
        cols = [pa.array(items.column('g').to_numpy()[order]), pa.array(ids),
                pack_vectors(h),
                pack_lists(offsets, nbr, np.int64),
                pack_lists(offsets, w, np.float32)]
        names = list(BCAST_STATE_COLUMNS)
        if m is not None:
            cols.append(pack_vectors(m))
            names.append('m')
        return pa.Table.from_arrays(cols, names=names)
    return encode


_WORKER_MESSAGES: Dict[str, tuple] = {}


def _worker_messages(messages, key: str) -> tuple:
    r"""The broadcast ``(sorted ids, messages)`` of a layer as
    ``(np.ndarray, Tensor)``, unpickled once per Python worker."""
    got = _WORKER_MESSAGES.get(key)
    if got is None:
        ids, m = messages.value
        _WORKER_MESSAGES.clear()  # one layer's messages at a time
        got = _WORKER_MESSAGES[key] = (ids, torch.from_numpy(m))
    return got


def _gather_update_fn(broadcast, key: str, threads: int, layer: int,
                      dim: int, messages, messages_key: str,
                      project: bool):
    r"""A partition's items pooled over the broadcast messages of all
    items and updated with :meth:`PinSage.convolve` (no shuffle); with
    :obj:`project`, the next layer's messages ``project(layer + 1, h)``
    are computed in the same pass (column ``m``)."""
    from pinsage_pyg.nn.conv import to_adj_t

    def update(batches):
        model = _worker_model(broadcast, key, threads)
        ids, m = _worker_messages(messages, messages_key)
        for b in batches:
            h = torch.from_numpy(unpack_vectors(b.column('h'), dim))
            lengths, nbr = unpack_lists(b.column('nbr'), np.int64)
            _, w = unpack_lists(b.column('w'), np.float32)
            src = np.searchsorted(ids, nbr)
            dst = np.repeat(np.arange(b.num_rows), lengths)
            ei = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
            ew = torch.from_numpy(w.astype(np.float32, copy=False))
            adj = to_adj_t(ei, ew, (len(m), b.num_rows), 'csr')
            with torch.no_grad():
                out = model.convolve(layer, m, h, adj, ew)
                nxt = model.project(layer + 1, out) if project else None
            yield _state_batch(b, out, BCAST_STATE_COLUMNS, nxt)
    return update


def _heads_fn(broadcast, key: str, threads: int, dim: int, asymmetric: bool):
    def heads(batches):
        import pyarrow as pa
        model = _worker_model(broadcast, key, threads)
        for b in batches:
            h = torch.from_numpy(unpack_vectors(b.column('h'), dim))
            with torch.no_grad():
                query, item = model.heads(h, 'both')
            cols = [b.column('item_id'), _vector_column(item.numpy())]
            names = ['item_id', 'embedding']
            if asymmetric:
                cols.append(_vector_column(query.numpy()))
                names.append('query_embedding')
            yield pa.RecordBatch.from_arrays(cols, names=names)
    return heads


# ---------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------

def spark_session(master: Optional[str] = 'local[2]',
                  app_name: str = 'pinsage-layerwise-embed',
                  shuffle_partitions: Optional[int] = None,
                  conf: Optional[Mapping[str, str]] = None):
    r"""A :class:`~pyspark.sql.SparkSession` for the job.

    For a ``local[...]`` master the Python workers use this interpreter
    (``PYSPARK_PYTHON`` unless already set), the web UI and the console
    progress bar are off and the shuffle has :obj:`shuffle_partitions`
    partitions (default: 4 locally, Spark's default otherwise). Under
    ``spark-submit`` pass ``master=None`` to keep the submitted master and
    configuration.

    Args:
        master (str, optional): ``local[2]``, ``yarn``, ``k8s://...``,
            ``spark://...`` or :obj:`None` (the master ``spark-submit``
            gave, or ``local[*]`` outside ``spark-submit``).
            (default: ``"local[2]"``)
        app_name (str): The application name.
        shuffle_partitions (int, optional): ``spark.sql.shuffle.partitions``.
        conf (dict, optional): Further Spark configuration.
    """
    from pyspark.sql import SparkSession
    if master is None and 'PYSPARK_GATEWAY_PORT' not in os.environ:
        master = 'local[*]'  # a plain Python process, not spark-submit
    local = master is not None and master.startswith('local')
    if local:
        os.environ.setdefault('PYSPARK_PYTHON', sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    if local:
        builder = builder.config('spark.ui.enabled', 'false') \
            .config('spark.ui.showConsoleProgress', 'false') \
            .config('spark.sql.shuffle.partitions',
                    str(shuffle_partitions or 4))
    elif shuffle_partitions is not None:
        builder = builder.config('spark.sql.shuffle.partitions',
                                 str(shuffle_partitions))
    for k, v in (conf or {}).items():
        builder = builder.config(k, str(v))
    return builder.getOrCreate()


class _FS:
    r"""The Hadoop file system of a path (local, HDFS, S3A, GCS, ...)
    through the JVM, for existence checks and renames."""
    def __init__(self, spark, path: str):
        jvm = spark.sparkContext._jvm
        self._Path = jvm.org.apache.hadoop.fs.Path
        self.fs = self._Path(path).getFileSystem(
            spark.sparkContext._jsc.hadoopConfiguration())

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._Path(path)))

    def delete(self, path: str) -> None:
        self.fs.delete(self._Path(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self._Path(src), self._Path(dst)):
            raise OSError(f"could not rename '{src}' to '{dst}'")


def _replace(fs: _FS, src: str, dst: str, backup: str) -> None:
    r"""Moves :obj:`src` to :obj:`dst`; an existing :obj:`dst` is moved
    to :obj:`backup` first and restored if the move fails."""
    had_old = fs.exists(dst)
    if had_old:
        fs.rename(dst, backup)
    try:
        fs.rename(src, dst)
    except BaseException:
        if had_old and not fs.exists(dst):
            fs.rename(backup, dst)
        raise


def _has_scheme(path: str) -> bool:
    return '://' in path or path.startswith('file:')


def _qualify(spark, path: PathLike) -> str:
    r"""Scheme-less paths are made absolute when Spark's default file
    system is the local one (so the driver and local workers agree);
    URIs, and paths on a cluster's default file system, are kept."""
    path = os.fspath(path)
    path = path.rstrip('/') or path
    if _has_scheme(path):
        return path
    default_fs = spark.sparkContext._jsc.hadoopConfiguration().get(
        'fs.defaultFS') or 'file:///'
    return os.path.abspath(path) if default_fs.startswith('file:') else path


def _read_model_bytes(spark, path: str) -> bytes:
    local = path[len('file:'):] if path.startswith('file:') else path
    local = local[2:] if local.startswith('//') else local
    if not _has_scheme(path) or path.startswith('file:'):
        if not os.path.isfile(local):
            raise ConfigError(f"model file '{path}' does not exist (on the "
                              f"driver). Write it with save_model(...).")
        return Path(local).read_bytes()
    if not _FS(spark, path).exists(path):
        raise ConfigError(f"model file '{path}' does not exist.")
    return bytes(spark.sparkContext.binaryFiles(path).collect()[0][1])


def _read_input(spark, path: str, what: str):
    if not _FS(spark, path).exists(path):
        raise DataError(f"{what} '{path}' does not exist.")
    try:
        return spark.read.parquet(path)
    except Exception as e:
        raise DataError(f"{what} '{path}' is not readable Parquet "
                        f"({type(e).__name__}: {str(e).splitlines()[0]})."
                        ) from None


def _check_columns(df, path: str, what: str, need: Mapping[str, str],
                   optional: Sequence[str] = ()) -> None:
    from pyspark.sql import types as T
    kinds = {'integer': (T.ByteType, T.ShortType, T.IntegerType,
                         T.LongType),
             'number': (T.FloatType, T.DoubleType, T.ByteType, T.ShortType,
                        T.IntegerType, T.LongType, T.DecimalType)}
    fields = {f.name: f.dataType for f in df.schema.fields}
    for name, kind in list(need.items()) + [(o, 'number') for o in optional
                                             if o in fields]:
        if name not in fields:
            raise DataError(f"{what} '{path}' has no column '{name}' (it "
                            f"has {sorted(fields)}); see the schema in "
                            f"pinsage_pyg.inference.spark.")
        t = fields[name]
        ok = isinstance(t, T.ArrayType) and isinstance(
            t.elementType, kinds['number']) if kind == 'vector' else \
            isinstance(t, kinds[kind])
        if not ok:
            want = 'an array of numbers' if kind == 'vector' else \
                f'of {kind} type'
            raise DataError(f"column '{name}' of {what} '{path}' must be "
                            f"{want} (got {t.simpleString()}).")


def _validate(items, neighbors, items_path: str, neighbors_path: str,
              in_channels: int, has_weight: bool) -> tuple[int, int]:
    r"""Checks the inputs against each other and the model, in one Spark
    job; returns ``(num_items, num_edges)``."""
    from pyspark.sql import functions as F
    stats = items.agg(
        F.count(F.lit(1)).alias('n'),
        F.count_distinct('item_id').alias('distinct'),
        F.sum(F.col('item_id').isNull().cast('long')).alias('null_id'),
        F.sum(F.col('features').isNull().cast('long')).alias('null_x'),
        F.min(F.size('features')).alias('dmin'),
        F.max(F.size('features')).alias('dmax'))
    bad_w = (F.col('weight').isNull() | F.isnan('weight')
             | (F.col('weight') < 0)) if has_weight else F.lit(False)
    stats = stats.crossJoin(neighbors.agg(
        F.count(F.lit(1)).alias('e'),
        F.sum((F.col('target').isNull() | F.col('neighbor').isNull())
              .cast('long')).alias('null_nb'),
        F.sum(bad_w.cast('long')).alias('bad_w')))
    ids = neighbors.select(F.col('target').alias('item_id')).union(
        neighbors.select(F.col('neighbor').alias('item_id'))).distinct()
    stats = stats.crossJoin(
        ids.join(items.select('item_id'), 'item_id', 'left_anti').agg(
            F.count(F.lit(1)).alias('unknown'),
            F.min('item_id').alias('unknown_min'),
            F.max('item_id').alias('unknown_max')))
    row = stats.first()

    num_items = int(row['n'])
    if num_items == 0:
        raise DataError(f"items '{items_path}' has no rows.")
    if row['null_id'] or row['null_x']:
        raise DataError(f"items '{items_path}' has {row['null_id']} null "
                        f"item_id and {row['null_x']} null features values;"
                        f" every item needs both.")
    if row['dmin'] != in_channels or row['dmax'] != in_channels:
        raise DataError(
            f"items '{items_path}' has features of length {row['dmin']}.."
            f"{row['dmax']}, but the model expects in_channels="
            f"{in_channels}: export the features the model was trained "
            f"with (or the model for these features).")
    if row['distinct'] != num_items:
        dup = items.groupBy('item_id').count().filter('count > 1') \
            .limit(5).collect()
        raise DataError(f"items '{items_path}' repeats item ids, e.g. "
                        f"{sorted(int(r['item_id']) for r in dup)}; ids must"
                        f" be unique.")
    if row['null_nb']:
        raise DataError(f"neighbors '{neighbors_path}' has {row['null_nb']}"
                        f" rows with a null target or neighbor.")
    if row['bad_w']:
        raise DataError(f"neighbors '{neighbors_path}' has {row['bad_w']} "
                        f"null, NaN or negative weights; importance weights "
                        f"must be >= 0.")
    if row['unknown']:
        raise DataError(
            f"neighbors '{neighbors_path}': {row['unknown']} distinct "
            f"target/neighbor ids are not in items '{items_path}' (smallest "
            f"{row['unknown_min']}, largest {row['unknown_max']}); every "
            f"target and neighbor must be an item.")
    return num_items, int(row['e'])


def group_keys(spark, num_groups: int) -> list[int]:
    r"""One integer key per group such that Spark's hash partitioning into
    :obj:`num_groups` shuffle partitions sends group :math:`i` to
    partition :math:`i` (``pmod(hash(key), n) == i``): every task of a
    layer then pools exactly one group, none sits idle."""
    from pyspark.sql import functions as F
    rows = spark.range(0, 64 * num_groups).select(
        F.col('id').cast('int').alias('c')).select(
        'c', F.pmod(F.hash('c'), F.lit(num_groups)).alias('p')) \
        .groupBy('p').agg(F.min('c').alias('c')).collect()
    keys = {int(r['p']): int(r['c']) for r in rows}
    return [keys.get(i, i) for i in range(num_groups)]


def _group_of(col: str, keys: Sequence[int]):
    from pyspark.sql import functions as F
    return F.element_at(F.array(*[F.lit(k) for k in keys]),
                        (F.pmod(F.xxhash64(col), F.lit(len(keys))) + 1)
                        .cast('int')).alias('g')


def _initial_state(items, neighbors, keys: Sequence[int]):
    r"""Items joined with their neighbour lists (arrays, one row per item)
    and the groups their messages go to: the input of layer 0 of the
    shuffle gather."""
    from pyspark.sql import functions as F
    adj = neighbors.groupBy('target').agg(F.array_sort(F.collect_list(
        F.struct('neighbor', F.col('weight').cast('float').alias('w'))))
        .alias('e')).select(F.col('target').alias('item_id'),
                            F.col('e.neighbor').alias('nbr'),
                            F.col('e.w').alias('w'))
    dests = neighbors.select('neighbor', _group_of('target', keys)) \
        .distinct().groupBy('neighbor').agg(
            F.array_sort(F.collect_list('g')).alias('dest')) \
        .withColumnRenamed('neighbor', 'item_id')
    return items.select(_group_of('item_id', keys), 'item_id', 'features') \
        .join(adj, 'item_id', 'left').join(dests, 'item_id', 'left')


def _grouped_initial_state(items, neighbors, keys: Sequence[int], fn,
                           schema: str):
    r"""Layer 0 of the broadcast gather without a JVM ``collect_list``:
    the items and the edges of their targets meet per group (one
    ``cogroup``), and :obj:`fn` builds the neighbour lists in numpy and
    encodes the items in the same pass."""
    from pyspark.sql import functions as F
    edges = neighbors.select(_group_of('target', keys), 'target', 'neighbor',
                             F.col('weight').cast('float').alias('weight'))
    return items.select(_group_of('item_id', keys), 'item_id', 'features') \
        .groupBy('g').cogroup(edges.groupBy('g')).applyInArrow(fn, schema)


def default_num_groups(spark, num_edges: int, gather: str = 'shuffle',
                       edges_per_group: int = 1_000_000) -> int:
    r"""Groups of a layer: at least one per core of the cluster (Spark's
    default parallelism) and, for the shuffle gather, at most
    :obj:`edges_per_group` neighbour edges per group (a group's messages
    are held in one Python worker; the broadcast gather holds all of them
    anyway and pools partition by partition)."""
    cores = int(spark.sparkContext.defaultParallelism)
    if gather == 'broadcast':
        return max(cores, 1)
    return max(cores, -(-int(num_edges) // edges_per_group), 1)


class _ShuffleConf:
    r"""``spark.sql.shuffle.partitions = num_groups`` and no adaptive
    coalescing while the layers run (one task per group), restored
    afterwards."""
    KEYS = ('spark.sql.shuffle.partitions',
            'spark.sql.adaptive.coalescePartitions.enabled')

    def __init__(self, spark, num_groups: int):
        self.spark, self.values = spark, (str(num_groups), 'false')

    def __enter__(self):
        self.old = [self.spark.conf.get(k, None) for k in self.KEYS]
        for k, v in zip(self.KEYS, self.values):
            self.spark.conf.set(k, v)

    def __exit__(self, *exc):
        for k, v in zip(self.KEYS, self.old):
            if v is None:
                self.spark.conf.unset(k)
            else:
                self.spark.conf.set(k, v)


def write_atomic(fs: '_FS', df, path: str, key: str,
                 fmt: str = 'parquet') -> None:
    r"""Writes :obj:`df` (as Parquet, or another ``DataFrameWriter`` format
    such as ``text``) to a temporary sibling of :obj:`path` and renames it
    into place: :obj:`path` exists only when complete."""
    tmp = f"{path}._tmp_{key}"
    try:
        getattr(df.write.mode('overwrite'), fmt)(tmp)
        if fs.exists(path):
            fs.delete(path)
        fs.rename(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.delete(tmp)


#: The largest projected-message table (``num_items * hidden * 4`` bytes)
#: that ``gather='auto'`` broadcasts instead of shuffling: it is collected
#: on the driver (``spark.driver.maxResultSize``, default 1 GiB) and held
#: once by every Python worker.
BROADCAST_LIMIT = 512 * 2**20

GATHERS = ('auto', 'broadcast', 'shuffle')


def choose_gather(gather: str, num_items: int, hidden: int,
                  limit: int = BROADCAST_LIMIT) -> str:
    r"""``broadcast`` or ``shuffle`` for :obj:`gather` (``auto``: broadcast
    when the projected messages of all items fit in :obj:`limit` bytes)."""
    if gather not in GATHERS:
        raise ConfigError(f"gather must be one of {', '.join(GATHERS)} (got "
                          f"'{gather}').")
    if gather == 'auto':
        return 'broadcast' if num_items * hidden * 4 <= limit else 'shuffle'
    return gather


def _collect_messages(spark, state, hidden: int):
    r"""The ``(item_id, m)`` columns of a layer (the next layer's
    messages) on the driver, sorted by id, as a broadcast
    ``(ids, messages)``."""
    table = state.select('item_id', 'm').toArrow()
    ids = table.column('item_id').to_numpy()
    order = np.argsort(ids, kind='stable')
    m = unpack_vectors(table.column('m'), hidden)[order]
    del table
    return spark.sparkContext.broadcast((ids[order], m))


def _layer_matches(spark, path: str, gather: str, last: bool) -> bool:
    r"""Whether a layer on disk was written by :obj:`gather`: the shuffle
    needs the ``dest`` column, the broadcast gather the next layer's
    messages ``m`` (but for the last layer)."""
    types = dict(spark.read.parquet(path).dtypes)
    if gather == 'shuffle':
        return 'dest' in types
    return types.get('nbr') == 'binary' and (last or 'm' in types)


def run_layers(spark, items, neighbors, model: PinSage, payload: bytes,
               layer_path, fs: '_FS', num_groups: int, threads: int = 1,
               reuse: bool = False, on_layer=None, gather: str = 'shuffle'):
    r"""Layers :math:`0..K` of every item: returns the final state
    DataFrame. Layer :math:`k` is written to ``layer_path(k)``
    (atomically); with :obj:`reuse`, a layer already there is read
    instead of recomputed (a resumed run).

    :obj:`gather` is how a layer's projected messages reach the targets:
    ``shuffle`` (one row per (group, item), ``cogroup`` per group, any
    size) or ``broadcast`` (collected on the driver and broadcast to every
    Python worker; every partition is then pooled and updated in place,
    with no shuffle; see :data:`BROADCAST_LIMIT`)."""
    if gather not in ('broadcast', 'shuffle'):
        raise ConfigError(f"gather must be 'broadcast' or 'shuffle' here "
                          f"(got '{gather}'; see choose_gather).")
    sc = spark.sparkContext
    broadcast = sc.broadcast(payload)
    key = uuid.uuid4().hex
    in_channels = int(model.encoder.in_channels)
    hidden = int(model.hidden_channels)
    bcast = gather == 'broadcast'
    schema = BCAST_STATE_SCHEMA if bcast else STATE_SCHEMA
    names = BCAST_STATE_COLUMNS if bcast else STATE_COLUMNS
    stale = False  # a layer recomputed: the later ones are recomputed too
    try:
        with _ShuffleConf(spark, num_groups):
            keys = group_keys(spark, num_groups)
            for k in range(model.num_layers + 1):
                path = layer_path(k)
                if reuse and not stale and fs.exists(path):
                    if _layer_matches(spark, path, gather,
                                      k == model.num_layers):
                        log.info('layer %d: reusing %s', k, path)
                        if on_layer:
                            on_layer(k, True)
                        continue
                    log.info('layer %d: %s was written by the other '
                             'gather; recomputing it for %s', k, path,
                             gather)
                stale = True
                # broadcast: layer k also holds the messages of layer k+1
                project = bcast and k < model.num_layers
                out_schema = schema + (', m binary' if project else '')
                if k == 0 and bcast:
                    df = _grouped_initial_state(
                        items, neighbors, keys, _grouped_encode_fn(
                            broadcast, key, threads, in_channels, project),
                        out_schema)
                elif k == 0:
                    df = _initial_state(items, neighbors, keys).mapInArrow(
                        _encode_fn(broadcast, key, threads, in_channels),
                        schema)
                elif bcast:
                    prev = spark.read.parquet(layer_path(k - 1))
                    messages = _collect_messages(spark, prev, hidden)
                    try:
                        write_atomic(fs, prev.select(*names).mapInArrow(
                            _gather_update_fn(
                                broadcast, key, threads, k - 1, hidden,
                                messages, uuid.uuid4().hex, project),
                            out_schema), path, key)
                    finally:
                        messages.unpersist()
                    if on_layer:
                        on_layer(k, False)
                    continue
                else:
                    prev = spark.read.parquet(layer_path(k - 1))
                    msgs = prev.mapInArrow(
                        _project_fn(broadcast, key, threads, k - 1, hidden),
                        MSG_SCHEMA)
                    df = msgs.groupBy('g').cogroup(prev.groupBy('g')) \
                        .applyInArrow(_update_fn(broadcast, key, threads,
                                                 k - 1, hidden, hidden),
                                      STATE_SCHEMA)
                write_atomic(fs, df, path, key)
                if on_layer:
                    on_layer(k, False)
        return spark.read.parquet(layer_path(model.num_layers))
    finally:
        broadcast.unpersist()


def write_heads(spark, state, model: PinSage, payload: bytes, fs: '_FS',
                path: str, threads: int = 1) -> None:
    r"""Applies the heads to the final state and writes the output
    (``item_id, embedding[, query_embedding]``) atomically to
    :obj:`path`."""
    broadcast = spark.sparkContext.broadcast(payload)
    key = uuid.uuid4().hex
    schema = 'item_id long, embedding array<float>'
    if model.asymmetric:
        schema += ', query_embedding array<float>'
    try:
        write_atomic(fs, state.mapInArrow(_heads_fn(
            broadcast, key, threads, int(model.hidden_channels),
            model.asymmetric), schema), path, key)
    finally:
        broadcast.unpersist()


def read_inputs(spark, items_path: str, neighbors_path: str, model: PinSage):
    r"""Reads and checks the ``items`` and ``neighbors`` inputs against
    each other and :obj:`model`; returns ``(items, neighbors, num_items,
    num_edges)`` with normalised column types."""
    from pyspark.sql import functions as F
    items = _read_input(spark, items_path, 'items')
    neighbors = _read_input(spark, neighbors_path, 'neighbors')
    _check_columns(items, items_path, 'items',
                   {'item_id': 'integer', 'features': 'vector'})
    _check_columns(neighbors, neighbors_path, 'neighbors',
                   {'target': 'integer', 'neighbor': 'integer'}, ('weight', ))
    has_weight = 'weight' in neighbors.columns
    items = items.select(F.col('item_id').cast('long'),
                         F.col('features').cast('array<float>'))
    neighbors = neighbors.select(
        F.col('target').cast('long'), F.col('neighbor').cast('long'),
        (F.col('weight') if has_weight else F.lit(1.0))
        .cast('double').alias('weight'))
    num_items, num_edges = _validate(items, neighbors, items_path,
                                     neighbors_path,
                                     int(model.encoder.in_channels),
                                     has_weight)
    return items, neighbors, num_items, num_edges


def spark_layerwise_embed(
    spark,
    items_path: PathLike,
    neighbors_path: PathLike,
    model_path: PathLike,
    out_path: PathLike,
    overwrite: bool = False,
    num_partitions: Optional[int] = None,
    torch_threads: int = 1,
    keep_layers: bool = False,
    num_groups: Optional[int] = None,
    gather: str = 'auto',
) -> Dict[str, Any]:
    r"""Embeds every item with the layer-wise PinSage computation on Spark
    (see the module docstring for the input and output schemas).

    Layer :math:`k` of every item is computed once from layer :math:`k-1`
    of all items and written to Parquet before the next layer starts:

    .. math::
        \mathbf{h}^{(0)}_u &= \mathrm{encode}(\mathbf{x}_u)

        \mathbf{n}^{(k)}_u &= \gamma\left(\{\mathrm{ReLU}(\mathbf{Q}^{(k)}
        \mathbf{h}^{(k-1)}_v + \mathbf{q}^{(k)}) : v \in \mathcal{N}(u)\},
        \boldsymbol{\alpha}_u\right)

        \mathbf{h}^{(k)}_u &= \mathrm{normalize}\left(\mathrm{ReLU}(
        \mathbf{W}^{(k)} [\mathbf{h}^{(k-1)}_u ; \mathbf{n}^{(k)}_u] +
        \mathbf{w}^{(k)})\right)

    and the output is ``heads(h^{(K)})``.

    Args:
        spark (pyspark.sql.SparkSession): The session (see
            :func:`spark_session`).
        items_path: Parquet ``item_id, features``.
        neighbors_path: Parquet ``target, neighbor[, weight]``.
        model_path: A :func:`save_model` file or a ``pinsage-train``
            checkpoint, readable by the driver (a local path or a Hadoop
            URI such as ``hdfs://`` / ``s3a://``).
        out_path: Output directory (local path or Hadoop URI). It is
            written under a temporary sibling and renamed when complete.
        overwrite (bool): Replace an existing output. (default:
            :obj:`False`: an existing output is an error)
        num_partitions (int, optional): Repartition the items into this
            many partitions first (the parallelism of the encoder).
            (default: as read)
        torch_threads (int): ``torch.set_num_threads`` in each Python
            worker; 1 fits Spark's one task per core. ``0`` leaves torch's
            default. (default: ``1``)
        keep_layers (bool): Keep the per-layer Parquet files in
            ``<out>_layers`` for inspection. (default: :obj:`False`)
        num_groups (int, optional): Items are hashed into this many groups;
            a layer pools one group per task. (default:
            :func:`default_num_groups`: one per core, at most 1M edges each)
        gather (str): How a layer's messages reach their targets:
            ``broadcast`` (collected on the driver and broadcast, no
            shuffle), ``shuffle`` (any size) or ``auto`` (broadcast when
            ``num_items * hidden_channels * 4`` bytes fit in
            :data:`BROADCAST_LIMIT`). (default: ``auto``)

    Returns:
        dict: ``out_path``, ``num_items``, ``num_edges``, ``num_layers``,
        ``num_groups``, ``gather`` (the one used), ``seconds`` (wall time
        of the job) and ``items_per_second``.
    """
    t0 = time.perf_counter()
    items_path, neighbors_path, out_path = (
        _qualify(spark, p) for p in (items_path, neighbors_path, out_path))
    model_path = os.fspath(model_path)
    for name, value in (('num_partitions', num_partitions),
                        ('num_groups', num_groups)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 (got {value}).")
    if torch_threads < 0:
        raise ConfigError(f"torch_threads must be >= 0 (got "
                          f"{torch_threads}).")
    fs = _FS(spark, out_path)
    if fs.exists(out_path) and not overwrite:
        raise DataError(f"output '{out_path}' already exists; choose another"
                        f" path or pass overwrite=True (--overwrite).")

    choose_gather(gather, 0, 0)  # a bad name fails before any work
    payload = _read_model_bytes(spark, model_path)
    model = _model_from_bytes(payload, f"model file '{model_path}'")
    items, neighbors, num_items, num_edges = read_inputs(
        spark, items_path, neighbors_path, model)
    log.info('inputs checked: %d items, %d edges (%.1fs)', num_items,
             num_edges, time.perf_counter() - t0)
    if num_partitions is not None:
        items = items.repartition(num_partitions)
    gather = choose_gather(gather, num_items, int(model.hidden_channels))
    groups = num_groups or default_num_groups(spark, num_edges, gather)

    work = f"{out_path}._tmp_{uuid.uuid4().hex}"
    layers_dir = f"{out_path}_layers" if keep_layers else f"{work}/layers"
    try:
        state = run_layers(
            spark, items, neighbors, model, payload,
            lambda k: f"{layers_dir}/layer_{k}", fs, groups,
            int(torch_threads), on_layer=lambda k, _: log.info(
                'layer %d: %.1fs', k, time.perf_counter() - t0),
            gather=gather)
        final = f"{work}/embeddings"
        write_heads(spark, state, model, payload, fs, final,
                    int(torch_threads))
        _replace(fs, final, out_path, f"{work}/previous")
    finally:
        if fs.exists(work):
            fs.delete(work)
    seconds = time.perf_counter() - t0
    return {'out_path': out_path, 'num_items': num_items,
            'num_edges': num_edges, 'num_layers': model.num_layers,
            'num_groups': groups, 'gather': gather, 'seconds': seconds,
            'items_per_second': num_items / seconds}
