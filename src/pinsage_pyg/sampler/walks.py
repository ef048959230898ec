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

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData

from pinsage_pyg.data.dataset import ENGAGED_BY, ENGAGES
from pinsage_pyg.sampler.walk_backends import (compiled_random_walk,
                                               resolve_walk_backend)
from pinsage_pyg.utils import index_to_ptr


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
        user, item = user.long(), item.long()
        if user.numel() and (int(user.min()) < 0
                             or int(user.max()) >= num_users):
            raise ValueError(f"user index out of range [0, {num_users})")
        if item.numel() and (int(item.min()) < 0
                             or int(item.max()) >= num_items):
            raise ValueError(f"item index out of range [0, {num_items})")
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


def _uniform_edge(ptr: Tensor, num_edges: int, node: Tensor,
                  generator: Optional[torch.Generator]
                  ) -> tuple[Tensor, Tensor]:
    r"""One uniformly random CSR edge position per entry of :obj:`node`, and
    whether it exists (``False`` for a node that is ``-1`` or has no
    edges; its position is then clamped into range)."""
    safe = node.clamp(min=0)
    start = ptr[safe]
    deg = ptr[safe + 1] - start
    r = torch.rand(node.shape, device=node.device, generator=generator)
    off = (r * deg).long().clamp(max=(deg - 1).clamp(min=0))
    ok = (node >= 0) & (deg > 0)
    return (start + off).clamp(max=max(num_edges - 1, 0)), ok


def _uniform_neighbor(ptr: Tensor, col: Tensor, node: Tensor,
                      generator: Optional[torch.Generator]) -> Tensor:
    r"""One uniformly random neighbour per entry of :obj:`node` (``-1`` for a
    node that is ``-1`` or has no neighbours)."""
    edge, ok = _uniform_edge(ptr, col.numel(), node, generator)
    out = col[edge] if col.numel() else torch.full_like(node, -1)
    return torch.where(ok, out, torch.full_like(node, -1))


def _window_neighbor(csr: BipartiteCSR, node: Tensor, window: int,
                     generator: Optional[torch.Generator]) -> Tensor:
    r"""One item -> user -> item step that stays within :obj:`window`
    positions of the arriving edge in the user's ordered item list: a
    uniformly random user of each item in :obj:`node`, then a uniformly
    random other item among those the user engaged at most :obj:`window`
    positions before or after it (``-1`` where there is none)."""
    if csr.item_pos is None:
        raise ValueError("a windowed walk needs BipartiteCSR.item_pos (build "
                         "the graph with BipartiteCSR.from_edges or "
                         "from_hetero)")
    edge, ok = _uniform_edge(csr.item_ptr, csr.item_users.numel(), node,
                             generator)
    if csr.item_users.numel() == 0:
        return torch.full_like(node, -1)
    user, pos = csr.item_users[edge], csr.item_pos[edge]
    lo = torch.maximum(csr.user_ptr[user], pos - window)
    hi = torch.minimum(csr.user_ptr[user + 1] - 1, pos + window)
    n = hi - lo  # positions in [lo, hi] other than pos
    ok &= n > 0
    r = torch.rand(node.shape, device=node.device, generator=generator)
    k = lo + (r * n).long().clamp(max=(n - 1).clamp(min=0))
    k = k + (k >= pos).long()
    out = csr.user_items[k.clamp(max=csr.user_items.numel() - 1)]
    return torch.where(ok, out, torch.full_like(node, -1))


