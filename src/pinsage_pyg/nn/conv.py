from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import (Adj, OptPairTensor, OptTensor, Size,
                                    SparseTensor)
from torch_geometric.utils import (is_sparse, is_torch_sparse_tensor, spmm,
                                   to_torch_coo_tensor, to_torch_csr_tensor)

AGGRS = ('importance', 'mean', 'max')
#: Adjacency layouts of :func:`to_adj_t` (and of ``PinSage.inference``).
ADJ_LAYOUTS = ('edge_index', 'csr', 'coo', 'sparse_tensor')


def to_adj_t(edge_index: Tensor, edge_weight: OptTensor, size: Tuple[int, int],
             layout: str = 'csr') -> Adj:
    r"""``edge_index`` (``[2, E]``, row 0 = source/neighbour, row 1 =
    target) and its weights as the adjacency :class:`PinSageConv` takes in
    :obj:`layout`: ``edge_index`` (returned as is), ``csr`` / ``coo``
    (:obj:`torch.sparse` ``adj_t`` of shape ``[num_dst, num_src]``, values
    = weights or ones) or ``sparse_tensor`` (a
    :class:`torch_sparse.SparseTensor` ``adj_t``; needs torch-sparse).
    :obj:`size` is ``(num_src, num_dst)``."""
    num_src, num_dst = size
    if layout == 'edge_index':
        return edge_index
    if layout == 'csr':
        return to_torch_csr_tensor(edge_index.flip(0), edge_weight,
                                   size=(num_dst, num_src))
    if layout == 'coo':
        return to_torch_coo_tensor(edge_index.flip(0), edge_weight,
                                   size=(num_dst, num_src))
    if layout == 'sparse_tensor':
        from torch_geometric.typing import WITH_TORCH_SPARSE
        if not WITH_TORCH_SPARSE:
            raise ImportError(
                "adjacency layout 'sparse_tensor' needs torch-sparse: pip "
                "install --no-build-isolation torch-scatter torch-sparse "
                "(after torch), or use layout 'csr' (same result)")
        return SparseTensor(row=edge_index[1], col=edge_index[0],
                            value=edge_weight,
                            sparse_sizes=(num_dst, num_src))
    raise ValueError(f"unknown adjacency layout '{layout}' (choose one of "
                     f"{', '.join(ADJ_LAYOUTS)})")


def adj_to_edge_index(adj_t: Adj) -> Tuple[Tensor, OptTensor]:
    r"""``(edge_index, edge_weight)`` of a sparse ``adj_t`` (the inverse of
    :func:`to_adj_t`; weights are :obj:`None` where it has no values)."""
    if isinstance(adj_t, SparseTensor):
        row, col, value = adj_t.coo()
        return torch.stack([col, row]), value
    if adj_t.layout == torch.sparse_csr:
        crow = adj_t.crow_indices()
        row = torch.repeat_interleave(
            torch.arange(crow.numel() - 1, device=crow.device),
            crow[1:] - crow[:-1])
        return torch.stack([adj_t.col_indices(), row]), adj_t.values()
    adj_t = adj_t.coalesce()
    return adj_t.indices().flip(0), adj_t.values()


