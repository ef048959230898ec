import pytest
import torch
from torch_geometric.loader import NodeLoader

from pinsage_pyg.nn import (PinSage, max_margin_loss, sampled_softmax_loss,
                            upgrade_model_kwargs)
from pinsage_pyg.sampler import BipartiteCSR, PinSageSampler, importance_graph


def graph(num_items=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(50, (600, ), generator=g)
    item = torch.randint(num_items, (600, ), generator=g)
    csr = BipartiteCSR.from_edges(user, item, 50, num_items)
    return importance_graph(csr, torch.randn(num_items, 10, generator=g),
                            num_neighbors=6, num_walks=40, seed=0)


@pytest.mark.parametrize('aggr', ['importance', 'mean', 'max'])
@pytest.mark.parametrize('query', [None, 'separate', 'residual'])
def test_minibatch_forward_equals_full_graph(aggr, query):
    torch.manual_seed(0)
    g = graph()
    asymmetric = query is not None
    model = PinSage(10, 16, 8, num_layers=2, aggr=aggr,
                    asymmetric=asymmetric,
                    query_mode=query or 'residual').eval()
    if query == 'residual':  # as after training: a non-zero correction
        torch.nn.init.normal_(model.query_delta.lin2.weight)
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


def test_residual_query_head_starts_symmetric_and_learns_direction():
    torch.manual_seed(0)
    g = graph()
    model = PinSage(10, 16, 8, asymmetric=True)
    assert model.query_mode == 'residual' and model.query_head is None
    q, i = model(g.x, g.edge_index, g.edge_weight)
    assert torch.equal(q, i)  # the symmetric model at initialisation
    assert torch.equal(model(g.x, g.edge_index, g.edge_weight,
                             side='query'), q)
    # A directional target (0 -> 1 but not 1 -> 0) moves the query side
    # away from the item side; the item head is trained through both.
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(20):
        q, i = model(g.x, g.edge_index, g.edge_weight)
        loss = -(q[0] * i[1]).sum() + (q[1] * i[0]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    q, i = model(g.x, g.edge_index, g.edge_weight)
    assert (q[0] * i[1]).sum() > (q[1] * i[0]).sum() + 0.5
    assert not torch.allclose(q, i)
    model.reset_parameters()
    q, i = model(g.x, g.edge_index, g.edge_weight)
    assert torch.equal(q, i)
    # A separate head is a second random head: unequal from the start.
    sep = PinSage(10, 16, 8, asymmetric=True, query_mode='separate')
    assert sep.query_delta is None
    q, i = sep(g.x, g.edge_index, g.edge_weight)
    assert not torch.allclose(q, i)


def test_query_modes_never_load_into_each_other():
    sep = PinSage(10, 16, 8, asymmetric=True, query_mode='separate')
    res = PinSage(10, 16, 8, asymmetric=True, query_mode='residual')
    with pytest.raises(RuntimeError, match='query_'):
        res.load_state_dict(sep.state_dict())
    with pytest.raises(RuntimeError, match='query_'):
        sep.load_state_dict(res.state_dict())
    # Saved arguments of a version before query_mode: a separate head.
    old = {'in_channels': 10, 'hidden_channels': 16, 'out_channels': 8,
           'asymmetric': True}
    assert upgrade_model_kwargs(old)['query_mode'] == 'separate'
    assert 'query_mode' not in old  # not modified in place
    PinSage(**upgrade_model_kwargs(old)).load_state_dict(sep.state_dict())
    assert 'query_mode' not in upgrade_model_kwargs({'asymmetric': False})
    assert upgrade_model_kwargs({'asymmetric': True, 'query_mode':
                                 'residual'})['query_mode'] == 'residual'
    with pytest.raises(ValueError, match='query_mode'):
        PinSage(10, 16, 8, asymmetric=True, query_mode='shared')


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
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match='neighbor_dropout'):
            PinSage(4, 8, 8, neighbor_dropout=bad)
    assert 'neighbor_dropout=0.5' in repr(PinSage(4, 8, 8,
                                                  neighbor_dropout=0.5))
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match='feature_dropout'):
            PinSage(4, 8, 8, feature_dropout=bad)
    assert 'feature_dropout=0.25' in repr(PinSage(4, 8, 8,
                                                  feature_dropout=0.25))


def _pooled(model):
    # Records each layer's pooled neighbourhoods (the input n_u of
    # update_nodes) in call order.
    seen = []
    for conv in model.convs:
        orig = conv.update_nodes

        def update(x_dst, pooled, orig=orig):
            seen.append(pooled.detach().clone())
            return orig(x_dst, pooled)
        conv.update_nodes = update
    return seen


