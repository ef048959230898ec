r"""Out-of-core, resumable layer-wise embedding of every item (the paper's
MapReduce inference on one machine).

The job runs in stages; each stage walks over the items in chunks and writes
its rows into a ``.npy`` file in a work directory (numpy memmaps, so the
graph may be larger than memory)::

    neighbors      importance neighbourhoods of all items, computed once with
                   the sampler's own code (:func:`importance_neighbors`):
                   neighbors.npy int32 [N, T] (-1 padded), weights.npy [N, T]
    encode         h0 = encoder(x)                       -> h0.npy [N, m]
    project{k}     p_k = ReLU(Q_k h_{k-1} + q_k), once per node
                                                         -> p{k}.npy [N, m]
    layer{k}       h_k = update(h_{k-1}, pool(p_k over N(u), alpha))
                                                         -> h{k}.npy [N, m]
    heads          item (and query) embeddings -> item_embeddings.npy [N, d]

Memory is bounded by the chunk size plus the pages of the memmaps the
kernel keeps resident: a layer chunk gathers the projected rows of its
targets' neighbours only. The per-layer maths is
:meth:`PinSage.project <pinsage_pyg.nn.PinSage.project>` and
:meth:`PinSage.convolve <pinsage_pyg.nn.PinSage.convolve>`, the same
functions :meth:`PinSage.inference <pinsage_pyg.nn.PinSage.inference>` uses.

Resumability: after a chunk's rows are flushed, ``progress.json`` is
replaced atomically (``os.replace``) with the number of finished chunks of
every stage (and, during the walks, the random generator's state). A run
killed at any point and started again with the same arguments skips the
finished chunks and recomputes the rest, which gives byte-identical files
(chunks are computed independently and deterministically for a fixed
number of torch threads). ``manifest.json`` holds a fingerprint of the
arguments (model weights and shape, features, graph, sampler settings,
chunk sizes); a work directory holding another run's partial results is
refused with :class:`WorkDirMismatch`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from pinsage_pyg.console import progress_mode
from pinsage_pyg.inference.export import atomic_write
from pinsage_pyg.nn.model import INFERENCE_BLOCK, aligned_chunk_size, in_blocks
from pinsage_pyg.sampler.walk_backends import resolve_walk_backend
from pinsage_pyg.sampler.walks import (BipartiteCSR, importance_neighbors,
                                       walk_key)

PathLike = Union[str, os.PathLike]
ArrayLike = Union[Tensor, np.ndarray]

MANIFEST = 'manifest.json'
PROGRESS = 'progress.json'
FORMAT_VERSION = 2  # 2: walks keyed by item (another random stream)
#: With ``progress='log'``, a stage that runs longer than this logs a line
#: with its progress at most once per this many seconds (besides the line
#: that closes every stage).
LOG_INTERVAL_S = 30.0

log = logging.getLogger(__name__)


class WorkDirMismatch(ValueError):
    r"""The work directory holds (partial) results of a run with different
    arguments."""


# --------------------------------------------------------------- hashing ---
def _hash_array(h, a: ArrayLike, block_rows: int = 1 << 16) -> None:
    if isinstance(a, Tensor):
        a = a.detach().cpu()
        h.update(f'{tuple(a.shape)}{a.dtype}'.encode())
        flat = a.reshape(a.size(0), -1) if a.dim() else a.reshape(1, 1)
        for lo in range(0, flat.size(0), block_rows):
            h.update(flat[lo:lo + block_rows].contiguous().numpy().tobytes())
    else:
        h.update(f'{a.shape}{a.dtype}'.encode())
        for lo in range(0, max(len(a), 1), block_rows):
            h.update(np.ascontiguousarray(a[lo:lo + block_rows]).tobytes())


def model_fingerprint(model: torch.nn.Module) -> str:
    r"""A hash of a model's architecture (``repr``) and every weight."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(model).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        _hash_array(h, t)
    return h.hexdigest()


