import pytest
import torch
from torch_geometric.loader import NodeLoader

from pinsage_pyg.nn import PinSage, max_margin_loss, sampled_softmax_loss
from pinsage_pyg.sampler import BipartiteCSR, PinSageSampler, importance_graph


def graph(num_items=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(50, (600, ), generator=g)
    item = torch.randint(num_items, (600, ), generator=g)
    csr = BipartiteCSR.from_edges(user, item, 50, num_items)
    return importance_graph(csr, torch.randn(num_items, 10, generator=g),
                            num_neighbors=6, num_walks=40, seed=0)


@pytest.mark.parametrize('aggr', ['importance', 'mean', 'max'])
@pytest.mark.parametrize('asymmetric', [False, True])
def test_minibatch_forward_equals_full_graph(aggr, asymmetric):
    torch.manual_seed(0)
    g = graph()
    model = PinSage(10, 16, 8, num_layers=2, aggr=aggr,
                    asymmetric=asymmetric).eval()
    full_q, full_i = model(g.x, g.edge_index, g.edge_weight)
    lw_q, lw_i = model.inference(g.x, g.edge_index, g.edge_weight,
                                 chunk_size=7)
    assert torch.allclose(full_i, lw_i, atol=1e-5)
    assert torch.allclose(full_q, lw_q, atol=1e-5)
    loader = NodeLoader(g, node_sampler=PinSageSampler(g, 2),
                        input_nodes=torch.arange(80), batch_size=13)
    for b in loader:
        q, i = model(b.x, b.edge_index, b.edge_weight, b.num_sampled_nodes,
                     b.num_sampled_edges)
        assert i.size(0) == b.batch_size
        seeds = b.n_id[:b.batch_size]
        assert torch.allclose(i, full_i[seeds], atol=1e-5)
        assert torch.allclose(q, full_q[seeds], atol=1e-5)
    assert torch.allclose(full_i.norm(dim=-1), torch.ones(80), atol=1e-5)
    if not asymmetric:
        assert torch.equal(full_q, full_i)
    else:
        assert not torch.allclose(full_q, full_i)


def test_inductive_embedding_of_unseen_item():
    # An item with no edges at all is embedded from its features alone.
    torch.manual_seed(0)
    model = PinSage(10, 16, 8).eval()
    x = torch.randn(3, 10)
    empty = torch.empty(2, 0, dtype=torch.long)
    _, emb = model(x, empty)
    assert emb.shape == (3, 8) and torch.isfinite(emb).all()
    assert model.heads(torch.randn(2, 16), 'item').shape == (2, 8)
    with pytest.raises(ValueError, match='side'):
        model.heads(torch.randn(2, 16), 'user')


def test_model_argument_checks():
    with pytest.raises(ValueError, match='num_layers'):
        PinSage(4, 8, 8, num_layers=-1)
    with pytest.raises(ValueError, match='dropout'):
        PinSage(4, 8, 8, dropout=1.0)
    assert 'num_layers=2' in repr(PinSage(4, 8, 8))


def test_max_margin_loss_values():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # shared
    # scores: pos = [1, 1]; neg = [[1, .6], [0, .8]]
    # hinge with margin .1: [[.1, 0], [0, 0]] -> mean .025
    assert torch.isclose(max_margin_loss(q, pos, neg, 0.1),
                         torch.tensor(0.025))
    mask = torch.tensor([[False, True], [True, True]])
    assert torch.isclose(max_margin_loss(q, pos, neg, 0.1, mask),
                         torch.tensor(0.0))
    per_example = neg.unsqueeze(0).expand(2, 2, 2)
    assert torch.isclose(max_margin_loss(q, pos, per_example, 0.1),
                         torch.tensor(0.025))
    with pytest.raises(ValueError, match='margin'):
        max_margin_loss(q, pos, neg, -0.1)
    with pytest.raises(ValueError, match='negatives'):
        max_margin_loss(q, pos, neg[0])


def test_sampled_softmax_loss():
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    t = 0.5
    logits = torch.tensor([1.0, 0.0, 1.0]) / t
    expected = -torch.log_softmax(logits, 0)[0]
    assert torch.isclose(sampled_softmax_loss(q, pos, neg, t), expected)
    mask = torch.tensor([[True, False]])
    expected = -torch.log_softmax(logits[:2], 0)[0]
    assert torch.isclose(sampled_softmax_loss(q, pos, neg, t, mask),
                         expected)
    with pytest.raises(ValueError, match='temperature'):
        sampled_softmax_loss(q, pos, neg, 0.0)
