from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj
from torch_geometric.utils import is_sparse

from pinsage_pyg.nn.conv import (ADJ_LAYOUTS, PinSageConv, adj_to_edge_index,
                                 to_adj_t)


#: ``query_mode=`` of an asymmetric :class:`PinSage`.
QUERY_MODES = ('residual', 'separate')

#: Rows per block of the dense maths in layer-wise inference
#: (:meth:`PinSage.inference`, :func:`~pinsage_pyg.inference.layerwise_embed`).
#: A matrix kernel's summation order depends on the row count it is given,
#: so a row's embedding would change in the last bits with the chunk it
#: falls in. Every dense layer therefore runs on fixed blocks of this many
#: rows, aligned at multiples of it, and the chunks are whole blocks
#: (:func:`aligned_chunk_size`): embeddings are byte-identical whatever the
#: chunk size. (Sparse pooling is row by row, so it needs no blocks.)
INFERENCE_BLOCK = 1024


def aligned_chunk_size(chunk_size: int,
                       block: int = INFERENCE_BLOCK) -> int:
    r""":obj:`chunk_size` rounded up to a whole number of dense blocks of
    :obj:`block` rows (:data:`INFERENCE_BLOCK`), the chunk layer-wise
    inference really uses."""
    return -(-int(chunk_size) // block) * block


def in_blocks(fn, *rows: Tensor, block: int = INFERENCE_BLOCK):
    r"""``fn(*rows)`` computed on consecutive blocks of :obj:`block` rows
    and concatenated (tuple outputs element-wise). With the first row at a
    multiple of :obj:`block`, each block has the same shape and contents
    for any chunking of the rows, so the output bytes do not depend on it."""
    n = rows[0].size(0)
    if n <= block:
        return fn(*rows)
    parts = [fn(*(r[i:i + block] for r in rows)) for i in range(0, n, block)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


class PinSageHead(torch.nn.Module):
    r"""The paper's final dense layers
    :math:`\mathbf{z}_u = \mathbf{G}_2 \cdot \mathrm{ReLU}(\mathbf{G}_1
    \mathbf{h}_u + \mathbf{g})`, followed by L2 normalisation."""
    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: int):
        super().__init__()
        self.lin1 = torch.nn.Linear(in_channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, out_channels, bias=False)

    def reset_parameters(self):
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, h: Tensor) -> Tensor:
        return F.normalize(self.dense(h), dim=-1)

    def dense(self, h: Tensor) -> Tensor:
        r"""The head before the L2 normalisation."""
        return self.lin2(F.relu(self.lin1(h)))


