r"""Vectorised random walks on the item-user graph and PinSage's
importance-based neighbourhoods (Ying et al., KDD 2018, Sec. 3.2).

The default walk is plain PyTorch: the same code runs on CPU and CUDA
tensors, with no Python loop over nodes or edges (only over walk steps and,
for the whole graph, over chunks of seed items). The compiled kernels of
torch-cluster and pyg-lib are optional backends
(:mod:`pinsage_pyg.sampler.walk_backends`); ``backend='auto'`` picks the
fastest measured one that is installed.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData

from pinsage_pyg.data.dataset import ENGAGED_BY, ENGAGES
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.sampler.walk_backends import (compiled_random_walk,
                                               resolve_walk_backend)
from pinsage_pyg.utils import index_to_ptr


def check_ids(ids, size: int, what: str, of: str = 'items') -> Tensor:
    r"""Checks that :obj:`ids` is a 1-D tensor of integer ids in
    ``[0, size)`` and returns it as a LongTensor; raises
    :class:`~pinsage_pyg.data.DataError` naming :obj:`what` otherwise.

    The public entry points of the sampler call it once per call on their
    id inputs (one min/max reduction and one host sync, nothing per hop or
    per walk step), so a bad id ends in this error instead of an index
    error deep in torch, and a float or negative id is never silently
    truncated or wrapped round."""
    if not isinstance(ids, Tensor):
        raise DataError(f"{what} must be a tensor of integer ids (got "
                        f"{type(ids).__name__}); pass a LongTensor")
    if ids.dtype == torch.bool or ids.is_floating_point() or \
            ids.is_complex():
        raise DataError(f"{what} must hold integer ids (got dtype "
                        f"{ids.dtype}); pass a LongTensor (a float id is "
                        f"not truncated to an index)")
    if ids.dim() != 1:
        raise DataError(f"{what} must be a 1-D tensor of ids (got shape "
                        f"{tuple(ids.shape)})")
    ids = ids.long()
    if ids.numel():
        lo, hi = torch.stack(torch.aminmax(ids)).tolist()
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise DataError(f"{what} holds the id {bad}, outside [0, {size})"
                            f" (the graph has {size} {of}); pass ids of "
                            f"the graph's {of}")
    return ids


def _check_size(n, what: str) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise DataError(f"{what} must be an integer (got {n!r})") from None
    if n < 0:
        raise DataError(f"{what} must be >= 0 (got {n})")
    return n


@dataclass
class BipartiteCSR:
    r"""Both directions of the item-user graph in CSR form.

    Attributes:
        item_ptr, item_users: the users of item ``i`` are
            ``item_users[item_ptr[i]:item_ptr[i + 1]]``.
        user_ptr, user_items: the items of user ``u``, in the order of the
            input edges (chronological for a dataset's graph).
        item_pos (optional): for every entry of :attr:`item_users`, the
            position of the same edge in :attr:`user_items`. Windowed walks
            (``window=``) need it; :meth:`from_edges` fills it in.
    """
    item_ptr: Tensor
    item_users: Tensor
    user_ptr: Tensor
    user_items: Tensor
    item_pos: Optional[Tensor] = None

    @property
    def num_items(self) -> int:
        return self.item_ptr.numel() - 1

    @property
    def num_users(self) -> int:
        return self.user_ptr.numel() - 1

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop('_homogeneous', None)  # walk-backend cache (rebuilt)
        state.pop('_step_tables', None)  # plain-walk cache (rebuilt)
        return state

    def to(self, device) -> 'BipartiteCSR':
        return BipartiteCSR(*(None if t is None else t.to(device) for t in (
            self.item_ptr, self.item_users, self.user_ptr, self.user_items,
            self.item_pos)))

    @classmethod
    def from_edges(cls, user: Tensor, item: Tensor, num_users: int,
                   num_items: int) -> 'BipartiteCSR':
        r"""Builds both CSRs from ``(user, item)`` edge lists. The items of
        a user keep the order of the input edges (a dataset's graph lists
        them chronologically), which windowed walks rely on."""
        num_users = _check_size(num_users, 'num_users')
        num_items = _check_size(num_items, 'num_items')
        user = check_ids(user, num_users, 'user index of the edges', 'users')
        item = check_ids(item, num_items, 'item index of the edges')
        if user.numel() != item.numel():
            raise DataError(f"the edges need one user per item (got "
                            f"{user.numel()} users, {item.numel()} items)")
        iperm = torch.argsort(item * num_users + user)
        item_ptr = index_to_ptr(item, num_items)
        item_users = user[iperm]
        uperm = torch.sort(user, stable=True)[1]  # keeps the input order
        user_ptr = index_to_ptr(user, num_users)
        user_items = item[uperm]
        edge_to_upos = torch.empty_like(uperm)
        edge_to_upos[uperm] = torch.arange(uperm.numel())
        return cls(item_ptr, item_users, user_ptr, user_items,
                   edge_to_upos[iperm])

    @classmethod
    def from_hetero(cls, data: HeteroData) -> 'BipartiteCSR':
        r"""From a :class:`HeteroData` with ``item`` and ``user`` node types
        and a ``(user, engages, item)`` (or reverse) edge type."""
        if ENGAGES in data.edge_types:
            user, item = data[ENGAGES].edge_index
        elif ENGAGED_BY in data.edge_types:
            item, user = data[ENGAGED_BY].edge_index
        else:
            raise ValueError(f"HeteroData needs a {ENGAGES} or {ENGAGED_BY} "
                             f"edge type (got {data.edge_types})")
        return cls.from_edges(user, item, data['user'].num_nodes,
                              data['item'].num_nodes)


# ------------------------------------------------------ keyed random stream
# The plain-PyTorch walk draws its random numbers from a counter-based
# generator: the number for draw ``d`` of walk ``j`` from item ``i`` is a
# hash of ``(key, i, j, d)``. So an item's walks depend only on the key and
# the item (not on the chunk, the other seeds of a call or the device), and
# CPU and CUDA give the same walks for the same key.
_M32 = 0xFFFFFFFF
_HASH_MUL = 0x45D9F3B  # < 2**27: a value < 2**36 times it fits in int64
_WEYL = 0x9E3779B9     # 2**32 / golden ratio (the draws' Weyl sequence)
_WALK_MUL = 0x2C1B3C6D  # spreads walk ids (odd, < 2**31)


def _mix32(x: Tensor) -> Tensor:
    r"""A 32-bit integer hash (xorshift-multiply, Thomas Mueller's
    constant) of the values ``0 <= x < 2**36`` of an int64 tensor, in
    place; the result is in ``[0, 2**32)``. Every product stays below
    ``2**63``, so the same bits come out on every device."""
    x ^= x >> 16
    x *= _HASH_MUL
    x &= _M32
    x ^= x >> 16
    x *= _HASH_MUL
    x &= _M32
    x ^= x >> 16
    return x


def walk_key(seed: int) -> int:
    r"""The 64-bit key of the walks' random stream for an integer
    :obj:`seed` (SplitMix64 of the seed): what :func:`importance_graph`
    uses for ``seed=`` with the plain-PyTorch walk."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 31)


def _key_from(generator: Optional[torch.Generator],
              device: torch.device) -> int:
    r"""One 63-bit key drawn from :obj:`generator` (or from torch's global
    random state)."""
    dev = generator.device if generator is not None else torch.device('cpu')
    return int(torch.randint(0, 2**63 - 1, (1, ), generator=generator,
                             device=dev))


def _walker_states(start: Tensor, walk_id: Tensor, key: int,
                   wide_ids: bool) -> Tensor:
    r"""The 32-bit state of each walker, a hash of ``(key, start item,
    walk id)``."""
    k0, k1 = key & _M32, (key >> 32) & _M32
    b = _mix32((start & _M32) ^ k0)
    if wide_ids:  # item ids beyond 2**32: fold in the high bits
        b = _mix32(b ^ (start >> 32))
    b += (walk_id & 0x7FFFFFFF) * _WALK_MUL
    b &= _M32
    b ^= k1
    return _mix32(b)


def _draw(state: Tensor, d: int) -> Tensor:
    r"""Draw ``d`` of every walker: uniform on ``[0, 2**32)``."""
    return _mix32(state + ((d + 1) * _WEYL & _M32))


def _pick(z: Tensor, n: Tensor) -> Tensor:
    r"""``floor(z * n / 2**32)``: uniform on ``[0, n)`` for ``z`` uniform
    on ``[0, 2**32)`` (bias at most ``n / 2**32``; ``n < 2**31``)."""
    return (z * n) >> 32


def _uniform_edge(ptr: Tensor, num_edges: int, node: Tensor,
                  z: Tensor) -> tuple[Tensor, Tensor]:
    r"""One uniformly random CSR edge position per entry of :obj:`node`
    (random numbers :obj:`z`, see :func:`_draw`), and whether it exists
    (``False`` for a node that is ``-1`` or has no edges; its position is
    then clamped into range)."""
    safe = node.clamp(min=0)
    start = ptr[safe]
    deg = ptr[safe + 1] - start
    ok = (node >= 0) & (deg > 0)
    edge = _pick(z, deg)
    edge += start
    return edge.clamp_(max=max(num_edges - 1, 0)), ok


def _uniform_neighbor(ptr: Tensor, col: Tensor, node: Tensor,
                      z: Tensor) -> Tensor:
    r"""One uniformly random neighbour per entry of :obj:`node` (``-1`` for a
    node that is ``-1`` or has no neighbours)."""
    if col.numel() == 0:
        return torch.full_like(node, -1)
    edge, ok = _uniform_edge(ptr, col.numel(), node, z)
    return col[edge].masked_fill_(~ok, -1)


def _window_neighbor(csr: BipartiteCSR, node: Tensor, window: int,
                     z_user: Tensor, z_item: Tensor) -> Tensor:
    r"""One item -> user -> item step that stays within :obj:`window`
    positions of the arriving edge in the user's ordered item list: a
    uniformly random user of each item in :obj:`node`, then a uniformly
    random other item among those the user engaged at most :obj:`window`
    positions before or after it (``-1`` where there is none)."""
    if csr.item_pos is None:
        raise ValueError("a windowed walk needs BipartiteCSR.item_pos (build "
                         "the graph with BipartiteCSR.from_edges or "
                         "from_hetero)")
    if csr.item_users.numel() == 0:
        return torch.full_like(node, -1)
    edge, ok = _uniform_edge(csr.item_ptr, csr.item_users.numel(), node,
                             z_user)
    user, pos = csr.item_users[edge], csr.item_pos[edge]
    lo = torch.maximum(csr.user_ptr[user], pos - window)
    hi = torch.minimum(csr.user_ptr[user + 1] - 1, pos + window)
    n = hi - lo  # positions in [lo, hi] other than pos
    ok &= n > 0
    k = lo + _pick(z_item, n.clamp(min=0))
    k = k + (k >= pos).long()
    out = csr.user_items[k.clamp(max=csr.user_items.numel() - 1)]
    return out.masked_fill_(~ok, -1)


#: Walkers per block of the plain walk (and seeds per block of the top-T
#: counting, times the walks per seed): small enough that a block's
#: temporaries stay in the CPU caches, large enough to amortise the per-op
#: overhead (measured on 2 cores, benchmarks/speed.py).
WALK_BLOCK = 1 << 16


def _step_tables(csr: BipartiteCSR) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""``(item_first, item_deg, user_first, user_deg)``: the first CSR
    position (clamped into range) and the degree of every item and user.
    Cached on :obj:`csr` (not pickled)."""
    cached = csr.__dict__.get('_step_tables')
    if cached is not None and cached[0] is csr.item_ptr:
        return cached[1]
    out = []
    for ptr in (csr.item_ptr, csr.user_ptr):
        num_edges = int(ptr[-1]) if ptr.numel() else 0
        out += [ptr[:-1].clamp(max=max(num_edges - 1, 0)),
                ptr[1:] - ptr[:-1]]
    csr.__dict__['_step_tables'] = (csr.item_ptr, tuple(out))
    return tuple(out)


def _walk_block(csr: BipartiteCSR, start: Tensor, walk_id: Tensor,
                walk_length: int, restart_prob: float, key: int,
                window: Optional[int], out: Tensor) -> None:
    r"""The plain-PyTorch walk of one block of walkers into :obj:`out`.
    Step ``s`` uses draws ``3s`` (the user), ``3s + 1`` (the item) and
    ``3s + 2`` (the restart)."""
    state = _walker_states(start, walk_id, key, csr.num_items > _M32)
    threshold = int(round(restart_prob * 2**32))
    if window is not None:
        cur = start
        for step in range(walk_length):
            if step > 0:
                reset = cur < 0
                if restart_prob > 0:
                    reset |= _draw(state, 3 * step + 2) < threshold
                cur = torch.where(reset, start, cur)
            cur = _window_neighbor(csr, cur, window, _draw(state, 3 * step),
                                   _draw(state, 3 * step + 1))
            out[:, step] = cur
        return
    # Whole-history walk: every item reached from a user has that user, so
    # the only dead end is a start item without users; its walkers step
    # from a clamped position and are set to -1 at the end.
    item_first, item_deg, user_first, user_deg = _step_tables(csr)
    cur = start
    for step in range(walk_length):
        if step > 0 and restart_prob > 0:
            cur = torch.where(_draw(state, 3 * step + 2) < threshold, start,
                              cur)
        z = _draw(state, 3 * step)
        z *= item_deg.index_select(0, cur)
        z >>= 32
        z += item_first.index_select(0, cur)
        user = csr.item_users.index_select(0, z)
        z = _draw(state, 3 * step + 1)
        z *= user_deg.index_select(0, user)
        z >>= 32
        z += user_first.index_select(0, user)
        cur = csr.user_items.index_select(0, z)
        out[:, step] = cur
    out.masked_fill_((item_deg.index_select(0, start) == 0).view(-1, 1), -1)


def _keyed_walk(csr: BipartiteCSR, start: Tensor, walk_id: Tensor,
                walk_length: int, restart_prob: float, key: int,
                window: Optional[int]) -> Tensor:
    r"""The plain-PyTorch walk on the keyed random stream, in blocks of
    :data:`WALK_BLOCK` walkers (the blocks do not change the walks)."""
    out = torch.empty((start.numel(), walk_length), dtype=torch.long,
                      device=start.device)
    if csr.item_users.numel() == 0:
        return out.fill_(-1)
    step = WALK_BLOCK if start.device.type == 'cpu' else start.numel()
    for lo in range(0, start.numel(), max(step, 1)):
        hi = lo + step
        _walk_block(csr, start[lo:hi], walk_id[lo:hi], walk_length,
                    restart_prob, key, window, out[lo:hi])
    return out


def random_walk(csr: BipartiteCSR, start: Tensor, walk_length: int,
                restart_prob: float = 0.0,
                generator: Optional[torch.Generator] = None,
                backend: str = 'auto',
                window: Optional[int] = None,
                key: Optional[int] = None,
                walk_id: Optional[Tensor] = None) -> Tensor:
    r"""Random walks item -> user -> item from the items in :obj:`start`.

    One step goes from an item to a uniformly random user who engaged with
    it, then to a uniformly random item of that user. Before each step the
    walker jumps back to its start item with probability
    :obj:`restart_prob` (a walk with restart, whose visit counts approximate
    Personalized PageRank w.r.t. the start item). A walker at a dead end
    (an item without users) restarts from its start item.

    The plain-PyTorch walk (``backend='torch'``) is counter-based: the
    random numbers of walker ``w`` are a hash of ``(key, start[w],
    walk_id[w])`` and the draw's number, so a walk does not depend on the
    other walkers of the call, on how the starts are chunked, nor on the
    device (CPU and CUDA give the same walks for the same key).

    Args:
        csr (BipartiteCSR): The graph.
        start (LongTensor): Start items, shape ``[n]``.
        walk_length (int): Item-to-item steps per walk (``>= 1``).
        restart_prob (float): Restart probability per step, in ``[0, 1)``.
        generator (torch.Generator, optional): Random source. The plain
            walk draws its :obj:`key` from it (one number) unless a key is
            given; the compiled kernels draw a seed from it.
        backend (str): ``torch`` (plain PyTorch), ``torch_cluster``,
            ``pyg_lib``, or ``auto`` (the fastest measured one installed
            for the device of :obj:`start`); see
            :mod:`~pinsage_pyg.sampler.walk_backends`. The same generator
            seed gives different, equally distributed walks per backend.
        window (int, optional): Keep each step local in time: from the
            user, step only to an item engaged at most :obj:`window`
            positions before or after the item the walker came from (in
            the order of :attr:`BipartiteCSR.user_items`, chronological
            for a dataset's graph). A user's long history is then not one
            big "board" but a sliding session of ``2 * window + 1``
            engagements. :obj:`None` (default): any item of the user, as
            in the paper. Only the ``torch`` backend implements it
            (``auto`` resolves to it).
        key (int, optional): Key of the plain walk's random stream (e.g.
            :func:`walk_key` of a seed); the compiled kernels seed their
            generator with it when no :obj:`generator` is given.
        walk_id (LongTensor, optional): Identifies each walker among those
            of the same start item (``[n]``; default: its position in
            :obj:`start`). Walkers with the same start item, walk id and
            key walk the same walk.

    Returns:
        LongTensor ``[n, walk_length]``: the item reached after each step
        (``-1`` where no step was possible).
    """
    if walk_length < 1:
        raise ValueError(f"walk_length must be >= 1 (got {walk_length})")
    if not 0.0 <= restart_prob < 1.0:
        raise ValueError(f"restart_prob must be in [0, 1) "
                         f"(got {restart_prob})")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1 or None (got {window})")
    start = check_ids(start, csr.num_items, 'random_walk start')
    backend = resolve_walk_backend(backend, start.device, window=window)
    if backend != 'torch':
        if generator is None and key is not None:
            generator = torch.Generator(device=start.device)
            generator.manual_seed(int(key) & (2**63 - 1))
        return compiled_random_walk(csr, start, walk_length, restart_prob,
                                    backend, generator)
    if key is None:
        key = _key_from(generator, start.device)
    if walk_id is None:
        walk_id = torch.arange(start.numel(), device=start.device)
    elif walk_id.shape != start.shape:
        raise DataError(f"walk_id must have the shape of start "
                        f"{tuple(start.shape)} (got {tuple(walk_id.shape)})")
    elif walk_id.is_floating_point() or walk_id.dtype == torch.bool:
        raise DataError(f"walk_id must hold integers (got dtype "
                        f"{walk_id.dtype})")
    return _keyed_walk(csr, start, walk_id.long().to(start.device),
                       walk_length, restart_prob, int(key), window)


def _top_t(visits: Tensor, seeds: Tensor, num_items: int,
           num_neighbors: int, flat: Optional[bool] = None
           ) -> tuple[Tensor, Tensor, Tensor]:
    r"""Top-T counting on the fixed-width visit matrix ``[n, width]`` (row
    ``r`` holds every item the walks of ``seeds[r]`` visited, ``-1`` for
    no step). Each row is sorted on its own; the runs of equal items give
    the visit counts (a running max of the run starts); a second row-wise
    sort over ``(width - count) * (N + 1) + item`` at the run ends orders
    every row by decreasing count, ties to the smaller item index, and the
    first T columns are kept. The work is ``O(n * width * log(width))``,
    on any device.

    The first sort is either row-wise (``flat=False``) or one stable sort
    of the flattened ``row * (N + 1) + item`` keys (``flat=True``); the row
    offsets keep every row in its own ``width`` slots, so the result is
    the same. On the CPU torch sorts a flat integer tensor with a radix
    sort: on one thread (a loader worker) ~2x faster than its row-wise
    comparison sort on 60-wide rows, and importance neighbourhoods ~10-20%
    faster; on two threads the radix sort's passes synchronise the
    threads, and on shared cores it measured between 8% faster and 15%
    slower end to end (``benchmarks/speed.py``, "first sort" line).
    :obj:`None` (default): flat on a one-thread CPU when the keys fit in
    int32, row-wise otherwise (and on CUDA, not measured flat)."""
    n, width = visits.shape
    dev = visits.device
    big = num_items + 1
    span = (width + 1) * big
    dt = torch.int32 if span < 2**31 else torch.long
    if flat is None:
        flat = (dev.type == 'cpu' and torch.get_num_threads() == 1
                and dt == torch.int32 and n * big < 2**31)
    v = visits.to(dt)
    v.masked_fill_((v < 0) | (v == seeds.view(-1, 1).to(dt)), num_items)
    if flat:  # dropped visits (num_items) sort last in their row
        kt = torch.int32 if n * big < 2**31 else torch.long
        off = torch.arange(0, n * big, big, device=dev,
                           dtype=kt).view(-1, 1)
        v = torch.sort((v.to(kt) + off).view(-1), stable=True)[0]
        v = v.view(n, width).sub_(off).to(dt)
    else:
        v = torch.sort(v, dim=1)[0]
    start = torch.ones_like(v, dtype=torch.bool)
    torch.ne(v[:, 1:], v[:, :-1], out=start[:, 1:])
    pos = torch.arange(width, device=dev, dtype=dt)
    first = torch.cummax(start * pos, dim=1)[0]
    key = first - pos  # 1 - count at a run's last entry
    key += width - 1
    key *= big
    key += v
    end = torch.ones_like(start)
    end[:, :-1] = start[:, 1:]  # a run ends where the next one starts
    key.masked_fill_(~end | (v == num_items), span - 1)
    k = min(num_neighbors, width)
    key = torch.sort(key, dim=1)[0][:, :k]
    kept = key < width * big  # a prefix of every row
    key = torch.masked_select(key, kept)
    q = torch.div(key, big, rounding_mode='floor')  # width - count
    item = (key - q * big).long()
    count = (width - q).to(torch.float)
    row = torch.repeat_interleave(torch.arange(n, device=dev), kept.sum(1))
    total = torch.zeros(n, device=dev).index_add_(0, row, count)
    return row, item, count / total[row]


def importance_neighbors(
    csr: BipartiteCSR,
    seeds: Tensor,
    num_neighbors: int = 50,
    num_walks: int = 100,
    walk_length: int = 2,
    restart_prob: float = 0.0,
    generator: Optional[torch.Generator] = None,
    backend: str = 'auto',
    window: Optional[int] = None,
    key: Optional[int] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""PinSage's importance-based neighbourhoods: from every seed item run
    :obj:`num_walks` random walks of :obj:`walk_length` item steps, count
    the visits to other items, keep the top-:obj:`num_neighbors` (``T``) and
    L1-normalise their counts into importance weights ``alpha``.

    Ties in the counts are broken by the smaller item index (deterministic
    given the walks). :obj:`backend` picks the walk kernel and
    :obj:`window` keeps the walks local in time (see :func:`random_walk`).
    The counting sorts each seed's ``num_walks * walk_length`` visits on
    their own (no sort over all seeds), on any device.

    With the plain-PyTorch walk the walks of seed item ``s`` are keyed by
    ``(key, s, walk number)``: a seed's neighbourhood depends only on the
    :obj:`key` (drawn from :obj:`generator` when not given) and the item,
    not on the other seeds of the call or their order (so a seed listed
    twice gets the same neighbourhood twice).

    Returns:
        ``(seed_index, neighbor, weight)``: for each kept (seed, neighbour)
        pair the position of the seed in :obj:`seeds`, the neighbour item and
        its weight. Pairs are grouped by seed and sorted by decreasing
        weight (then increasing neighbour index); the weights of each seed
        sum to 1. A seed whose walks visit no other item (e.g. an isolated
        item) has no pairs.
    """
    seeds = check_ids(seeds, csr.num_items, 'importance_neighbors seeds')
    return _importance_neighbors(csr, seeds, num_neighbors, num_walks,
                                 walk_length, restart_prob, generator,
                                 backend, window, key)


def _importance_neighbors(csr: BipartiteCSR, seeds: Tensor,
                          num_neighbors: int, num_walks: int,
                          walk_length: int, restart_prob: float,
                          generator: Optional[torch.Generator],
                          backend: str, window: Optional[int],
                          key: Optional[int]
                          ) -> tuple[Tensor, Tensor, Tensor]:
    r""":func:`importance_neighbors` of seeds already checked
    (:func:`check_ids`)."""
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors (T) must be >= 1 "
                         f"(got {num_neighbors})")
    if num_walks < 1:
        raise ValueError(f"num_walks must be >= 1 (got {num_walks})")
    n, width = seeds.numel(), num_walks * walk_length
    backend = resolve_walk_backend(backend, seeds.device, window=window)
    if backend != 'torch':
        visits = random_walk(csr, seeds.repeat_interleave(num_walks),
                             walk_length, restart_prob, generator, backend,
                             window, key=key)
        return _top_t(visits.view(n, width), seeds, csr.num_items,
                      num_neighbors)
    if key is None:
        key = _key_from(generator, seeds.device)
    # Walk and count a block of seeds at a time (the temporaries stay in
    # the caches; the keyed stream makes the blocks invisible).
    step = max(1, WALK_BLOCK // num_walks) if seeds.device.type == 'cpu' \
        else max(n, 1)
    walk_id = torch.arange(num_walks, device=seeds.device)
    rows, items, weights = [], [], []
    for lo in range(0, n, step):
        block = seeds[lo:lo + step]
        m = block.numel()
        visits = _keyed_walk(csr, block.repeat_interleave(num_walks),
                             walk_id.repeat(m), walk_length, restart_prob,
                             int(key), window)
        r, item, w = _top_t(visits.view(m, width), block, csr.num_items,
                            num_neighbors)
        rows.append(r + lo)
        items.append(item)
        weights.append(w)
    if len(rows) == 1:
        return rows[0], items[0], weights[0]
    empty = torch.empty(0, dtype=torch.long, device=seeds.device)
    if not rows:
        return empty, empty, torch.empty(0, device=seeds.device)
    return torch.cat(rows), torch.cat(items), torch.cat(weights)


def importance_graph(
    csr: BipartiteCSR,
    x: Optional[Tensor] = None,
    num_neighbors: int = 50,
    num_walks: int = 100,
    walk_length: int = 2,
    restart_prob: float = 0.0,
    seed: Optional[int] = None,
    chunk_size: int = 65536,
    nodes: Optional[Tensor] = None,
    backend: str = 'auto',
    window: Optional[int] = None,
) -> Data:
    r"""The importance neighbourhood of every item, as a homogeneous item
    graph ready for PyG: ``edge_index[0]`` is the neighbour ``v``,
    ``edge_index[1]`` the item ``u`` it is pooled into, ``edge_weight`` the
    importance ``alpha_{u,v}``. Edges are sorted by target (CSC order),
    so the K-hop expansion of :class:`PinSageSampler` is a gather.

    Seeds are processed :obj:`chunk_size` at a time, so memory is
    ``O(chunk_size * num_walks * walk_length)`` plus the output.

    The walks and the top-T selection run on the device of :obj:`csr`
    (move it with :meth:`BipartiteCSR.to`); the returned graph is on that
    device too (``data.cpu()`` moves it back). With the plain-PyTorch walk
    (``backend='torch'``, what ``auto`` picks) the random stream is keyed
    by item (:func:`random_walk`): the same :obj:`seed` gives the same
    graph, byte for byte, whatever :obj:`chunk_size`, whichever
    :obj:`nodes` are computed together, and on CPU or CUDA. The compiled
    kernels draw from a generator on the device seeded with :obj:`seed`:
    the same seed gives the same graph for the same chunking on the same
    device type.

    Args:
        csr (BipartiteCSR): The item-user graph (train interactions only).
        x (Tensor, optional): Item features to attach as ``data.x``.
        seed (int, optional): Seed of the walks (:func:`walk_key` of it is
            the plain walk's key). :obj:`None`: a key drawn from torch's
            global random state.
        nodes (LongTensor, optional): Only compute the neighbourhoods of
            these items (others get none; any device). Default: all items.
        backend (str): Walk kernel, see :func:`random_walk`.
        window (int, optional): Time-local walks, see :func:`random_walk`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    device = csr.item_ptr.device
    num_items = csr.num_items
    if x is not None and (x.dim() == 0 or x.size(0) != num_items):
        rows = x.size(0) if x.dim() else 0
        raise DataError(f"x has {rows} rows but the graph has {num_items} "
                        f"items; pass one feature row per item")
    if nodes is None:
        nodes = torch.arange(num_items, device=device)
    else:  # checked once here, not per chunk
        nodes = check_ids(nodes, num_items, 'importance_graph nodes').to(
            device)
    backend = resolve_walk_backend(backend, device, window=window)
    gen, key = None, None
    if backend == 'torch':  # one key for every chunk: keyed by item
        key = walk_key(seed) if seed is not None else _key_from(None, device)
    elif seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
    rows, cols, weights = [], [], []
    for lo in range(0, nodes.numel(), chunk_size):
        chunk = nodes[lo:lo + chunk_size]
        r, nbr, w = _importance_neighbors(csr, chunk, num_neighbors,
                                          num_walks, walk_length,
                                          restart_prob, gen, backend, window,
                                          key)
        rows.append(chunk[r])
        cols.append(nbr)
        weights.append(w)
    empty = torch.empty(0, dtype=torch.long, device=device)
    dst = torch.cat(rows) if rows else empty
    src = torch.cat(cols) if cols else empty
    w = torch.cat(weights) if weights else torch.empty(0, device=device)
    perm = torch.sort(dst, stable=True)[1]  # nodes may be unsorted
    dst, src, w = dst[perm], src[perm], w[perm]
    data = Data(edge_index=torch.stack([src, dst]), edge_weight=w,
                num_nodes=num_items)
    if x is not None:
        data.x = x
    return data
