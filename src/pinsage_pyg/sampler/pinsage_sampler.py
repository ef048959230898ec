r"""A PyG :class:`~torch_geometric.sampler.BaseSampler` that builds PinSage's
minibatch computation graphs (Algorithm 2) over importance neighbourhoods."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import LinkLoader
from torch_geometric.sampler import (BaseSampler, EdgeSamplerInput,
                                     NegativeSampling, NodeSamplerInput,
                                     SamplerOutput)

from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.sampler.walks import check_ids
from pinsage_pyg.utils import gather_csr_rows, index_to_ptr


def _unique_first(x: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Unique values of :obj:`x` in order of first occurrence, and the
    position of each entry of :obj:`x` in that list."""
    uniq, inv = torch.unique(x, return_inverse=True)
    first = torch.full((uniq.numel(), ), x.numel(), dtype=torch.long,
                       device=x.device)
    first.scatter_reduce_(0, inv, torch.arange(x.numel(), device=x.device),
                          reduce='amin')
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=x.device)
    return uniq[order], rank[inv]


_BUILD = "build it with pinsage_pyg.sampler.importance_graph(...)"


def _check_graph(data: Data) -> int:
    r"""Checks the importance graph once, when the sampler is built (ids in
    range, sorted by target, finite non-negative weights), and returns its
    number of items; raises :class:`~pinsage_pyg.data.DataError`."""
    if 'edge_index' not in data:
        raise DataError(f"PinSageSampler needs the importance graph "
                        f"(edge_index); {_BUILD}")
    num_nodes = data.num_nodes
    if num_nodes is None:
        raise DataError(f"the importance graph has no num_nodes; {_BUILD}")
    num_nodes = int(num_nodes)
    edge_index = data.edge_index
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or \
            edge_index.size(0) != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) \
            else type(edge_index).__name__
        raise DataError(f"the importance graph's edge_index must have shape "
                        f"[2, num_edges] (got {shape}); {_BUILD}")
    for row, name in ((0, 'neighbour'), (1, 'target')):
        check_ids(edge_index[row], num_nodes,
                  f"the importance graph's edge_index[{row}] ({name})")
    dst = edge_index[1]
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        raise DataError(f"The importance graph must be sorted by target "
                        f"(edge_index[1]); {_BUILD}")
    w = getattr(data, 'edge_weight', None)
    if w is not None:
        if not isinstance(w, Tensor) or w.shape != dst.shape or \
                not w.is_floating_point():
            got = f"{tuple(w.shape)} {w.dtype}" if isinstance(w, Tensor) \
                else type(w).__name__
            raise DataError(f"the importance graph's edge_weight must be a "
                            f"float tensor [{dst.numel()}] (got {got}); "
                            f"{_BUILD}")
        if w.numel() and not bool((torch.isfinite(w) & (w >= 0)).all()):
            bad = w[~(torch.isfinite(w) & (w >= 0))][0].item()
            raise DataError(f"the importance graph's edge_weight holds "
                            f"{bad}; the importance weights must be finite "
                            f"and >= 0 ({_BUILD})")
    return num_nodes