def data_fingerprint(*arrays: ArrayLike) -> str:
    r"""A hash of the shapes, dtypes and bytes of :obj:`arrays`."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        _hash_array(h, a)
    return h.hexdigest()


# ----------------------------------------------------------- npy helpers ---
def _create_npy(path: Path, dtype, shape) -> None:
    r"""Creates ``path`` atomically as a (sparse) ``.npy`` of :obj:`shape`."""
    def write(tmp: str) -> None:
        mm = np.lib.format.open_memmap(tmp, mode='w+', dtype=dtype,
                                       shape=shape)
        mm.flush()
        del mm
    atomic_write(path, write)


def default_memory_budget() -> int:
    r"""A quarter of the physical memory in bytes (1 GiB if unknown)."""
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 4
    except (AttributeError, OSError, ValueError):
        return 1 << 30


def _npy_layout(path: Path) -> Tuple[int, np.dtype, Tuple[int, ...]]:
    r"""``(data offset, dtype, shape)`` of a C-order ``.npy`` file."""
    with open(path, 'rb') as f:
        fmt = np.lib.format
        read = {(1, 0): fmt.read_array_header_1_0,
                (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(f))
        if read is None:
            raise ValueError(f"{path}: unsupported .npy format version")
        shape, fortran, dtype = read(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered")
        return f.tell(), dtype, shape


def _row_span(path: Path, lo: int, n: int) -> Tuple[int, np.dtype, tuple]:
    offset, dtype, shape = _npy_layout(path)
    if lo < 0 or lo + n > shape[0]:
        raise ValueError(f"rows [{lo}, {lo + n}) out of range for {path} "
                         f"with {shape[0]} rows")
    row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    return offset + lo * row_bytes, dtype, shape[1:]


# Chunks are written with pwrite + fdatasync and read with pread rather
# than through a memory map of the whole file: mapping, writing and
# msync-ing a window of a multi-GB map cost more per chunk the larger the
# file (the 4M-item run spent 46 s of 194 s there, 5.5x the 1M run), the
# plain file calls cost the same per chunk at any size. The data reach the
# disk before progress.json records the chunk.
_fdatasync = getattr(os, 'fdatasync', os.fsync)


def _write_rows(path: Path, lo: int, rows: np.ndarray) -> None:
    start, dtype, row_shape = _row_span(path, lo, len(rows))
    rows = np.ascontiguousarray(rows, dtype=dtype)
    if rows.shape[1:] != tuple(row_shape):
        raise ValueError(f"rows of shape {rows.shape[1:]} do not fit "
                         f"{path} (rows of {tuple(row_shape)})")
    view = memoryview(rows.reshape(-1)).cast('B')
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], start + done)
        _fdatasync(fd)
    finally:
        os.close(fd)


def _read_rows(path: Path, lo: int, hi: int,
               out: Optional[np.ndarray] = None) -> np.ndarray:
    r"""Rows ``[lo, hi)`` of a ``.npy`` file, into :obj:`out` (a C-contiguous
    array of those rows' shape and dtype) when given."""
    start, dtype, row_shape = _row_span(path, lo, hi - lo)
    if out is None:
        out = np.empty((hi - lo, *row_shape), dtype=dtype)
    elif out.shape != (hi - lo, *row_shape) or out.dtype != dtype or \
            not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of "
                         f"shape {(hi - lo, *row_shape)}")
    view = memoryview(out.reshape(-1)).cast('B')
    with open(path, 'rb', buffering=0) as f:
        f.seek(start)
        done = 0
        while done < len(view):
            got = f.readinto(view[done:])
            if not got:
                raise ValueError(f"{path} is truncated (rows [{lo}, {hi}) "
                                 f"expected)")
            done += got
    return out


def _rows(x: ArrayLike, lo: int, hi: int) -> Tensor:
    if isinstance(x, Tensor):
        return x[lo:hi].float()
    return torch.from_numpy(np.array(x[lo:hi], dtype=np.float32))


# ------------------------------------------------------- neighbourhoods ---
def padded_to_edge_index(neighbors: np.ndarray, weights: np.ndarray,
                         offset: int = 0) -> tuple[Tensor, Tensor]:
    r"""Converts padded neighbour lists (``[n, T]``, ``-1`` = no neighbour)
    to a PyG ``edge_index`` ``[2, E]`` (row 0: neighbour, row 1: item
    ``offset + i``) sorted by target, and the edge weights ``[E]``."""
    nbr = torch.from_numpy(np.array(neighbors, dtype=np.int64))
    w = torch.from_numpy(np.array(weights, dtype=np.float32))
    valid = nbr >= 0
    dst = torch.arange(nbr.size(0)).view(-1, 1).expand_as(nbr)[valid]
    return torch.stack([nbr[valid], dst + offset]), w[valid]


