r"""T_train (PinSageSampler(train_num_neighbors=...)): training minibatches
draw T_train neighbours per node from its top-T by importance."""
import pytest
import torch
from torch_geometric.sampler import (EdgeSamplerInput, NegativeSampling,
                                     NodeSamplerInput)

from pinsage_pyg.config import ConfigError, SamplerConfig
from pinsage_pyg.sampler import (BipartiteCSR, PinSageLinkLoader,
                                 PinSageSampler, importance_graph)

T = 12


@pytest.fixture(scope='module')
def graph():
    g = torch.Generator().manual_seed(0)
    csr = BipartiteCSR.from_edges(torch.randint(60, (2500, ), generator=g),
                                  torch.randint(200, (2500, ), generator=g),
                                  60, 210)  # 10 items without users
    graph = importance_graph(csr, num_neighbors=T, num_walks=40, seed=1)
    graph.x = torch.randn(210, 3, generator=g)
    return graph


def batch_input(graph, n=30, start=0, seed=2):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(200, (n, ), generator=g)
    dst = graph.edge_index[0][torch.randint(graph.edge_index.size(1), (n, ),
                                            generator=g)]
    return EdgeSamplerInput(input_id=torch.arange(start, start + n), row=src,
                            col=dst)


def sample(sampler, inp, amount=20):
    return sampler.sample_from_edges(inp, NegativeSampling('triplet',
                                                           amount=amount))


def in_edges_per_target(out):
    return torch.bincount(out.col, minlength=out.node.numel())


def test_off_or_wide_is_the_full_neighbourhood(graph):
    inp = batch_input(graph)
    full = sample(PinSageSampler(graph, 2, seed=0), inp)
    assert not hasattr(full, 'edge_weight')
    wide = sample(PinSageSampler(graph, 2, seed=0, train_num_neighbors=T),
                  inp)
    for name in ('node', 'row', 'col', 'edge'):
        assert torch.equal(getattr(full, name), getattr(wide, name)), name
    assert full.num_sampled_nodes == wide.num_sampled_nodes
    # No node has more than T neighbours: every weight is the graph's own.
    assert torch.equal(wide.edge_weight, graph.edge_weight[wide.edge])


@pytest.mark.parametrize('k', [1, 3, 5])
def test_shape_and_support(graph, k):
    inp = batch_input(graph)
    full = sample(PinSageSampler(graph, 2, seed=0), inp)
    out = sample(PinSageSampler(graph, 2, seed=0, train_num_neighbors=k),
                 inp)
    # The same seeds and negatives; at most k distinct neighbours a node:
    assert full.num_sampled_nodes[0] == out.num_sampled_nodes[0]
    assert torch.equal(full.metadata[3], out.metadata[3])
    assert torch.equal(out.node[:out.num_sampled_nodes[0]],
                       full.node[:full.num_sampled_nodes[0]])
    assert int(in_edges_per_target(out).max()) <= k
    assert out.edge_weight.shape == out.edge.shape
    assert bool((out.edge_weight > 0).all())
    # Edges are the graph's own (top-T) edges and the local indices match:
    assert torch.equal(out.node[out.row], graph.edge_index[0][out.edge])
    assert torch.equal(out.node[out.col], graph.edge_index[1][out.edge])
    # Hop layout: S(2) U S(1) grows by at most k new nodes per target.
    s2, s1 = out.num_sampled_nodes[:2]
    assert s1 <= k * s2 and out.num_sampled_edges[0] <= k * s2
    # A target keeps its importance mass (draw counts scaled to it): the
    # pooled weighted mean is unchanged in scale.
    tgt = graph.edge_index[1][out.edge]
    hop0 = slice(0, out.num_sampled_edges[0])
    kept = torch.zeros(graph.num_nodes).index_add_(
        0, tgt[hop0], out.edge_weight[hop0])
    fe = full.edge[:full.num_sampled_edges[0]]
    mass = torch.zeros(graph.num_nodes).index_add_(
        0, graph.edge_index[1][fe], graph.edge_weight[fe])
    assert torch.allclose(kept, mass, atol=1e-5)


def test_no_leakage_after_subsampling(graph):
    inp = batch_input(graph, n=60)
    out = sample(PinSageSampler(graph, 2, seed=0, train_num_neighbors=2),
                 inp)
    s, t = graph.edge_index[0][out.edge], graph.edge_index[1][out.edge]
    key = torch.minimum(s, t) * graph.num_nodes + torch.maximum(s, t)
    pair = torch.minimum(inp.row, inp.col) * graph.num_nodes + \
        torch.maximum(inp.row, inp.col)
    assert not bool(torch.isin(key, pair).any())