class PinSageSampler(BaseSampler):
    r"""PinSage's minibatch sampler (Ying et al., `Graph Convolutional Neural
    Networks for Web-Scale Recommender Systems
    <https://arxiv.org/abs/1806.01973>`_, Algorithm 2).

    Starting from the seed items :math:`\mathcal{S}^{(K)}`, it adds the
    importance neighbourhoods :math:`\mathcal{N}(u)` of every node hop by hop,
    :math:`\mathcal{S}^{(k-1)} = \mathcal{S}^{(k)} \cup
    \mathcal{N}(\mathcal{S}^{(k)})`, and returns the re-indexed subgraph in
    the layout of PyG's :class:`~torch_geometric.loader.NeighborLoader`
    (seeds first, nodes and edges ordered by hop, ``num_sampled_nodes`` /
    ``num_sampled_edges`` per hop), so that
    :class:`~torch_geometric.loader.NodeLoader` and
    :class:`~torch_geometric.loader.LinkLoader` put ``x``, ``edge_index`` and
    the importance weights ``edge_weight`` on the batch.

    The neighbourhoods come from :obj:`data`, an item graph built by
    :func:`~pinsage_pyg.sampler.importance_graph` (random walks + top-T);
    pass the same :obj:`data` to the loader. Rebuild it (e.g. every epoch)
    for fresh walks.

    For link sampling (training) two more things happen:

    * **no label leakage**: the edge between the query and the positive of
      each training pair (both directions, at every hop) is removed, so
      neither appears in the other's neighbourhood;
    * **shared negatives**: with
      ``NegativeSampling('triplet', amount=N)`` and
      :obj:`shared_negatives=True` (the paper's choice), ``N`` items are
      drawn uniformly *once per batch* and shared by every pair, and
      ``dst_neg_index`` has shape ``[N]`` (``N`` capped at the number of
      items); with :obj:`shared_negatives=False` it follows PyG's
      per-example ``[batch_size, N]`` layout.

    Args:
        data (torch_geometric.data.Data): The importance graph: ``edge_index``
            (row 0 neighbour, row 1 target, sorted by target) and
            ``edge_weight``.
        num_layers (int): Number of PinSage convolutions :math:`K`.
        shared_negatives (bool, optional): See above. (default: :obj:`True`)
        exclude_pairs (bool, optional): Remove query-positive edges from the
            sampled subgraph. (default: :obj:`True`)
        hard_negatives (HardNegativeMiner, optional): Source of PPR hard
            negatives (see :class:`~pinsage_pyg.sampler.HardNegativeMiner`).
        num_hard_negatives (int, optional): Hard negatives per training
            pair (the curriculum's current stage). They are added to the
            subgraph's seeds and returned (whenever :obj:`hard_negatives`
            is given, also for ``0``) as the 6th metadata entry,
            ``hard_neg_index [batch_size, num_hard_negatives]`` (local
            indices; a slot the miner could not fill holds the pair's
            positive, which the loss masks out). Use
            :class:`~pinsage_pyg.sampler.PinSageLinkLoader` to get it on the
            batch. (default: ``0``)
        pair_user (LongTensor, optional): The user of every training pair,
            indexed by the loader's ``input_id`` (needed with hard
            negatives: a user's other engaged items are never hard
            negatives for that user's pairs).
        seed (int, optional): If set, the negatives of a batch (shared,
            per-example and hard) are drawn from a generator seeded with
            ``seed + input_id[0]`` (the batch's first position in the
            loader's :obj:`edge_label_index`), so they depend only on the
            batch's position, not on which worker process builds it or
            on the global random state; with a sequential loader order a
            run is reproducible and can resume mid-epoch. If :obj:`None`,
            the global (per-worker) random state is used.
            (default: :obj:`None`)
        train_num_neighbors (int, optional): :math:`T_{train}`: in training
            batches (:meth:`sample_from_edges`), every node whose
            neighbourhood holds more than :math:`T_{train}` items keeps
            only :math:`T_{train}` draws, with replacement, from its top-T
            neighbours with probability proportional to their importance
            (after the query-positive edges are removed); each distinct
            neighbour drawn is weighted by its number of draws (scaled to
            the node's importance mass). The importance-weighted mean of
            the neighbour messages is then an unbiased estimate of the
            full top-T one, while :math:`|S^{(k-1)}|` grows by at most
            :math:`T_{train}` (not T) per node of :math:`S^{(k)}`. The
            draws come after the negatives from the same generator
            (deterministic given :obj:`seed` and the batch position; the
            negatives are those drawn without it). Batches then carry the
            sampled weights as ``edge_weight``
            (:class:`PinSageLinkLoader`). :obj:`None`: the full top-T
            neighbourhood. Node batches (:meth:`sample_from_nodes`,
            inference) always use the full neighbourhood.
            (default: :obj:`None`)
    """
    def __init__(self, data: Data, num_layers: int,
                 shared_negatives: bool = True,
                 exclude_pairs: bool = True,
                 hard_negatives=None,
                 num_hard_negatives: int = 0,
                 pair_user: Optional[Tensor] = None,
                 seed: Optional[int] = None,
                 train_num_neighbors: Optional[int] = None) -> None:
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0 (got {num_layers})")
        if train_num_neighbors is not None and (
                isinstance(train_num_neighbors, bool)
                or int(train_num_neighbors) != train_num_neighbors
                or train_num_neighbors < 1):
            raise ValueError(f"train_num_neighbors must be an integer >= 1 "
                             f"or None (got {train_num_neighbors!r})")
        self.num_nodes = _check_graph(data)
        src, dst = data.edge_index.long()
        self.src, self.dst = src, dst
        self.ptr = index_to_ptr(dst, self.num_nodes)
        self.train_num_neighbors = None if train_num_neighbors is None \
            else int(train_num_neighbors)
        self.weight = data.edge_weight if self.train_num_neighbors is not \
            None and 'edge_weight' in data else None
        if self.train_num_neighbors is not None and self.weight is None:
            raise ValueError("train_num_neighbors needs the importance "
                             "weights (edge_weight) of the graph; build it "
                             "with importance_graph(...)")
        self.num_layers = num_layers
        self.shared_negatives = shared_negatives
        self.exclude_pairs = exclude_pairs
        if num_hard_negatives < 0:
            raise ValueError(f"num_hard_negatives must be >= 0 (got "
                             f"{num_hard_negatives})")
        if num_hard_negatives > 0 and (hard_negatives is None
                                       or pair_user is None):
            raise ValueError("num_hard_negatives > 0 needs a "
                             "HardNegativeMiner (hard_negatives) and the "
                             "user of every pair (pair_user)")
        self.hard_negatives = hard_negatives
        self.num_hard_negatives = int(num_hard_negatives)
        self.pair_user = pair_user
        self.seed = seed

    def _generator(self, input_id: Optional[Tensor],
                   device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None
        first = int(input_id.view(-1)[0]) if input_id is not None and \
            input_id.numel() > 0 else 0
        gen = torch.Generator(device=device)
        gen.manual_seed((int(self.seed) + first) % (1 << 63))
        return gen

    # ------------------------------------------------------------------
    def _in_edges(self, nodes: Tensor) -> Tensor:
        r"""Ids of all edges pointing into :obj:`nodes` (grouped by node)."""
        return gather_csr_rows(self.ptr, nodes)[1]

    def _subsample(self, eid: Tensor, row: Tensor, num_rows: int,
                   generator: Optional[torch.Generator]
                   ) -> Tuple[Tensor, Tensor]:
        r""":obj:`train_num_neighbors` draws per row (with replacement, by
        importance) from the in-edges :obj:`eid` of :obj:`num_rows` nodes
        (:obj:`row` [E], sorted): the distinct edges drawn, still grouped
        by row in their original order, and their weights (draw counts
        scaled to the row's importance mass); rows with no more edges than
        draws keep all of them with their own weights."""
        k = self.train_num_neighbors
        w = self.weight[eid].to(torch.float)
        dev = eid.device
        deg = torch.bincount(row, minlength=num_rows)
        start = torch.cumsum(deg, 0) - deg
        slot = torch.arange(eid.numel(), device=dev) - start[row]
        width = int(deg.max()) if deg.numel() else 0
        pad_w = torch.zeros(num_rows, max(width, 1), device=dev)
        pad_w[row, slot] = w
        keep = torch.zeros(num_rows, max(width, 1), dtype=torch.bool,
                           device=dev)
        keep[row, slot] = True
        weight = pad_w.clone()
        big = (deg > k).nonzero().view(-1)
        if big.numel():
            cdf = pad_w[big].cumsum(1)
            mass = cdf[:, -1:]
            u = torch.rand(big.numel(), k, generator=generator,
                           device=dev) * mass
            pick = torch.searchsorted(cdf, u, right=True)
            pick = torch.minimum(pick, (deg[big] - 1).view(-1, 1))
            count = torch.zeros_like(cdf).scatter_add_(
                1, pick, torch.ones_like(u))
            keep[big] = count > 0
            weight[big] = count * (mass / k)
        pad_e = torch.full((num_rows, max(width, 1)), -1, dtype=torch.long,
                           device=dev)
        pad_e[row, slot] = eid
        return pad_e[keep], weight[keep]

    def _expand(self, seeds: Tensor, forbidden: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None,
                subsample: bool = False) -> SamplerOutput:
        r"""K-hop expansion of unique :obj:`seeds` (Algorithm 2); with
        :obj:`subsample`, :obj:`train_num_neighbors` draws per node (see
        :meth:`_subsample`) and the batch's weights as ``edge_weight`` of
        the output."""
        num_nodes = self.num_nodes
        dev = seeds.device
        subsample = subsample and self.train_num_neighbors is not None
        nodes = [seeds]
        edges: List[Tensor] = []
        weights: List[Tensor] = []
        frontier = seeds
        # Masks and a local-index table sized to the item count instead of
        # unique / isin / binary-search relabelling (the K-hop set covers
        # most of the items, so sorting it costs more than the tables).
        seen = torch.zeros(num_nodes, dtype=torch.bool, device=dev)
        seen[seeds] = True
        pair_node = None
        if forbidden is not None:
            pair_node = torch.zeros(num_nodes, dtype=torch.bool, device=dev)
            pair_node[forbidden // num_nodes] = True
            pair_node[forbidden % num_nodes] = True
        for _ in range(self.num_layers):
            sub_ptr, eid = gather_csr_rows(self.ptr, frontier)
            row = None
            if subsample:
                row = torch.arange(frontier.numel(), device=dev) \
                    .repeat_interleave(sub_ptr[1:] - sub_ptr[:-1])
            if forbidden is not None and eid.numel() > 0:
                s, tgt = self.src[eid], self.dst[eid]
                cand = (pair_node[s] & pair_node[tgt]).nonzero().view(-1)
                if cand.numel():
                    key = torch.minimum(s[cand], tgt[cand]) * num_nodes + \
                        torch.maximum(s[cand], tgt[cand])
                    drop = torch.zeros(eid.numel(), dtype=torch.bool,
                                       device=dev)
                    drop[cand[torch.isin(key, forbidden)]] = True
                    eid = eid[~drop]
                    if row is not None:
                        row = row[~drop]
            if subsample:
                eid, w = self._subsample(eid, row, frontier.numel(),
                                         generator)
                weights.append(w)
            edges.append(eid)
            mark = torch.zeros(num_nodes, dtype=torch.bool, device=dev)
            mark[self.src[eid]] = True
            mark &= ~seen
            new = mark.nonzero().view(-1)  # sorted, like torch.unique
            seen |= mark
            nodes.append(new)
            frontier = new
        node = torch.cat(nodes)
        eid = torch.cat(edges) if edges else torch.empty(
            0, dtype=torch.long, device=dev)
        local = torch.empty(num_nodes, dtype=torch.long, device=dev)
        local[node] = torch.arange(node.numel(), device=dev)
        row = local[self.src[eid]]
        col = local[self.dst[eid]]
        out = SamplerOutput(
            node=node, row=row, col=col, edge=eid,
            num_sampled_nodes=[n.numel() for n in nodes],
            num_sampled_edges=[e.numel() for e in edges])
        if subsample:
            # The sampled importance weights (PinSageLinkLoader puts them
            # on the batch in place of the graph's edge_weight[edge]):
            out.edge_weight = torch.cat(weights) if weights else \
                torch.empty(0, device=dev)
        return out

    # ------------------------------------------------------------------
    def sample_from_nodes(self, inputs: NodeSamplerInput,
                          **kwargs) -> SamplerOutput:
        node = check_ids(inputs.node, self.num_nodes,
                         'PinSageSampler seed nodes')
        seeds, _ = _unique_first(node.to(self.src.device))
        if seeds.numel() != node.numel():
            raise DataError("PinSageSampler.sample_from_nodes expects unique "
                            "seed nodes per batch")
        out = self._expand(seeds)
        out.metadata = (inputs.input_id, inputs.time)
        return out

    def sample_from_edges(
        self,
        inputs: EdgeSamplerInput,
        neg_sampling: Optional[NegativeSampling] = None,
    ) -> SamplerOutput:
        # The sampler works on its graph's device (the inputs may come
        # from a CPU loader or from PyG's input containers on the CPU).
        device = self.src.device
        src = check_ids(inputs.row, self.num_nodes,
                        'PinSageSampler pairs (row, the query items)')
        dst = check_ids(inputs.col, self.num_nodes,
                        'PinSageSampler pairs (col, the positive items)')
        if src.numel() != dst.numel():
            raise DataError(f"PinSageSampler pairs need one positive per "
                            f"query (got {src.numel()} queries, "
                            f"{dst.numel()} positives)")
        src, dst = src.to(device), dst.to(device)
        num_pos = src.numel()
        neg = torch.empty(0, dtype=torch.long, device=src.device)
        gen = self._generator(inputs.input_id, src.device) \
            if neg_sampling is not None else None
        if neg_sampling is not None:
            if not neg_sampling.is_triplet():
                raise ValueError("PinSageSampler supports triplet negative "
                                 "sampling (the max-margin loss) only; got "
                                 f"'{neg_sampling.mode}'")
            amount = int(neg_sampling.amount)
            if self.shared_negatives:
                amount = min(amount, self.num_nodes)
                neg = torch.randperm(self.num_nodes, generator=gen,
                                     device=src.device)[:amount]
            else:
                neg = torch.randint(self.num_nodes, (num_pos * amount, ),
                                    generator=gen, device=src.device)
        hard = torch.empty(num_pos, 0, dtype=torch.long, device=src.device)
        if neg_sampling is not None and self.num_hard_negatives > 0:
            user = self.pair_user[inputs.input_id.long()]
            hard = self.hard_negatives.sample(src, dst, user,
                                              self.num_hard_negatives,
                                              generator=gen)
            # An unfillable slot repeats the positive (masked by the loss):
            hard = torch.where(hard >= 0, hard, dst.view(-1, 1))
        seeds, inv = _unique_first(torch.cat([src, dst, neg,
                                              hard.reshape(-1)]))
        forbidden = None
        if self.exclude_pairs and num_pos > 0:
            forbidden = torch.unique(torch.minimum(src, dst) * self.num_nodes
                                     + torch.maximum(src, dst))
        out = self._expand(seeds, forbidden, gen, subsample=True)
        src_index, dst_pos_index = inv[:num_pos], inv[num_pos:2 * num_pos]
        if neg_sampling is None:
            edge_label_index = torch.stack([src_index, dst_pos_index])
            edge_label = inputs.label if inputs.label is not None else \
                torch.ones(num_pos, device=src.device)
            out.metadata = (inputs.input_id, edge_label_index, edge_label,
                            inputs.time)
        else:
            end = 2 * num_pos + neg.numel()
            dst_neg_index = inv[2 * num_pos:end]
            if not self.shared_negatives:
                dst_neg_index = dst_neg_index.view(num_pos, -1)
            out.metadata = (inputs.input_id, src_index, dst_pos_index,
                            dst_neg_index, inputs.time)
            if self.hard_negatives is not None:
                out.metadata += (inv[end:].view(num_pos,
                                                self.num_hard_negatives), )
        return out

    @property
    def edge_permutation(self) -> None:
        return None


class PinSageLinkLoader(LinkLoader):
    r"""PyG's :class:`~torch_geometric.loader.LinkLoader` that also puts the
    per-pair hard negatives of :class:`PinSageSampler` on the batch, as
    ``batch.hard_neg_index [batch_size, num_hard_negatives]`` (local node
    indices, like ``dst_neg_index``), and, with the sampler's
    :obj:`train_num_neighbors`, the batch's sampled importance weights as
    ``batch.edge_weight``. Otherwise it behaves exactly like
    :class:`~torch_geometric.loader.LinkLoader`."""
    def filter_fn(self, out):
        transform, self.transform = self.transform, None
        try:
            data = super().filter_fn(out)
        finally:
            self.transform = transform
        weight = getattr(out, 'edge_weight', None)
        if weight is not None:
            data.edge_weight = weight
        meta = getattr(out, 'metadata', None)
        if isinstance(meta, tuple) and len(meta) > 5:
            data.hard_neg_index = meta[5]
        return data if transform is None else transform(data)