@pytest.mark.parametrize('aggr', ['importance', 'mean', 'max'])
def test_neighbor_dropout_full_graph(aggr):
    torch.manual_seed(0)
    g = graph()
    model = PinSage(10, 16, 8, num_layers=2, aggr=aggr,
                    neighbor_dropout=0.3)
    ref = PinSage(10, 16, 8, num_layers=2, aggr=aggr)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    ref_q, ref_i = ref(g.x, g.edge_index, g.edge_weight)
    empty = torch.empty(2, 0, dtype=torch.long)
    cold_q, cold_i = ref(g.x, empty)

    # Evaluation: untouched (same as a model without neighbour dropout).
    model.eval()
    q, i = model(g.x, g.edge_index, g.edge_weight)
    assert torch.equal(i, ref_i) and torch.equal(q, ref_q)

    # Training: the dropped nodes pool to zero in every layer and are
    # embedded from their features alone; the others keep their pooling.
    model.train()
    drop = torch.zeros(80, dtype=torch.bool)
    drop[::3] = True
    model.dropped_nodes = lambda n, device=None: drop
    seen = _pooled(model)
    _, i = model(g.x, g.edge_index, g.edge_weight)
    assert len(seen) == 2
    has_edges = torch.zeros(80, dtype=torch.bool)
    has_edges[g.edge_index[1]] = True
    for pooled in seen:
        assert (pooled[drop] == 0).all()
        assert (pooled[~drop & has_edges].abs().sum(dim=-1) > 0).all()
    assert torch.allclose(i[drop], cold_i[drop], atol=1e-6)
    # A kept node's output changes only if a neighbour was dropped (that
    # neighbour's layer-1 state is then features-only); the others are
    # identical to the reference.
    src_dropped = torch.zeros(80, dtype=torch.bool)
    src_dropped.index_fill_(0, g.edge_index[1][drop[g.edge_index[0]]], True)
    same = ~drop & ~src_dropped
    assert same.any()
    assert torch.allclose(i[same], ref_i[same], atol=1e-6)

    # Gradients flow through the full-graph forward.
    i.sum().backward()
    assert model.encoder.weight.grad is not None

    # Sparse adjacency input drops the same neighbourhoods.
    from pinsage_pyg.nn.conv import to_adj_t
    adj = to_adj_t(g.edge_index, g.edge_weight, (80, 80), 'csr')
    _, i_sparse = model(g.x, adj)
    assert torch.allclose(i_sparse, i, atol=1e-5)


def test_neighbor_dropout_minibatch():
    torch.manual_seed(0)
    g = graph()
    model = PinSage(10, 16, 8, num_layers=2, neighbor_dropout=1.0)
    ref = PinSage(10, 16, 8, num_layers=2)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    _, cold_i = ref(g.x, torch.empty(2, 0, dtype=torch.long))
    _, full_i = ref(g.x, g.edge_index, g.edge_weight)
    loader = NodeLoader(g, node_sampler=PinSageSampler(g, 2),
                        input_nodes=torch.arange(80), batch_size=13)
    b = next(iter(loader))
    seeds = b.n_id[:b.batch_size]
    args = (b.x, b.edge_index, b.edge_weight, b.num_sampled_nodes,
            b.num_sampled_edges)
    # Every neighbourhood dropped: features-only embeddings of the seeds.
    model.train()
    seen = _pooled(model)
    _, i = model(*args)
    assert all((p == 0).all() for p in seen)
    assert torch.allclose(i, cold_i[seeds], atol=1e-6)
    # Some dropped: those seeds pool to zero, the hop layout stays valid.
    model.neighbor_dropout = 0.5
    drop = torch.zeros(b.x.size(0), dtype=torch.bool)
    drop[::2] = True
    model.dropped_nodes = lambda n, device=None: drop
    seen.clear()
    _, i = model(*args)
    assert i.size(0) == b.batch_size
    assert (seen[-1][drop[:seen[-1].size(0)]] == 0).all()
    assert torch.allclose(i[drop[:b.batch_size]],
                          cold_i[seeds][drop[:b.batch_size]], atol=1e-6)
    # Evaluation: untouched.
    model.eval()
    _, i = model(*args)
    assert torch.allclose(i, full_i[seeds], atol=1e-5)


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


def test_feature_dropout_zeroes_the_drawn_nodes_features_in_training():
    torch.manual_seed(0)
    n = 30
    x = torch.randn(n, 6) + 1.0
    edge_index = torch.randint(0, n, (2, 120))
    edge_weight = torch.rand(120)
    model = PinSage(6, 16, 8, num_layers=2, asymmetric=True,
                    feature_dropout=0.4)
    plain = PinSage(6, 16, 8, num_layers=2, asymmetric=True)
    plain.load_state_dict(model.state_dict())
    model.train()
    plain.train()
    model.dropout_generator = torch.Generator().manual_seed(3)
    got = model(x, edge_index, edge_weight)
    # The same draw by hand: the drawn nodes' rows of x are zero.
    blank = torch.rand(n, generator=torch.Generator().manual_seed(3)) < 0.4
    assert 0 < int(blank.sum()) < n
    want = plain(x.masked_fill(blank.view(-1, 1), 0.0), edge_index,
                 edge_weight)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(got[1], plain(x, edge_index, edge_weight)[1])
    # Evaluation and inference are unchanged.
    model.eval()
    plain.eval()
    for a, b in zip(model(x, edge_index, edge_weight),
                    plain(x, edge_index, edge_weight)):
        torch.testing.assert_close(a, b)
    # Without layers there is no neighbourhood to lean on: ignored.
    flat = PinSage(6, 16, 8, num_layers=0, feature_dropout=1.0).train()
    assert flat(x, edge_index, edge_weight)[1].abs().sum() > 0
    assert torch.allclose(flat(x, edge_index, edge_weight)[1],
                          flat.eval()(x, edge_index, edge_weight)[1])


def test_neighbor_dropout_generator_leaves_the_global_stream():
    # The training module seeds the masks per step (a mid-epoch resume
    # replays them); drawing them must not consume torch's global stream.
    model = PinSage(4, 8, 8, neighbor_dropout=0.5)
    model.dropout_generator = torch.Generator().manual_seed(7)
    state = torch.get_rng_state()
    mask = model.dropped_nodes(1000)
    assert torch.equal(torch.get_rng_state(), state)
    assert 0.4 < mask.float().mean() < 0.6
    model.dropout_generator = torch.Generator().manual_seed(7)
    assert torch.equal(model.dropped_nodes(1000), mask)
    model.dropout_generator = torch.Generator().manual_seed(8)
    assert not torch.equal(model.dropped_nodes(1000), mask)