def test_deterministic_given_seed(graph):
    inp = batch_input(graph)
    a = sample(PinSageSampler(graph, 2, seed=5, train_num_neighbors=3), inp)
    b = sample(PinSageSampler(graph, 2, seed=5, train_num_neighbors=3), inp)
    for name in ('node', 'row', 'col', 'edge', 'edge_weight'):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = sample(PinSageSampler(graph, 2, seed=6, train_num_neighbors=3), inp)
    assert not (a.edge.shape == c.edge.shape and torch.equal(a.edge, c.edge))
    # Another batch position draws other neighbours:
    d = sample(PinSageSampler(graph, 2, seed=5, train_num_neighbors=3),
               batch_input(graph, start=7))
    assert not (a.edge.shape == d.edge.shape and torch.equal(a.edge, d.edge))


def test_draws_proportional_to_importance(graph):
    # One node's sampled weights average to its importance weights (the
    # draws are multinomial by importance, weighted by their counts).
    sampler = PinSageSampler(graph, 1, train_num_neighbors=4)
    deg = torch.bincount(graph.edge_index[1], minlength=graph.num_nodes)
    node = int(torch.nonzero(deg == T)[0])
    lo = int(sampler.ptr[node])
    eid = torch.arange(lo, lo + T)
    w = graph.edge_weight[eid]
    assert float(w.max() / w.min()) > 1.5  # unequal weights to tell apart
    reps = 4000
    gen = torch.Generator().manual_seed(0)
    got_e, got_w = sampler._subsample(eid.repeat(reps),
                                      torch.arange(reps).repeat_interleave(T),
                                      reps, gen)
    assert bool(torch.isin(got_e, eid).all())  # only the node's top-T
    mean = torch.zeros(T).index_add_(0, got_e - lo, got_w) / reps
    # E[weight] = w; each draw count is Binomial(4, w / mass):
    mass = float(w.sum())
    std = (mass / 4) * (4 * (w / mass) * (1 - w / mass)).sqrt() / reps ** 0.5
    assert bool(((mean - w).abs() < 5 * std + 1e-6).all()), (mean, w)
    # Heavier neighbours are drawn more often:
    hits = torch.bincount(got_e - lo, minlength=T).float()
    order = torch.argsort(w)
    assert hits[order[-1]] > hits[order[0]]


def test_node_batches_keep_the_full_neighbourhood(graph):
    inp = NodeSamplerInput(input_id=torch.arange(20), node=torch.arange(20))
    full = PinSageSampler(graph, 2).sample_from_nodes(inp)
    tt = PinSageSampler(graph, 2, train_num_neighbors=1).sample_from_nodes(
        inp)
    assert torch.equal(full.edge, tt.edge)
    assert not hasattr(tt, 'edge_weight')


def test_loader_puts_sampled_weights_on_the_batch(graph):
    sampler = PinSageSampler(graph, 2, seed=0, train_num_neighbors=2)
    inp = batch_input(graph, n=40)
    pairs = torch.stack([inp.row, inp.col])
    loader = PinSageLinkLoader(graph, link_sampler=sampler,
                               edge_label_index=pairs,
                               neg_sampling=NegativeSampling('triplet', 10),
                               batch_size=40)
    batch = next(iter(loader))
    ref = sample(sampler, inp, amount=10)
    assert torch.equal(batch.edge_weight, ref.edge_weight)
    assert not torch.equal(batch.edge_weight, graph.edge_weight[ref.edge])
    assert batch.edge_weight.numel() == batch.edge_index.size(1)


def test_bad_values_fail_clearly(graph):
    with pytest.raises(ValueError, match='train_num_neighbors'):
        PinSageSampler(graph, 2, train_num_neighbors=0)
    with pytest.raises(ValueError, match='train_num_neighbors'):
        PinSageSampler(graph, 2, train_num_neighbors=2.5)
    no_w = graph.clone()
    del no_w.edge_weight
    with pytest.raises(ValueError, match='edge_weight'):
        PinSageSampler(no_w, 2, train_num_neighbors=3)
    with pytest.raises(ConfigError, match='sampler.train_num_neighbors'):
        SamplerConfig(train_num_neighbors=0)
    assert SamplerConfig(train_num_neighbors=10).train_num_neighbors == 10
