r"""Random-walk backends: plain PyTorch (the default everywhere), and the
compiled kernels of ``torch-cluster`` and ``pyg-lib`` when importable.

All backends run the same walk: from an item to a uniformly random user who
engaged with it, then to a uniformly random item of that user
(:func:`~pinsage_pyg.sampler.random_walk`), with restarts to the start item.
The compiled kernels walk a homogeneous graph (items ``0..N-1``, users
``N..N+U-1``, both edge directions in one CSR), so one item step is two of
their hops. They cannot restart mid-walk; a walk with restarts is cut into
segments at its restart points, and every segment is a fresh walk from the
start item (the same distribution: after a restart the walk forgets its
past); segments that start at step ``s`` walk only the remaining
``L - s`` steps, so restarts cost no extra hops.

The compiled kernels draw from torch's global random state. With a
:obj:`generator`, a seed is drawn from it and the kernel runs under
:func:`torch.random.fork_rng` with that seed: the result depends only on the
generator (reproducible, resumable) and the global state is left untouched.
The same seed gives different (equally distributed) walks on different
backends.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

#: Accepted values of ``backend`` (``sampler.backend`` in the configs).
WALK_BACKENDS = ('auto', 'torch', 'torch_cluster', 'pyg_lib')

INSTALL_HINT = {
    'torch_cluster': "pip install --no-build-isolation torch-cluster "
                     "(after torch; or pip install --no-build-isolation "
                     "'pinsage_pyg[ext]')",
    'pyg_lib': "pip install pyg-lib -f https://data.pyg.org/whl/"
               "torch-<version>+<cpu|cuXXX>.html",
}

# Preference of `auto` per device type, fastest first. Measured on 2 CPU
# cores (benchmarks/backends.py, benchmarks/results/backends*.md): the
# vectorised plain-PyTorch walk does 6.7M item steps/s on one thread and
# 11.7M on two, torch-cluster's kernel 5.6M and 8.8M (3-4x slower with
# restarts), and importance neighbourhoods are 1.3x slower with it on one
# thread (a loader worker), equal within noise on two. On CUDA no compiled
# kernel has been measured (the GPU image had no CUDA build of
# torch-cluster); the plain walk did 7.5M seeds/s on an H100. So `auto`
# keeps the plain walk until a kernel measures faster; name a backend to
# use it.
AUTO_ORDER = {
    'cpu': ('torch', 'torch_cluster', 'pyg_lib'),
    'cuda': ('torch', 'torch_cluster', 'pyg_lib'),
}


@lru_cache(maxsize=None)
def _importable(name: str) -> bool:
    if importlib.util.find_spec(name) is None:
        return False
    try:
        importlib.import_module(name)
    except Exception:  # a broken build (ABI mismatch with torch, ...)
        return False
    return True


@lru_cache(maxsize=None)
def _supports(backend: str, device_type: str) -> bool:
    if backend == 'torch':
        return True
    if backend not in ('torch_cluster', 'pyg_lib') or not _importable(
            backend):
        return False
    if device_type == 'cpu':
        return True
    if device_type != 'cuda':
        return False
    if backend == 'torch_cluster':
        import torch_cluster  # noqa: F401 (registers the ops)
        return int(torch.ops.torch_cluster.cuda_version()) != -1
    import pyg_lib
    return bool(getattr(pyg_lib, 'cuda_version', lambda: -1)() != -1)


def available_walk_backends(device='cpu') -> list:
    r"""The walk backends usable for tensors on :obj:`device`."""
    device_type = torch.device(device).type
    return [b for b in WALK_BACKENDS[1:] if _supports(b, device_type)]


def resolve_walk_backend(backend: str, device='cpu',
                         window: Optional[int] = None) -> str:
    r"""The concrete backend for :obj:`backend` on :obj:`device`: ``auto``
    picks the fastest available one; a named backend that is not installed
    (or not built for that device) is a :class:`ValueError` saying how to
    install it. Time-local walks (a :obj:`window`) exist only in the
    ``torch`` backend: ``auto`` then resolves to it, and a compiled backend
    is a :class:`ValueError`."""
    if backend not in WALK_BACKENDS:
        raise ValueError(f"unknown walk backend '{backend}' (choose one of "
                         f"{', '.join(WALK_BACKENDS)})")
    if window is not None:
        if backend not in ('auto', 'torch'):
            raise ValueError(
                f"walk backend '{backend}' has no time-local walks "
                f"(window={window}); use backend 'torch' or 'auto', or "
                f"window null")
        return 'torch'
    device_type = torch.device(device).type
    if backend == 'auto':
        for b in AUTO_ORDER.get(device_type, ('torch', )):
            if _supports(b, device_type):
                return b
        return 'torch'
    if not _supports(backend, device_type):
        where = '' if device_type == 'cpu' else \
            f" with {device_type} support"
        raise ValueError(
            f"walk backend '{backend}' is not available for {device_type} "
            f"tensors: {backend}{where} is not installed or failed to "
            f"import. Install it ({INSTALL_HINT[backend]}) or use "
            f"backend 'torch' / 'auto'.")
    return backend


def homogeneous_csr(csr) -> tuple:
    r"""``(rowptr, col)`` of the item-user graph as one homogeneous graph:
    items ``0..N-1`` point to their users ``N + u``, users to their items.
    Cached on :obj:`csr` (not pickled)."""
    cached = csr.__dict__.get('_homogeneous')
    if cached is not None:
        return cached
    n = csr.num_items
    rowptr = torch.cat([csr.item_ptr,
                        csr.item_ptr[-1:] + csr.user_ptr[1:]])
    col = torch.cat([csr.item_users + n, csr.user_items])
    csr.__dict__['_homogeneous'] = (rowptr, col)
    return rowptr, col


def _kernel(backend: str, rowptr: Tensor, col: Tensor, start: Tensor,
            hops: int) -> Tensor:
    r"""Uniform walks of :obj:`hops` hops: ``[n, hops + 1]`` node ids (a node
    without neighbours stays where it is)."""
    if backend == 'torch_cluster':
        import torch_cluster  # noqa: F401 (registers the op)
        out = torch.ops.torch_cluster.random_walk(rowptr, col, start, hops,
                                                  1.0, 1.0)
        return out[0] if isinstance(out, (tuple, list)) else out
    import pyg_lib
    return pyg_lib.sampler.random_walk(rowptr, col, start, hops, 1.0, 1.0)


def compiled_random_walk(csr, start: Tensor, walk_length: int,
                         restart_prob: float, backend: str,
                         generator: Optional[torch.Generator] = None
                         ) -> Tensor:
    r""":func:`~pinsage_pyg.sampler.random_walk` on a compiled kernel
    (:obj:`backend` ``torch_cluster`` or ``pyg_lib``); same output layout:
    ``[n, walk_length]`` items, ``-1`` where no step was possible (a start
    item without users)."""
    device = start.device
    n, L = start.numel(), walk_length
    if n == 0:
        return torch.empty((0, L), dtype=torch.long, device=device)
    rowptr, col = homogeneous_csr(csr)
    # Segments: every walk starts one at step 0, and one more at each step
    # s >= 1 where it restarts (probability restart_prob per step).
    seg = torch.zeros((n, L), dtype=torch.bool, device=device)
    seg[:, 0] = True
    if restart_prob > 0 and L > 1:
        seg[:, 1:] = torch.rand((n, L - 1), device=device,
                                generator=generator) < restart_prob
    walker, first_step = seg.nonzero(as_tuple=True)  # row-major order
    # items[g, j]: the item after j + 1 item steps of segment g. A segment
    # started at step s only needs L - s steps: one kernel call per s (a
    # loop over walk steps), so restarts cost no extra hops.
    items = torch.empty((walker.numel(), L), dtype=torch.long, device=device)

    def walk_segments():
        for s in range(L):
            idx = (first_step == s).nonzero().view(-1)
            if idx.numel() > 0:
                nodes = _kernel(backend, rowptr, col, start[walker[idx]],
                                2 * (L - s))
                items[idx, :L - s] = nodes[:, 2::2]

    if generator is not None:
        seed = int(torch.randint(0, 2**62, (1, ), device=generator.device,
                                 generator=generator))
        devices = [device] if device.type == 'cuda' else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            walk_segments()
    else:
        walk_segments()
    # Step t of walker i comes from its latest segment g, started at
    # s_g <= t: the item after t - s_g + 1 of that segment's steps.
    g = seg.long().cumsum(1) - 1
    g = g + (seg.sum(1).cumsum(0) - seg.sum(1)).view(-1, 1)
    t = torch.arange(L, device=device).view(1, -1)
    out = items[g, t - first_step[g]]
    # A start item without users: the kernel stays on it; report -1 as the
    # plain walk does.
    deg = csr.item_ptr[1:] - csr.item_ptr[:-1]
    out[deg[start] == 0] = -1
    return out