def load_neighborhoods(work_dir: PathLike) -> tuple[Tensor, Tensor]:
    r"""The stored importance neighbourhoods of a (finished or partial) run
    as ``(edge_index, edge_weight)`` of the whole item graph (the layout of
    :func:`~pinsage_pyg.sampler.importance_graph`)."""
    d = Path(work_dir)
    return padded_to_edge_index(np.load(d / 'neighbors.npy', mmap_mode='r'),
                                np.load(d / 'weights.npy', mmap_mode='r'))


def _pad_neighbors(row: Tensor, item: Tensor, weight: Tensor, n: int,
                   num_neighbors: int, index_dtype) -> tuple[np.ndarray,
                                                             np.ndarray]:
    # `row` is grouped (ascending): rank within the group = slot.
    ptr = torch.zeros(n + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(row, minlength=n), 0)
    slot = torch.arange(row.numel()) - ptr[row]
    nbr = np.full((n, num_neighbors), -1, dtype=index_dtype)
    w = np.zeros((n, num_neighbors), dtype=np.float32)
    nbr[row.numpy(), slot.numpy()] = item.numpy()
    w[row.numpy(), slot.numpy()] = weight.numpy()
    return nbr, w


# ---------------------------------------------------------------- result ---
@dataclass
class LayerwiseResult:
    r"""What :func:`layerwise_embed` produced.

    Attributes:
        item_path (Path): ``item_embeddings.npy`` (float32 ``[N, d]``,
            L2-normalised) in the work directory.
        query_path (Path, optional): ``query_embeddings.npy`` (asymmetric
            models only).
        num_items (int): ``N``.
        seconds (float): Wall time of this call.
        chunks_computed (int): Chunks computed by this call.
        chunks_resumed (int): Finished chunks found from an earlier run.
        stage_seconds (dict): Wall time per stage of this call
            (``fingerprint``, ``neighbors``, ``encode``, ``project1``,
            ``layer1``, ..., ``heads``).
    """
    item_path: Path
    query_path: Optional[Path]
    num_items: int
    seconds: float
    chunks_computed: int
    chunks_resumed: int
    stage_seconds: Dict[str, float] = field(default_factory=dict)

    def load(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        r"""``(query, item)`` embeddings (memory-mapped by default)."""
        mode = 'r' if mmap else None
        item = np.load(self.item_path, mmap_mode=mode)
        query = item if self.query_path is None else np.load(
            self.query_path, mmap_mode=mode)
        return query, item


class _Progress:
    def __init__(self, path: Path):
        self.path = path
        self.state: Dict[str, Any] = {'done': {}}
        if path.exists():
            self.state = json.loads(path.read_text())

    def done(self, stage: str) -> int:
        return int(self.state['done'].get(stage, 0))

    def mark(self, stage: str, chunks: int, **extra) -> None:
        self.state['done'][stage] = chunks
        self.state.update(extra)
        text = json.dumps(self.state)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))


