import pytest
import torch
import torch.nn.functional as F
from torch_geometric.testing import assert_module
from torch_geometric.utils import to_torch_coo_tensor

from pinsage_pyg.nn import PinSageConv


def reference(conv, x_src, x_dst, edge_index, edge_weight, pooling):
    # Algorithm 1 written out per node.
    h = F.relu(conv.lin_q(x_src))
    out = []
    for u in range(x_dst.size(0)):
        m = edge_index[1] == u
        nb = h[edge_index[0, m]]
        if nb.numel() == 0:
            n = torch.zeros(h.size(1))
        elif pooling == 'importance':
            w = edge_weight[m] if edge_weight is not None else torch.ones(
                int(m.sum()))
            n = (w.view(-1, 1) * nb).sum(0) / w.sum()
        elif pooling == 'mean':
            n = nb.mean(0)
        else:
            n = nb.max(0).values
        z = F.relu(conv.lin_self(x_dst[u]) + conv.lin_neigh(n))
        out.append(z / z.norm().clamp(min=1e-12))
    return torch.stack(out)


@pytest.mark.parametrize('aggr', ['importance', 'mean', 'max'])
def test_pinsage_conv_matches_algorithm_1(aggr):
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    edge_index = torch.tensor([[1, 2, 3, 0, 4, 5, 1], [0, 0, 0, 1, 2, 2, 3]])
    w = torch.rand(edge_index.size(1))
    conv = PinSageConv(8, 16, hidden_channels=12, aggr=aggr)
    assert str(conv) == f'PinSageConv(8, 16, aggr={aggr})'
    out = conv(x, edge_index, w)
    assert out.shape == (6, 16)
    expected = reference(conv, x, x, edge_index, w, aggr)
    assert torch.allclose(out, expected, atol=1e-5)
    # Output rows are unit norm (or zero when ReLU kills everything):
    norms = out.norm(dim=-1)
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))


def test_importance_weights_matter_and_are_renormalised():
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    edge_index = torch.tensor([[1, 2, 3], [0, 0, 0]])
    conv = PinSageConv(8, 8)
    w1 = torch.tensor([0.7, 0.2, 0.1])
    a = conv(x, edge_index, w1)[0]
    b = conv(x, edge_index, w1 * 5.0)[0]  # scale-invariant per target
    c = conv(x, edge_index, torch.tensor([0.1, 0.2, 0.7]))[0]
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, c, atol=1e-3)
    # Without weights, importance pooling is the plain mean:
    mean = PinSageConv(8, 8, aggr='mean')
    mean.load_state_dict(conv.state_dict())
    assert torch.allclose(conv(x, edge_index), mean(x, edge_index),
                          atol=1e-6)


def test_bipartite_lazy_and_sparse_layouts():
    torch.manual_seed(0)
    x_src, x_dst = torch.randn(5, 6), torch.randn(3, 4)
    edge_index = torch.tensor([[0, 1, 2, 3, 4, 0], [0, 0, 1, 1, 2, 2]])
    w = torch.rand(6)
    conv = PinSageConv((6, 4), 8)
    assert str(conv) == 'PinSageConv((6, 4), 8, aggr=importance)'
    out = conv((x_src, x_dst), edge_index, w)
    assert out.shape == (3, 8)
    assert torch.allclose(
        out, reference(conv, x_src, x_dst, edge_index, w, 'importance'),
        atol=1e-5)
    # torch.sparse adjacency (adj_t layout: rows = targets) gives the same:
    adj_t = to_torch_coo_tensor(edge_index.flip(0), w, size=(3, 5))
    assert torch.allclose(conv((x_src, x_dst), adj_t), out, atol=1e-5)
    # Lazy input size:
    lazy = PinSageConv(-1, 8)
    assert lazy(x_src, torch.tensor([[0, 1], [1, 0]])).shape == (5, 8)


def test_assert_module_and_isolated_nodes():
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    edge_index = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    conv = PinSageConv(8, 16)
    assert_module(conv, x, edge_index, expected_size=(4, 16),
                  test_edge_permutation=True)
    # A node without neighbours still gets an embedding (from itself):
    out = conv(x, torch.tensor([[0], [1]]))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match='aggr'):
        PinSageConv(8, 8, aggr='sum')


def test_gradients_flow():
    x = torch.randn(5, 4, requires_grad=True)
    edge_index = torch.tensor([[1, 2, 3, 4], [0, 0, 1, 1]])
    conv = PinSageConv(4, 8)
    conv(x, edge_index, torch.rand(4)).sum().backward()
    assert x.grad is not None and x.grad[1:].abs().sum() > 0
    assert conv.lin_q.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=(
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason='no CUDA GPU visible')))])
@pytest.mark.parametrize('aggr', ['importance', 'mean'])
def test_bf16_autocast_forward_and_backward(device, aggr):
    # On CUDA the fused CSR pooling's bf16 backward is not supported by
    # cuSPARSE: the layer pools in float32 under autocast.
    torch.manual_seed(0)
    x = torch.randn(40, 8, device=device, requires_grad=True)
    edge_index = torch.randint(40, (2, 200), device=device)
    w = torch.rand(200, device=device)
    conv = PinSageConv(8, 16, aggr=aggr).to(device)
    ref = conv(x, edge_index, w)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = conv(x, edge_index, w)
    out.float().sum().backward()
    assert torch.allclose(out.float(), ref, atol=0.05)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(conv.lin_q.weight.grad).all()