def random_walk(csr: BipartiteCSR, start: Tensor, walk_length: int,
                restart_prob: float = 0.0,
                generator: Optional[torch.Generator] = None,
                backend: str = 'auto',
                window: Optional[int] = None) -> Tensor:
    r"""Random walks item -> user -> item from the items in :obj:`start`.

    One step goes from an item to a uniformly random user who engaged with
    it, then to a uniformly random item of that user. Before each step the
    walker jumps back to its start item with probability
    :obj:`restart_prob` (a walk with restart, whose visit counts approximate
    Personalized PageRank w.r.t. the start item). A walker at a dead end
    (an item without users) restarts from its start item.

    Args:
        csr (BipartiteCSR): The graph.
        start (LongTensor): Start items, shape ``[n]``.
        walk_length (int): Item-to-item steps per walk (``>= 1``).
        restart_prob (float): Restart probability per step, in ``[0, 1)``.
        generator (torch.Generator, optional): Random source.
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
    start = start.long()
    backend = resolve_walk_backend(backend, start.device, window=window)
    if backend != 'torch':
        return compiled_random_walk(csr, start, walk_length, restart_prob,
                                    backend, generator)
    out = torch.empty((start.numel(), walk_length), dtype=torch.long,
                      device=start.device)
    cur = start
    for step in range(walk_length):
        if step > 0:
            reset = cur < 0
            if restart_prob > 0:
                reset |= torch.rand(cur.shape, device=cur.device,
                                    generator=generator) < restart_prob
            cur = torch.where(reset, start, cur)
        if window is None:
            user = _uniform_neighbor(csr.item_ptr, csr.item_users, cur,
                                     generator)
            cur = _uniform_neighbor(csr.user_ptr, csr.user_items, user,
                                    generator)
        else:
            cur = _window_neighbor(csr, cur, window, generator)
        out[:, step] = cur
    return out


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
) -> tuple[Tensor, Tensor, Tensor]:
    r"""PinSage's importance-based neighbourhoods: from every seed item run
    :obj:`num_walks` random walks of :obj:`walk_length` item steps, count
    the visits to other items, keep the top-:obj:`num_neighbors` (``T``) and
    L1-normalise their counts into importance weights ``alpha``.

    Ties in the counts are broken by the smaller item index (deterministic
    given the walks). :obj:`backend` picks the walk kernel and
    :obj:`window` keeps the walks local in time (see :func:`random_walk`).

    Returns:
        ``(seed_index, neighbor, weight)``: for each kept (seed, neighbour)
        pair the position of the seed in :obj:`seeds`, the neighbour item and
        its weight. Pairs are grouped by seed and sorted by decreasing
        weight; the weights of each seed sum to 1. A seed whose walks visit
        no other item (e.g. an isolated item) has no pairs.
    """
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors (T) must be >= 1 "
                         f"(got {num_neighbors})")
    if num_walks < 1:
        raise ValueError(f"num_walks must be >= 1 (got {num_walks})")
    seeds = seeds.long()
    n, num_items = seeds.numel(), csr.num_items
    start = seeds.repeat_interleave(num_walks)
    visits = random_walk(csr, start, walk_length, restart_prob, generator,
                         backend, window)
    row = torch.arange(n, device=seeds.device).repeat_interleave(
        num_walks * walk_length)
    visits = visits.view(-1)
    keep = (visits >= 0) & (visits != seeds[row])
    key = row[keep] * num_items + visits[keep]
    key, count = torch.unique(key, sorted=True, return_counts=True)
    row, item = key // num_items, key % num_items
    # Sort by (row asc, count desc, item asc): `key` is already sorted by
    # (row, item), so two stable sorts finish the job.
    perm = torch.sort(count, descending=True, stable=True)[1]
    perm = perm[torch.sort(row[perm], stable=True)[1]]
    row, item, count = row[perm], item[perm], count[perm]
    # Rank within each seed's group, keep the top T:
    group_start = index_to_ptr(row, n)
    rank = torch.arange(row.numel(), device=seeds.device) - group_start[row]
    top = rank < num_neighbors
    row, item, count = row[top], item[top], count[top].to(torch.float)
    total = torch.zeros(n, device=seeds.device).index_add_(0, row, count)
    return row, item, count / total[row]


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
    (move it with :meth:`BipartiteCSR.to`), with a random generator on that
    device; the returned graph is on that device too (``data.cpu()`` moves
    it back). CPU and CUDA generators give different random streams: the
    same :obj:`seed` gives the same graph on the same device type, and
    graphs with the same distribution across devices.

    Args:
        csr (BipartiteCSR): The item-user graph (train interactions only).
        x (Tensor, optional): Item features to attach as ``data.x``.
        seed (int, optional): Seed of a private random generator (the same
            seed gives the same graph on the same device).
        nodes (LongTensor, optional): Only compute the neighbourhoods of
            these items (others get none; any device). Default: all items.
        backend (str): Walk kernel, see :func:`random_walk`.
        window (int, optional): Time-local walks, see :func:`random_walk`.
    """
    device = csr.item_ptr.device
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
    num_items = csr.num_items
    if nodes is None:
        nodes = torch.arange(num_items, device=device)
    nodes = nodes.to(device)
    backend = resolve_walk_backend(backend, device, window=window)
    rows, cols, weights = [], [], []
    for lo in range(0, nodes.numel(), chunk_size):
        chunk = nodes[lo:lo + chunk_size]
        r, nbr, w = importance_neighbors(csr, chunk, num_neighbors, num_walks,
                                         walk_length, restart_prob, gen,
                                         backend, window)
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
        if x.size(0) != num_items:
            raise ValueError(f"x has {x.size(0)} rows but the graph has "
                             f"{num_items} items")
        data.x = x
    return data