class PinSageConv(MessagePassing):
    r"""The PinSage convolution from the `"Graph Convolutional Neural Networks
    for Web-Scale Recommender Systems" <https://arxiv.org/abs/1806.01973>`_
    paper (Algorithm 1, CONVOLVE).

    .. math::
        \mathbf{n}_u &= \gamma\left(\left\{ \mathrm{ReLU}\left(\mathbf{Q}
        \mathbf{h}_v + \mathbf{q}\right) : v \in \mathcal{N}(u) \right\},
        \boldsymbol{\alpha}\right)

        \mathbf{z}_u &= \mathrm{ReLU}\left(\mathbf{W} \cdot
        \mathrm{CONCAT}(\mathbf{h}_u, \mathbf{n}_u) + \mathbf{w}\right)

        \mathbf{z}_u &\leftarrow \mathbf{z}_u / \| \mathbf{z}_u \|_2

    where :math:`\gamma` is *importance pooling*, the
    :math:`\alpha`-weighted mean
    :math:`\sum_{v} \alpha_{u,v} \mathbf{m}_v / \sum_{v} \alpha_{u,v}`
    with the importance weights :math:`\alpha` given as :obj:`edge_weight`
    (the weights of each target are re-normalised, so removing edges from a
    neighbourhood keeps a proper weighted mean). The paper's ablations use
    a plain mean or max instead. Nodes without neighbours pool to zero.

    Args:
        in_channels (int or tuple): Size of each input sample, or :obj:`-1`
            to derive it lazily. A tuple gives the sizes of source and
            target features (bipartite use).
        out_channels (int): Size of each output sample.
        hidden_channels (int, optional): Size of the projected neighbour
            messages :math:`\mathbf{Q}\mathbf{h}_v`. (default: same as
            :obj:`out_channels`)
        aggr (str, optional): Neighbour pooling :math:`\gamma`:
            :obj:`"importance"` (weighted mean), :obj:`"mean"` or
            :obj:`"max"`. (default: :obj:`"importance"`)
        normalize (bool, optional): L2-normalise the output.
            (default: :obj:`True`)
        bias (bool, optional): Learn the biases :math:`\mathbf{q}`,
            :math:`\mathbf{w}`. (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V_s}|, F_{s}), (|\mathcal{V_t}|, F_{t}))`
          if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (source = neighbour,
          target = node being updated),
          edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V_t}|, F_{out})` if bipartite
    """
    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        hidden_channels: Optional[int] = None,
        aggr: str = 'importance',
        normalize: bool = True,
        bias: bool = True,
        **kwargs,
    ):
        if aggr not in AGGRS:
            raise ValueError(f"'aggr' must be one of {AGGRS} (got '{aggr}')")
        super().__init__(aggr='sum' if aggr == 'importance' else aggr,
                         **kwargs)

        self.in_channels = in_channels
        if isinstance(in_channels, int):
            in_channels = (in_channels, in_channels)

        self.out_channels = out_channels
        self.hidden_channels = hidden_channels or out_channels
        self.pooling = aggr
        self.normalize = normalize

        self.lin_q = Linear(in_channels[0], self.hidden_channels, bias=bias)
        self.lin_self = Linear(in_channels[1], out_channels, bias=bias)
        self.lin_neigh = Linear(self.hidden_channels, out_channels,
                                bias=False)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        self.lin_q.reset_parameters()
        self.lin_self.reset_parameters()
        self.lin_neigh.reset_parameters()

    def forward(
        self,
        x: Union[Tensor, OptPairTensor],
        edge_index: Adj,
        edge_weight: OptTensor = None,
        size: Size = None,
    ) -> Tensor:
        if isinstance(x, Tensor):
            x = (x, x)
        x_src, x_dst = x
        assert x_dst is not None

        # Q-projection of every source node once (not once per edge):
        h = self.project(x_src)
        num_src, num_dst = (h.size(0), x_dst.size(0)) if size is None \
            else size
        n = self.pool(h, edge_index, edge_weight, size=(num_src, num_dst))
        return self.update_nodes(x_dst, n)

    def pool(self, h: Tensor, edge_index: Adj, edge_weight: OptTensor = None,
             size: Size = None, fused: bool = True) -> Tensor:
        r"""Pools the projected messages :obj:`h` of the source nodes into
        their targets (the :math:`\gamma` of Algorithm 1).

        :obj:`edge_index` is any PyG :obj:`Adj`: an ``[2, E]`` index
        (source = neighbour, target = node being updated) with optional
        :obj:`edge_weight`, a :obj:`torch.sparse` COO/CSR ``adj_t`` of
        shape ``[num_dst, num_src]``, or a :class:`torch_sparse.SparseTensor`
        ``adj_t``; a sparse adjacency's values are the importance weights
        (ignored by mean and max pooling). With :obj:`fused` (default) the
        pooling is one sparse-dense matmul (:meth:`message_and_aggregate`,
        no ``[E, channels]`` message tensor) wherever the kernel exists;
        otherwise, and for max pooling of :obj:`torch.sparse` input on CUDA
        (no such kernel), it gathers one message per edge and scatters.
        """
        # propagate_type: (x: OptPairTensor, edge_weight: OptTensor)
        num_src = h.size(0)
        num_dst = num_src if size is None or size[1] is None else size[1]
        if is_sparse(edge_index):
            adj_t = self._pooling_adj(edge_index)
            if fused and not (self.pooling == 'max' and h.is_cuda
                              and is_torch_sparse_tensor(adj_t)):
                return self.propagate(adj_t, x=(h, None), edge_weight=None)
            edge_index, edge_weight = adj_to_edge_index(adj_t)
            num_dst = adj_t.size(0)
        elif fused and (self.pooling != 'max' or not h.is_cuda):
            # Fused sparse-dense matmul: ~8x faster than gather/scatter on
            # CPU, ~15x for max (whose fused kernel torch only has on CPU).
            return self.propagate(to_adj_t(
                edge_index, edge_weight if self.pooling == 'importance'
                else None, (num_src, num_dst), 'csr'), x=(h, None),
                edge_weight=None)
        weight = edge_weight if self.pooling == 'importance' else None
        out = self.propagate(edge_index, x=(h, None), edge_weight=weight,
                             size=(num_src, num_dst))
        if self.pooling == 'importance':  # divide by the weight sums
            w = weight if weight is not None else h.new_ones(
                edge_index.size(1))
            den = h.new_zeros(num_dst).index_add_(0, edge_index[1],
                                                  w.to(h.dtype))
            out = out / den.clamp(min=1e-12).view(-1, 1)
        return out

    def _pooling_adj(self, adj_t: Adj) -> Adj:
        r"""The adjacency :meth:`pool` multiplies with: its values are the
        importance weights, replaced by ones for mean and max pooling."""
        if self.pooling == 'importance':
            return adj_t
        if isinstance(adj_t, SparseTensor):
            return adj_t.set_value(None, layout=None)
        if adj_t.layout == torch.sparse_csr:
            return torch.sparse_csr_tensor(
                adj_t.crow_indices(), adj_t.col_indices(),
                torch.ones_like(adj_t.values()), adj_t.size())
        adj_t = adj_t.coalesce()
        return torch.sparse_coo_tensor(adj_t.indices(),
                                       torch.ones_like(adj_t.values()),
                                       adj_t.size()).coalesce()

    def project(self, x_src: Tensor) -> Tensor:
        r"""The neighbour messages :math:`\mathrm{ReLU}(\mathbf{Q}
        \mathbf{h}_v + \mathbf{q})` of source nodes (the first half of the
        layer; the paper's MapReduce inference computes it once per node)."""
        return F.relu(self.lin_q(x_src))

    def update_nodes(self, x_dst: Tensor, pooled: Tensor) -> Tensor:
        r"""The dense update :math:`\mathrm{ReLU}(\mathbf{W} \cdot
        \mathrm{CONCAT}(\mathbf{h}_u, \mathbf{n}_u) + \mathbf{w})` (and
        L2 normalisation) of target nodes from their pooled neighbour
        messages :math:`\mathbf{n}_u`. :meth:`forward` is
        ``update_nodes(x_dst, pool(project(x_src)))``; layer-wise and
        distributed inference reuse the two halves."""
        out = F.relu(self.lin_self(x_dst) + self.lin_neigh(pooled))
        if self.normalize:
            out = F.normalize(out, p=2.0, dim=-1)
        return out

    def message(self, x_j: Tensor, edge_weight: OptTensor = None) -> Tensor:
        if edge_weight is None:
            return x_j
        return x_j * edge_weight.view(-1, 1).to(x_j.dtype)

    def message_and_aggregate(self, adj_t: Adj, x: OptPairTensor) -> Tensor:
        h = x[0]
        if h.dtype in (torch.float16, torch.bfloat16):
            # Under autocast: cuSPARSE's SpMM backward has no half-precision
            # CSR kernel ("operation not supported"), so pool in float32.
            h = h.float()
        with torch.autocast(h.device.type, enabled=False):
            return self._pool(adj_t, h)

    def _pool(self, adj_t: Adj, h: Tensor) -> Tensor:
        if self.pooling == 'importance':
            # sum_v alpha_uv m_v / sum_v alpha_uv (no edge weights: mean)
            num = spmm(adj_t, h, reduce='sum')
            ones = h.new_ones(h.size(0), 1)
            den = spmm(adj_t, ones, reduce='sum')
            return num / den.clamp(min=1e-12)
        return spmm(adj_t, h, reduce=self.pooling)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.in_channels}, '
                f'{self.out_channels}, aggr={self.pooling})')
