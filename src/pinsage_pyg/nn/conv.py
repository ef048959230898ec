from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import Adj, OptPairTensor, OptTensor, Size
from torch_geometric.utils import is_sparse, spmm, to_torch_csr_tensor

AGGRS = ('importance', 'mean', 'max')


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

        if is_sparse(edge_index):
            adj_t = edge_index  # rows = targets (PyG's `adj_t` layout)
        elif self.pooling != 'max' or not h.is_cuda:
            # Fused sparse-dense matmul (no [num_edges, channels] message
            # tensor): ~8x faster than gather/scatter on CPU, ~15x for max
            # (whose fused kernel torch only has on CPU).
            weight = edge_weight if self.pooling == 'importance' else None
            adj_t = to_torch_csr_tensor(edge_index.flip(0), weight,
                                        size=(num_dst, num_src))
        else:
            adj_t = None

        if adj_t is not None:
            n = self.propagate(adj_t, x=(h, x_dst))
        else:
            n = self.propagate(edge_index, x=(h, x_dst), size=size)
        return self.update_nodes(x_dst, n)

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

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

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