def _check_manifest(work: Path, manifest: Dict[str, Any],
                    overwrite: bool) -> None:
    path = work / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {'unreadable': True}
        if old == manifest:
            return
        if not overwrite:
            diff = sorted(k for k in set(old) | set(manifest)
                          if old.get(k) != manifest.get(k))
            raise WorkDirMismatch(
                f"'{work}' holds partial results of a different run "
                f"(differs in: {', '.join(diff)}). Re-run with the same "
                f"arguments to resume it, delete the directory, or choose "
                f"another output directory (or overwrite=True).")
        shutil.rmtree(work)
    elif work.exists() and any(work.iterdir()):
        if not overwrite:
            raise WorkDirMismatch(
                f"'{work}' is not empty and holds no layer-wise embedding "
                f"manifest; choose an empty or new directory (or "
                f"overwrite=True).")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=2, sort_keys=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def run_manifest(model, x: ArrayLike, csr: BipartiteCSR,
                 num_neighbors: int = 50, num_walks: int = 100,
                 walk_length: int = 2, restart_prob: float = 0.0,
                 seed: int = 0, chunk_size: int = 16384,
                 walk_chunk_size: int = 65536,
                 extra_fingerprint: Optional[Dict[str, Any]] = None,
                 backend: str = 'auto',
                 window: Optional[int] = None,
                 dense_block: int = INFERENCE_BLOCK) -> Dict[str, Any]:
    r"""What identifies a :func:`layerwise_embed` run (stored as
    ``manifest.json``): hashes of the model, the features and the graph,
    the sampler settings (with the resolved walk backend: walks of another
    backend are another random stream) and the chunk sizes."""
    num_items = csr.num_items
    backend = resolve_walk_backend(backend, csr.item_ptr.device,
                                   window=window)
    sampler = dict(num_neighbors=int(num_neighbors), num_walks=int(num_walks),
                   walk_length=int(walk_length),
                   restart_prob=float(restart_prob), seed=int(seed),
                   backend=backend)
    if window is not None:  # absent for whole-history walks (older runs)
        sampler['window'] = int(window)
    return {
        'format': FORMAT_VERSION,
        'num_items': int(num_items),
        'model': model_fingerprint(model),
        'model_repr': repr(model),
        'features': data_fingerprint(x),
        'graph': data_fingerprint(csr.item_ptr, csr.item_users, csr.user_ptr,
                                  csr.user_items),
        'sampler': sampler,
        'chunk_size': aligned_chunk_size(chunk_size, dense_block),
        # Rows per block of the dense maths (chunks are whole blocks): a
        # run with other blocks has other last bits.
        'dense_block': int(dense_block),
        'walk_chunk_size': int(walk_chunk_size),
        'extra': extra_fingerprint or {},
    }