class ResidualQueryHead(torch.nn.Module):
    r"""The query side of an asymmetric model as a learned correction of
    the item side: :math:`\mathbf{q}_u = \mathrm{norm}(\mathbf{G}_2
    \mathrm{ReLU}(\mathbf{G}_1 \mathbf{h}_u + \mathbf{g}) +
    \boldsymbol{\Delta}(\mathbf{h}_u))`, with :math:`\boldsymbol{\Delta}`
    a dense block whose output layer starts at zero. At initialisation the
    model is exactly the symmetric one (query = item), and training adds
    only the directional part, so the asymmetric model learns as fast as
    the symmetric one instead of aligning two random heads first."""
    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: int):
        super().__init__()
        self.lin1 = torch.nn.Linear(in_channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, out_channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        self.lin1.reset_parameters()
        torch.nn.init.zeros_(self.lin2.weight)

    def delta(self, h: Tensor) -> Tensor:
        r"""The correction :math:`\boldsymbol{\Delta}(\mathbf{h})`."""
        return self.lin2(F.relu(self.lin1(h)))

    def forward(self, h: Tensor, item_head: PinSageHead) -> Tensor:
        return F.normalize(item_head.dense(h) + self.delta(h), dim=-1)


def upgrade_model_kwargs(kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    r"""Saved :class:`PinSage` keyword arguments, completed for this
    version: a model saved before :obj:`query_mode` existed had a separate
    query head, so an asymmetric one gets ``query_mode="separate"``."""
    out = dict(kwargs)
    if out.get('asymmetric') and 'query_mode' not in out:
        out['query_mode'] = 'separate'
    return out


class PinSage(torch.nn.Module):
    r"""The PinSage model: a feature encoder, :obj:`num_layers`
    :class:`PinSageConv` layers over importance neighbourhoods, and the
    :class:`PinSageHead`. Inductive: items are embedded from their features
    only (no per-item ID embedding), so unseen items can be embedded.

    The forward pass accepts either a full graph or a minibatch in the
    hop-ordered layout of :class:`~pinsage_pyg.sampler.PinSageSampler`
    (``num_sampled_nodes``/``num_sampled_edges``); in the latter case each
    layer only computes the nodes it needs (Algorithm 2) and the output
    holds the seed nodes only.

    Args:
        in_channels (int): Input feature size (:obj:`-1` for lazy).
        hidden_channels (int): Hidden size :math:`m` of the convolutions.
        out_channels (int): Output embedding size :math:`d`.
        num_layers (int): Number of convolutions :math:`K`.
            (default: :obj:`2`)
        aggr (str): Neighbour pooling of every convolution,
            :obj:`"importance"`, :obj:`"mean"` or :obj:`"max"`.
            (default: :obj:`"importance"`)
        asymmetric (bool): Learn a second head for the *query* side, so that
            ``score(q, i) = <query(q), item(i)>`` can model directional
            ("what comes next") relations. (default: :obj:`False`)
        query_mode (str): The query side of an asymmetric model:
            :obj:`"residual"` (the item head plus a learned correction that
            starts at zero, :class:`ResidualQueryHead`: training starts from
            the symmetric model) or :obj:`"separate"` (a second
            :class:`PinSageHead`, random at the start). With the full
            softmax on ML-1M the separate head spent ~10 of 20 epochs
            catching up with the symmetric model.
            (default: :obj:`"residual"`)
        dropout (float): Dropout on the encoded features. (default: ``0``)
        neighbor_dropout (float): In training only, the share of nodes
            whose *whole* neighbourhood is dropped in every layer of a
            forward pass (drawn anew per pass), so that they are embedded as
            an item without interactions is at inference time: pooled
            neighbourhood zero, features only. Teaches the model to place
            new and cold items; evaluation and inference are unchanged.
            Works in the minibatch (``num_sampled_nodes``) and the
            full-graph forward. (default: ``0``)
        feature_dropout (float): In training only, the share of nodes
            whose own input features are zeroed in a forward pass (drawn
            anew per pass, independently of :obj:`neighbor_dropout`), so
            that they are embedded from their neighbourhood alone: teaches
            the model to lean on the graph where an item's features say
            little, e.g. a new item re-embedded on a newer log. Ignored
            without layers; evaluation and inference are unchanged.
            (default: ``0``)
    """
    def __init__(self, in_channels: int, hidden_channels: int,
                 out_channels: int, num_layers: int = 2,
                 aggr: str = 'importance', asymmetric: bool = False,
                 dropout: float = 0.0, neighbor_dropout: float = 0.0,
                 query_mode: str = 'residual',
                 feature_dropout: float = 0.0):
        super().__init__()
        if query_mode not in QUERY_MODES:
            raise ValueError(f"query_mode must be one of {QUERY_MODES} "
                             f"(got {query_mode!r})")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0 (got {num_layers})")
        if min(hidden_channels, out_channels) < 1:
            raise ValueError("hidden_channels and out_channels must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout})")
        if isinstance(neighbor_dropout, bool) or \
                not 0.0 <= neighbor_dropout <= 1.0:
            raise ValueError(f"neighbor_dropout must be in [0, 1] (got "
                             f"{neighbor_dropout!r})")
        if isinstance(feature_dropout, bool) or \
                not 0.0 <= feature_dropout <= 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1] (got "
                             f"{feature_dropout!r})")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.aggr = aggr
        self.asymmetric = asymmetric
        self.query_mode = query_mode
        self.dropout = dropout
        self.neighbor_dropout = float(neighbor_dropout)
        self.feature_dropout = float(feature_dropout)
        #: Where :meth:`dropped_nodes` draws from: torch's global generator
        #: (:obj:`None`) or a :class:`torch.Generator` (CPU) a training loop
        #: seeds per step, so the masks replay exactly after a resume.
        self.dropout_generator: Optional[torch.Generator] = None
        self.encoder = Linear(in_channels, hidden_channels)
        self.convs = torch.nn.ModuleList([
            PinSageConv(hidden_channels, hidden_channels, aggr=aggr)
            for _ in range(num_layers)
        ])
        self.head = PinSageHead(hidden_channels, hidden_channels,
                                out_channels)
        #: The query side of an asymmetric model: ``query_head`` (a head
        #: of its own, ``query_mode="separate"``) or ``query_delta`` (the
        #: correction of :class:`ResidualQueryHead`); distinct names, so a
        #: checkpoint of one kind never loads into the other.
        self.query_head = PinSageHead(
            hidden_channels, hidden_channels, out_channels) \
            if asymmetric and query_mode == 'separate' else None
        self.query_delta = ResidualQueryHead(
            hidden_channels, hidden_channels, out_channels) \
            if asymmetric and query_mode == 'residual' else None

    def reset_parameters(self):
        self.encoder.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        self.head.reset_parameters()
        for head in (self.query_head, self.query_delta):
            if head is not None:
                head.reset_parameters()

    def encode(self, x: Tensor) -> Tensor:
        r"""Input encoder: item features :math:`[N, F]` -> hidden
        :math:`[N, m]` (layer 0 of the convolutions, with dropout)."""
        h = self.encoder(x)
        return F.dropout(h, p=self.dropout, training=self.training)

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_weight: Optional[Tensor] = None,
        num_sampled_nodes: Optional[List[int]] = None,
        num_sampled_edges: Optional[List[int]] = None,
        side: str = 'both',
    ):
        r"""Embeds nodes.

        Returns the item-side embeddings, or ``(query, item)`` embeddings
        when :obj:`side="both"` (equal tensors unless :obj:`asymmetric`).
        In training with :obj:`neighbor_dropout` > 0, the in-edges of a
        random share of the nodes are removed in every layer; with
        :obj:`feature_dropout` > 0 the input features of a random share
        are zeroed.
        """
        if self.training and self.feature_dropout > 0 and self.num_layers:
            blank = self.dropped_nodes(x.size(0), x.device,
                                       self.feature_dropout)
            x = x.masked_fill(blank.view(-1, 1), 0.0)
        h = self.encode(x)
        dropped = None
        if self.training and self.neighbor_dropout > 0 and self.num_layers:
            dropped = self.dropped_nodes(x.size(0), x.device)
            if is_sparse(edge_index):
                edge_index, edge_weight = adj_to_edge_index(edge_index)
            keep_e = ~dropped[edge_index[1]]
            if num_sampled_edges is not None:
                # Keep the hop-ordered layout: count the kept edges per hop.
                bounds = torch.tensor([0, *num_sampled_edges],
                                      device=keep_e.device).cumsum(0)
                kept = keep_e.long().cumsum(0)
                kept = torch.cat([kept.new_zeros(1), kept])[bounds]
                num_sampled_edges = (kept[1:] - kept[:-1]).tolist()
            edge_index = edge_index[:, keep_e]
            if edge_weight is not None:
                edge_weight = edge_weight[keep_e]
        for k, conv in enumerate(self.convs):
            if num_sampled_nodes is not None and num_sampled_edges is not None:
                # Layer k needs targets of hops 0..K-1-k and their in-edges:
                keep = self.num_layers - k
                num_dst = sum(num_sampled_nodes[:keep])
                num_src = sum(num_sampled_nodes[:keep + 1])
                num_e = sum(num_sampled_edges[:keep])
                h = h[:num_src]
                ei = edge_index[:, :num_e]
                ew = None if edge_weight is None else edge_weight[:num_e]
                h = conv((h, h[:num_dst]), ei, ew, size=(num_src, num_dst))
            else:
                h = conv(h, edge_index, edge_weight)
        if num_sampled_nodes is not None:
            h = h[:num_sampled_nodes[0]]
        return self.heads(h, side)

    def dropped_nodes(self, num_nodes: int, device=None,
                      p: Optional[float] = None) -> Tensor:
        r"""The nodes whose neighbourhoods (or, with :obj:`p` =
        :obj:`feature_dropout`, features) one training forward pass
        drops: a boolean mask :math:`[N]`, each node independently with
        probability :obj:`p` (default :obj:`neighbor_dropout`), from
        :attr:`dropout_generator`, else torch's global generator."""
        p = self.neighbor_dropout if p is None else p
        if self.dropout_generator is not None:
            return (torch.rand(num_nodes, generator=self.dropout_generator)
                    < p).to(device)
        return torch.rand(num_nodes, device=device) < p

    def heads(self, h: Tensor, side: str = 'both'):
        r"""The dense head(s) on final-layer node states :math:`[N, m]`:
        ``"item"`` -> item embeddings :math:`[N, d]`, ``"query"`` -> query
        embeddings (the item head unless :obj:`asymmetric`), ``"both"`` ->
        ``(query, item)``."""
        if side == 'item':
            return self.head(h)
        if side == 'query':
            return self._query(h)
        if side == 'both':
            if self.query_delta is not None:
                dense = self.head.dense(h)
                return (F.normalize(dense + self.query_delta.delta(h),
                                    dim=-1), F.normalize(dense, dim=-1))
            item = self.head(h)
            query = item if self.query_head is None else self.query_head(h)
            return query, item
        raise ValueError(f"side must be 'item', 'query' or 'both' "
                         f"(got {side!r})")

    def _query(self, h: Tensor) -> Tensor:
        if self.query_delta is not None:
            return self.query_delta(h, self.head)
        return (self.query_head or self.head)(h)

    def project(self, k: int, h: Tensor) -> Tensor:
        r"""The neighbour messages of layer :obj:`k` (0-based):
        :meth:`PinSageConv.project` of the layer's input :math:`\mathbf{h}`
        (computed once per node in layer-wise inference)."""
        return self.convs[k].project(h)

    def convolve(self, k: int, proj: Tensor, h_dst: Tensor,
                 edge_index: Adj,
                 edge_weight: Optional[Tensor] = None,
                 fused: bool = True,
                 block: Optional[int] = None) -> Tensor:
        r"""Layer :obj:`k` (0-based) of a block of target nodes from the
        *projected* messages of their neighbours: pooling of :obj:`proj`
        over :obj:`edge_index` followed by
        :meth:`PinSageConv.update_nodes`. With
        ``proj = project(k, h_src)`` this equals
        ``convs[k]((h_src, h_dst), edge_index, edge_weight)``; it is the one
        per-layer step shared by :meth:`inference` and the out-of-core
        :func:`~pinsage_pyg.inference.layerwise_embed`.

        Args:
            k (int): Layer index.
            proj (Tensor): Projected source messages ``[num_src, m]``.
            h_dst (Tensor): Layer inputs of the targets ``[num_dst, m]``.
            edge_index (Adj): ``[2, E]`` (source row in :obj:`proj`,
                target row in :obj:`h_dst`), or a sparse ``adj_t`` of shape
                ``[num_dst, num_src]`` (:obj:`torch.sparse` CSR/COO or
                :class:`torch_sparse.SparseTensor`) whose values are the
                importance weights (then :obj:`edge_weight` is unused).
            edge_weight (Tensor, optional): Importance weights ``[E]``.
            fused (bool): Pool with one sparse-dense matmul where the
                layout allows (see :meth:`PinSageConv.pool`).
            block (int, optional): Run the dense update on blocks of this
                many target rows (:func:`in_blocks`; inference passes
                :data:`INFERENCE_BLOCK`), else on all rows at once.
        """
        conv = self.convs[k]
        pooled = conv.pool(proj, edge_index, edge_weight,
                           size=(proj.size(0), h_dst.size(0)), fused=fused)
        if block is None:
            return conv.update_nodes(h_dst, pooled)
        return in_blocks(conv.update_nodes, h_dst, pooled, block=block)

    @torch.no_grad()
    def inference(self, x: Tensor, edge_index: Tensor,
                  edge_weight: Optional[Tensor] = None,
                  chunk_size: int = 65536, layout: str = 'csr',
                  block: int = INFERENCE_BLOCK):
        r"""Layer-wise full-graph embedding in memory (the paper's MapReduce
        inference): for every layer, the neighbour messages of all nodes
        are projected once (:meth:`project`), then every node is updated
        from its pooled neighbours (:meth:`convolve`), :obj:`chunk_size`
        target nodes at a time. :obj:`edge_index` must be sorted by target,
        as built by :func:`~pinsage_pyg.sampler.importance_graph`. For
        graphs larger than memory, and resumable runs, use
        :func:`~pinsage_pyg.inference.layerwise_embed` (same maths).

        :obj:`layout` is the adjacency each chunk is pooled over (see
        :func:`~pinsage_pyg.nn.conv.to_adj_t`): ``csr`` (default; fused
        :obj:`torch.sparse` matmul), ``coo``, ``sparse_tensor``
        (torch-sparse's fused matmul) or ``edge_index`` (gather one message
        per edge, then scatter). All give the same embeddings (up to float
        summation order).

        The dense layers run on fixed blocks of :obj:`block` rows
        (:data:`INFERENCE_BLOCK`) and :obj:`chunk_size` is rounded up to
        whole blocks (:func:`aligned_chunk_size`), so the embeddings are
        byte-identical for any :obj:`chunk_size` (with the ``csr`` layout).

        Returns ``(query, item)`` embeddings of all nodes.
        """
        if layout not in ADJ_LAYOUTS:
            raise ValueError(f"unknown adjacency layout '{layout}' (choose "
                             f"one of {', '.join(ADJ_LAYOUTS)})")
        for name, value in (('chunk_size', chunk_size), ('block', block)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (got "
                                 f"{value!r})")
        chunk_size = aligned_chunk_size(chunk_size, block)
        num_nodes = x.size(0)
        dst = edge_index[1]
        starts = range(0, num_nodes, chunk_size)
        bounds = torch.searchsorted(
            dst, torch.arange(0, num_nodes + chunk_size, chunk_size,
                              device=dst.device).clamp(max=num_nodes))
        h = in_blocks(self.encode, x, block=block)
        for k in range(self.num_layers):
            proj = in_blocks(lambda t: self.project(k, t), h, block=block)
            out = []
            for c, lo in enumerate(starts):
                hi = min(lo + chunk_size, num_nodes)
                e0, e1 = int(bounds[c]), int(bounds[c + 1])
                ei = edge_index[:, e0:e1].clone()
                ei[1] -= lo
                ew = None if edge_weight is None else edge_weight[e0:e1]
                adj = to_adj_t(ei, ew, (num_nodes, hi - lo), layout)
                out.append(self.convolve(k, proj, h[lo:hi], adj, ew,
                                         fused=layout != 'edge_index',
                                         block=block))
            h = torch.cat(out)
        return in_blocks(lambda t: self.heads(t, 'both'), h, block=block)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.hidden_channels}, {self.out_channels}, '
                f'num_layers={self.num_layers}, aggr={self.aggr}, '
                f'asymmetric={self.asymmetric}'
                + (f', query_mode={self.query_mode}' if self.asymmetric
                   else '')
                + (f', neighbor_dropout={self.neighbor_dropout}'
                   if self.neighbor_dropout else '')
                + (f', feature_dropout={self.feature_dropout}'
                   if self.feature_dropout else '') + ')')
