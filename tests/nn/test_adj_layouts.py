r"""``PinSageConv`` and ``PinSage.inference`` give the same outputs (and the
layer the same gradients) for every adjacency layout PyG users pass:
``edge_index`` + ``edge_weight`` (fused and gather/scatter), ``torch.sparse``
CSR and COO ``adj_t``, and ``torch_sparse.SparseTensor`` ``adj_t``.
Tolerance: 1e-5 absolute in float32 (only the summation order differs)."""
import pytest
import torch

from pinsage_pyg.nn import PinSage, PinSageConv
from pinsage_pyg.nn.conv import adj_to_edge_index, to_adj_t

LAYOUTS = ['edge_index', 'csr', 'coo', 'sparse_tensor']
ATOL = 1e-5


@pytest.fixture
def layout(request, require_ext):
    if request.param == 'sparse_tensor':
        require_ext('torch_sparse')
    return request.param


def bipartite(seed=0, num_src=30, num_dst=12, num_edges=90):
    gen = torch.Generator().manual_seed(seed)
    # unique (src, dst) pairs, as in importance graphs
    key = torch.randperm(num_src * num_dst, generator=gen)[:num_edges]
    edge_index = torch.stack([key % num_src, key // num_src])
    w = torch.rand(num_edges, generator=gen) + 0.05
    return edge_index, w, (num_src, num_dst)


@pytest.mark.parametrize('layout', LAYOUTS, indirect=True)
@pytest.mark.parametrize('aggr', ['importance', 'mean', 'max'])
def test_conv_layouts_agree(layout, aggr):
    torch.manual_seed(0)
    edge_index, w, (ns, nd) = bipartite()
    x_src = torch.randn(ns, 8, requires_grad=True)
    x_dst = torch.randn(nd, 6)
    conv = PinSageConv((8, 6), 16, aggr=aggr)
    # reference: gather one message per edge, scatter (no fused kernel)
    h = conv.project(x_src)
    ref = conv.update_nodes(x_dst, conv.pool(h, edge_index, w, (ns, nd),
                                             fused=False))
    ref.sum().backward()
    ref_grad = x_src.grad.clone()
    x_src.grad = None

    adj = to_adj_t(edge_index, w, (ns, nd), layout)
    if layout == 'edge_index':
        out = conv((x_src, x_dst), adj, w)
    else:
        out = conv((x_src, x_dst), adj)  # values = importance weights
    assert out.shape == (nd, 16)
    assert torch.allclose(out, ref, atol=ATOL)
    out.sum().backward()
    assert torch.allclose(x_src.grad, ref_grad, atol=ATOL)
    # Weights change the importance output only, for every layout:
    adj2 = to_adj_t(edge_index, w.flip(0), (ns, nd), layout)
    out2 = conv((x_src, x_dst), adj2, w.flip(0))
    assert torch.allclose(out2, out, atol=ATOL) == (aggr != 'importance')


@pytest.mark.parametrize('layout', LAYOUTS, indirect=True)
def test_adjacency_round_trip(layout):
    edge_index, w, size = bipartite(seed=1)
    adj = to_adj_t(edge_index, w, size, layout)
    if layout == 'edge_index':
        assert adj is edge_index
        return
    ei, ww = adj_to_edge_index(adj)
    # same edge set with the same weights (order may differ)
    a = {(int(s), int(d)): float(v) for (s, d), v in zip(edge_index.t(), w)}
    b = {(int(s), int(d)): float(v) for (s, d), v in zip(ei.t(), ww)}
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) < 1e-7 for k in a)


@pytest.mark.parametrize('layout', LAYOUTS, indirect=True)
@pytest.mark.parametrize('aggr', ['importance', 'max'])
def test_full_graph_inference_layouts_agree(layout, aggr):
    from pinsage_pyg.sampler import BipartiteCSR, importance_graph
    torch.manual_seed(0)
    user = torch.randint(40, (600, ))
    item = torch.randint(120, (600, ))
    csr = BipartiteCSR.from_edges(user, item, 40, 120)
    g = importance_graph(csr, num_neighbors=10, num_walks=30, seed=0,
                         backend='torch')
    x = torch.randn(120, 12)
    model = PinSage(12, 24, 16, num_layers=2, aggr=aggr).eval()
    ref = model.inference(x, g.edge_index, g.edge_weight, chunk_size=50,
                          layout='edge_index')
    out = model.inference(x, g.edge_index, g.edge_weight, chunk_size=50,
                          layout=layout)
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, atol=ATOL)
    # and the minibatch forward over the same graph agrees
    q, i = model(x, g.edge_index, g.edge_weight)
    assert torch.allclose(i, ref[1], atol=ATOL)


def test_unknown_layout_is_refused():
    edge_index, w, size = bipartite()
    with pytest.raises(ValueError, match="unknown adjacency layout 'dense'"):
        to_adj_t(edge_index, w, size, 'dense')
    model = PinSage(4, 8, 8, num_layers=1)
    with pytest.raises(ValueError, match="unknown adjacency layout"):
        model.inference(torch.randn(5, 4), edge_index[:, :0], None,
                        layout='dense')