# ------------------------------------------------------------------- job ---
@torch.no_grad()
def layerwise_embed(
    model,
    x: ArrayLike,
    csr: BipartiteCSR,
    work_dir: PathLike,
    num_neighbors: int = 50,
    num_walks: int = 100,
    walk_length: int = 2,
    restart_prob: float = 0.0,
    seed: int = 0,
    chunk_size: int = 16384,
    walk_chunk_size: int = 65536,
    device: Union[str, torch.device] = 'cpu',
    keep_intermediate: bool = False,
    overwrite: bool = False,
    progress: Union[bool, str, None] = False,
    extra_fingerprint: Optional[Dict[str, Any]] = None,
    backend: str = 'auto',
    window: Optional[int] = None,
    memory_budget: Optional[int] = None,
    dense_block: int = INFERENCE_BLOCK,
) -> LayerwiseResult:
    r"""Embeds every item layer-wise, out of core and resumably (see the
    module docstring for the stages and files).

    The importance neighbourhoods are exactly those of
    ``importance_graph(csr, num_neighbors=..., seed=seed,
    chunk_size=walk_chunk_size)`` (the same sampler code and random
    stream), so with ``seed = train seed + 7919`` they are the evaluation
    graph of a ``pinsage-train`` run. Items without interactions
    (cold start) have no neighbours and are embedded from their features.
    With the same neighbourhoods the result equals the minibatch forward
    of :class:`~pinsage_pyg.nn.PinSage` on every item (max abs diff
    :math:`< 10^{-5}` in float32; the test suite checks it).

    Args:
        model (PinSage): The model (put in eval mode for the run).
        x (Tensor or np.ndarray): Item features ``[N, F]``; a numpy memmap
            is read chunk by chunk.
        csr (BipartiteCSR): Item-context graph of ``N`` items.
        work_dir (path): Directory for the stage files, ``manifest.json``
            and ``progress.json``.
        num_neighbors, num_walks, walk_length, restart_prob: Importance
            sampling settings (:func:`importance_neighbors`).
            (default: ``50, 100, 2, 0.0``)
        seed (int): Seed of the walks. (default: ``0``)
        chunk_size (int): Items per chunk of the encode/project/layer/head
            stages, rounded up to whole blocks of
            :obj:`dense_block` rows (the dense maths runs on those fixed
            blocks, so the embeddings are the same bytes for every value);
            memory grows with ``chunk_size * T * m``. (default: ``16384``)
        walk_chunk_size (int): Seed items per chunk of the walks (a
            memory setting: with the plain walk the neighbourhoods are the
            same for every value). (default: ``65536``)
        device: Device of the dense maths. (default: ``'cpu'``)
        keep_intermediate (bool): Keep ``h*.npy``/``p*.npy`` of finished
            layers. (default: :obj:`False`)
        overwrite (bool): Wipe a work directory holding another run's
            results instead of refusing. (default: :obj:`False`)
        progress (bool or str): ``'bar'``: a progress bar per stage;
            ``'log'``: log lines (logger ``pinsage_pyg.inference.layerwise``,
            level INFO): one that closes each stage, ``[3/7] project1:
            1,682 items in 0.4s (4,200 items/s)``, and in a stage that runs
            long one every :data:`LOG_INTERVAL_S` seconds with the items
            done, the rate and the time left; ``'auto'`` or :obj:`True`: a
            bar when stdout is a terminal, else log lines (a bar redirected
            to a file is a stream of carriage returns); :obj:`False`,
            :obj:`None` or ``'none'``: nothing. (default: :obj:`False`)
        extra_fingerprint (dict, optional): More arguments that identify
            the run (e.g. the dataset config); stored in the manifest.
        backend (str): Walk kernel (see
            :func:`~pinsage_pyg.sampler.random_walk`); its resolved name is
            part of the manifest.
        window (int, optional): Time-local walks (see
            :func:`~pinsage_pyg.sampler.random_walk`); part of the
            manifest.
        dense_block (int): Rows per block of the dense maths, aligned at
            multiples of it (part of the manifest: another value changes
            the last bits). (default:
            :data:`~pinsage_pyg.nn.model.INFERENCE_BLOCK`, 1024)
        memory_budget (int, optional): Bytes a layer may hold in memory
            for the rows its pooling gathers (the projected rows of all
            ``N`` items, ``N * hidden * 4``): within the budget they are
            gathered from RAM, beyond it from the memory-mapped file
            (fully out of core, slower per row on big graphs). ``0``:
            always from the file. The output is the same either way.
            (default: a quarter of the physical memory)

    Returns:
        :class:`LayerwiseResult`.
    """
    t0 = time.time()
    num_items = csr.num_items
    if x.shape[0] != num_items:
        raise ValueError(f"x has {x.shape[0]} rows but the graph has "
                         f"{num_items} items")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-dimensional [N, F] (got shape "
                         f"{tuple(x.shape)})")
    in_channels = model.encoder.in_channels
    if in_channels not in (-1, x.shape[1]):
        raise ValueError(f"x has {x.shape[1]} features but the model "
                         f"expects {in_channels}")
    for name, value in (('chunk_size', chunk_size),
                        ('walk_chunk_size', walk_chunk_size),
                        ('dense_block', dense_block)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1 (got "
                             f"{value!r})")
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors (T) must be >= 1 (got "
                         f"{num_neighbors})")
    chunk_size = aligned_chunk_size(chunk_size, dense_block)
    mode = progress_mode(progress)
    if memory_budget is None:
        memory_budget = default_memory_budget()
    device = torch.device(device)
    model = model.to(device).eval()
    work = Path(work_dir)
    K, m = model.num_layers, model.hidden_channels
    manifest = run_manifest(model, x, csr, num_neighbors, num_walks,
                            walk_length, restart_prob, seed, chunk_size,
                            walk_chunk_size, extra_fingerprint, backend,
                            window, dense_block)
    backend = manifest['sampler']['backend']
    _check_manifest(work, manifest, overwrite)
    stage_seconds = {'fingerprint': time.time() - t0}
    prog = _Progress(work / PROGRESS)
    index_dtype = np.int32 if num_items < 2**31 else np.int64
    counters = {'computed': 0, 'resumed': 0, 'stage': 0}
    num_stages = 3 + 2 * K  # neighbors, encode, K x (project, layer), heads

    def chunks(stage: str, step: int):
        r"""Yields the unfinished ``(index, lo, hi)`` of a stage."""
        n_chunks = total(step)
        done = prog.done(stage)
        counters['resumed'] += done
        counters['stage'] += 1
        label = f"[{counters['stage']}/{num_stages}] {stage}"
        bar = None
        if mode == 'bar' and done < n_chunks:
            from tqdm.auto import tqdm
            bar = tqdm(total=num_items, initial=min(done * step, num_items),
                       desc=stage, unit='item', unit_scale=True,
                       dynamic_ncols=True)
        elif mode == 'log' and n_chunks and done >= n_chunks:
            log.info("%s: done in an earlier run (resumed)", label)
        elif mode == 'log' and done:
            log.info("%s: resuming at item %s of %s", label,
                     f"{done * step:,}", f"{num_items:,}")
        start = began = last = time.perf_counter()
        items = 0
        for c in range(done, n_chunks):
            lo, hi = c * step, min((c + 1) * step, num_items)
            yield c, lo, hi
            now = time.perf_counter()
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + \
                now - start
            start = now
            counters['computed'] += 1
            items += hi - lo
            if bar is not None:
                bar.update(hi - lo)
            elif mode == 'log' and hi < num_items and \
                    now - last >= LOG_INTERVAL_S:
                last = now
                rate = items / max(now - began, 1e-9)
                log.info("%s: %s of %s items (%d%%), %.1fs, %s items/s, "
                         "about %.0fs left", label, f"{hi:,}",
                         f"{num_items:,}", 100 * hi // num_items,
                         now - began, f"{rate:,.0f}",
                         (num_items - hi) / max(rate, 1e-9))
        if bar is not None:
            bar.close()
        elif mode == 'log' and items:
            seconds = time.perf_counter() - began
            log.info("%s: %s items in %.1fs (%s items/s)", label,
                     f"{items:,}", seconds,
                     f"{items / max(seconds, 1e-9):,.0f}")

    def total(step: int) -> int:
        return -(-num_items // step)

    def need(path: Path, stage: str, step: int, dtype, shape) -> bool:
        r"""Creates or checks a stage's output; whether work is left."""
        done = prog.done(stage)
        if done == 0:
            _create_npy(path, dtype, shape)
        elif done < total(step) and not path.exists():
            raise WorkDirMismatch(
                f"'{work}' is corrupt: {PROGRESS} records finished chunks "
                f"of stage '{stage}' but {path.name} is missing. Delete the "
                f"directory and start again.")
        return done < total(step)

    # 1. Importance neighbourhoods (same code and random stream as
    # importance_graph(..., seed=seed, chunk_size=walk_chunk_size)).
    nbr_path, w_path = work / 'neighbors.npy', work / 'weights.npy'
    T = int(num_neighbors)
    need(nbr_path, 'neighbors', walk_chunk_size, index_dtype,
         (num_items, T))
    need(w_path, 'neighbors', walk_chunk_size, np.float32, (num_items, T))
    # The plain walk is keyed by item (walk_key(seed)): the neighbourhoods
    # do not depend on walk_chunk_size and a resumed chunk needs no state.
    # The compiled kernels draw from a generator whose state is saved.
    key = walk_key(seed) if backend == 'torch' else None
    gen = None
    if key is None:
        gen = torch.Generator(device=csr.item_ptr.device)
        gen.manual_seed(int(seed))
        if prog.done('neighbors') > 0 and 'rng' in prog.state:
            gen.set_state(torch.frombuffer(bytearray(base64.b64decode(
                prog.state['rng'])), dtype=torch.uint8))
    for c, lo, hi in chunks('neighbors', walk_chunk_size):
        seeds = torch.arange(lo, hi, device=csr.item_ptr.device)
        row, item, w = importance_neighbors(csr, seeds, T, num_walks,
                                            walk_length, restart_prob,
                                            gen, backend, window, key=key)
        nbr, wt = _pad_neighbors(row.cpu(), item.cpu(), w.cpu(), hi - lo,
                                 T, index_dtype)
        _write_rows(nbr_path, lo, nbr)
        _write_rows(w_path, lo, wt)
        if gen is None:
            prog.mark('neighbors', c + 1)
        else:
            state = base64.b64encode(gen.get_state().numpy().tobytes())
            prog.mark('neighbors', c + 1, rng=state.decode())

    # 2. h0 = encoder(x).
    h_path = work / 'h0.npy'
    need(h_path, 'encode', chunk_size, np.float32, (num_items, m))
    for c, lo, hi in chunks('encode', chunk_size):
        h = in_blocks(model.encode, _rows(x, lo, hi).to(device),
                      block=dense_block)
        _write_rows(h_path, lo, h.cpu().numpy())
        prog.mark('encode', c + 1)

    # 3. Layers: project every node once, then pool + update.
    for k in range(K):
        p_path = work / f'p{k + 1}.npy'
        out_path = work / f'h{k + 1}.npy'
        layer_left = prog.done(f'layer{k + 1}') < total(chunk_size)
        need(p_path, f'project{k + 1}', chunk_size, np.float32,
             (num_items, m))
        # The pooling gathers projected rows at random: from memory when
        # they fit the budget (numpy backs large arrays with huge pages, so
        # a gather costs about the same per row at any size), else from the
        # memory-mapped file (out of core).
        resident = None
        if layer_left and num_items * m * 4 <= memory_budget:
            resident = np.empty((num_items, m), dtype=np.float32)
            done_rows = min(prog.done(f'project{k + 1}') * chunk_size,
                            num_items)
            if done_rows:  # the resumed chunks
                _read_rows(p_path, 0, done_rows, out=resident[:done_rows])
        for c, lo, hi in chunks(f'project{k + 1}', chunk_size):
            p = in_blocks(lambda t: model.project(k, t), torch.from_numpy(
                _read_rows(h_path, lo, hi)).to(device),
                block=dense_block).cpu().numpy()
            _write_rows(p_path, lo, p)
            if resident is not None:
                resident[lo:hi] = p
            prog.mark(f'project{k + 1}', c + 1)
        proj = None
        if need(out_path, f'layer{k + 1}', chunk_size, np.float32,
                (num_items, m)):
            proj = np.load(p_path, mmap_mode='r') if resident is None \
                else torch.from_numpy(resident)
        for c, lo, hi in chunks(f'layer{k + 1}', chunk_size):
            nbr = torch.from_numpy(_read_rows(nbr_path, lo, hi)).long()
            wt = torch.from_numpy(_read_rows(w_path, lo, hi))
            # Out of core, gather each distinct neighbour's projected row
            # once, in increasing row order: popular items sit in many
            # neighbourhoods, and a sorted sweep over the memmap keeps the
            # page and TLB working set small (random-order gathers made the
            # layers grow faster than the item count).
            valid = nbr >= 0
            crow = torch.zeros(hi - lo + 1, dtype=torch.long)
            torch.cumsum(valid.sum(1), 0, out=crow[1:])
            if resident is not None and device.type == 'cpu':
                # All projected rows are in RAM: pool straight from them
                # (the adjacency's columns are item ids), no gather copy;
                # 2.5-3x faster per chunk, the same at any item count.
                adj_t = torch.sparse_csr_tensor(crow, nbr[valid], wt[valid],
                                                (hi - lo, num_items))
                p_src = proj
            else:
                src, col = torch.unique(nbr[valid], return_inverse=True)
                adj_t = torch.sparse_csr_tensor(
                    crow, col, wt[valid], (hi - lo, src.numel())).to(device)
                p_src = (torch.from_numpy(proj[src.numpy()])
                         if resident is None else
                         proj.index_select(0, src)).to(device)
            h_dst = torch.from_numpy(_read_rows(h_path, lo, hi))
            out = model.convolve(k, p_src, h_dst.to(device), adj_t,
                                 block=dense_block)
            _write_rows(out_path, lo, out.cpu().numpy())
            prog.mark(f'layer{k + 1}', c + 1)
        proj = resident = None  # unmap / free
        if not keep_intermediate:
            for old in (p_path, h_path):
                if old.exists():
                    old.unlink()
        h_path = out_path

    # 4. Heads.
    item_path = work / 'item_embeddings.npy'
    query_path = work / 'query_embeddings.npy' if model.asymmetric \
        else None
    d = model.out_channels
    need(item_path, 'heads', chunk_size, np.float32, (num_items, d))
    if query_path is not None:
        need(query_path, 'heads', chunk_size, np.float32, (num_items, d))
    for c, lo, hi in chunks('heads', chunk_size):
        h = torch.from_numpy(_read_rows(h_path, lo, hi)).to(device)
        query, item = in_blocks(lambda t: model.heads(t, 'both'), h,
                                block=dense_block)
        _write_rows(item_path, lo, item.cpu().numpy())
        if query_path is not None:
            _write_rows(query_path, lo, query.cpu().numpy())
        prog.mark('heads', c + 1)
    if not keep_intermediate and h_path.exists():
        h_path.unlink()
    return LayerwiseResult(
        item_path=work / 'item_embeddings.npy',
        query_path=(work / 'query_embeddings.npy') if model.asymmetric
        else None,
        num_items=num_items, seconds=time.time() - t0,
        chunks_computed=counters['computed'],
        chunks_resumed=counters['resumed'], stage_seconds=stage_seconds)

