import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import LinkLoader, NodeLoader
from torch_geometric.sampler import NegativeSampling

from pinsage_pyg.sampler import BipartiteCSR, PinSageSampler, importance_graph


def toy_graph(num_items=60, num_users=40, num_edges=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(num_users, (num_edges, ), generator=g)
    item = torch.randint(num_items, (num_edges, ), generator=g)
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    x = torch.randn(num_items, 8, generator=g)
    return importance_graph(csr, x, num_neighbors=5, num_walks=30, seed=1)


def reference_khop(graph, seeds, num_layers):
    # Plain-Python Algorithm 2 on the importance graph.
    nbrs = {}
    for s, d in graph.edge_index.t().tolist():
        nbrs.setdefault(d, []).append(s)
    nodes, frontier, layers = list(seeds), list(seeds), []
    for _ in range(num_layers):
        edges = [(s, d) for d in frontier for s in nbrs.get(d, [])]
        layers.append(edges)
        new = sorted({s for s, _ in edges} - set(nodes))
        nodes += new
        frontier = new
    return nodes, layers


def test_node_sampling_matches_reference():
    graph = toy_graph()
    sampler = PinSageSampler(graph, num_layers=2)
    seeds = [5, 17, 3]
    loader = NodeLoader(graph, node_sampler=sampler,
                        input_nodes=torch.tensor(seeds), batch_size=3)
    batch = next(iter(loader))
    nodes, layers = reference_khop(graph, seeds, 2)
    assert batch.n_id[:3].tolist() == seeds
    assert sorted(batch.n_id.tolist()) == sorted(nodes)
    assert batch.num_sampled_nodes[0] == 3
    assert batch.num_sampled_edges == [len(e) for e in layers]
    # Edges (re-indexed) map back to the original importance edges:
    got = {tuple(e) for e in batch.n_id[batch.edge_index].t().tolist()}
    assert got == {e for layer in layers for e in layer}
    # edge_weight travels with the edges (gathered by PyG via e_id):
    assert torch.equal(batch.edge_weight, graph.edge_weight[batch.e_id])
    assert torch.equal(batch.x, graph.x[batch.n_id])
    # Hop order: hop-1 edges point into seeds only.
    n1 = batch.num_sampled_edges[0]
    assert (batch.edge_index[1, :n1] < 3).all()


def test_link_sampling_shared_negatives_and_no_leakage():
    graph = toy_graph()
    # Take pairs that ARE neighbours in the importance graph, to check that
    # the pair's edges are removed from the sampled subgraph.
    src, dst = graph.edge_index[:, ::7]
    pairs = torch.stack([dst, src])  # (query, positive)
    sampler = PinSageSampler(graph, num_layers=2)
    loader = LinkLoader(graph, link_sampler=sampler, edge_label_index=pairs,
                        neg_sampling=NegativeSampling('triplet', 25),
                        batch_size=16, shuffle=False)
    for batch in loader:
        q = batch.n_id[batch.src_index]
        p = batch.n_id[batch.dst_pos_index]
        assert batch.dst_neg_index.dim() == 1
        assert batch.dst_neg_index.numel() == 25  # shared by the batch
        negs = batch.n_id[batch.dst_neg_index]
        assert negs.unique().numel() == 25  # drawn without replacement
        ei = batch.n_id[batch.edge_index]
        forbidden = set(zip(q.tolist(), p.tolist()))
        forbidden |= {(b, a) for a, b in forbidden}
        assert not any(tuple(e) in forbidden for e in ei.t().tolist())
        assert batch.edge_weight.numel() == batch.edge_index.size(1)
    # Without exclusion those edges do appear:
    sampler = PinSageSampler(graph, num_layers=2, exclude_pairs=False)
    loader = LinkLoader(graph, link_sampler=sampler, edge_label_index=pairs,
                        neg_sampling=NegativeSampling('triplet', 5),
                        batch_size=16)
    batch = next(iter(loader))
    q = batch.n_id[batch.src_index]
    p = batch.n_id[batch.dst_pos_index]
    ei = {tuple(e) for e in batch.n_id[batch.edge_index].t().tolist()}
    assert any((a, b) in ei or (b, a) in ei
               for a, b in zip(q.tolist(), p.tolist()))


def test_link_sampling_per_example_negatives_and_caps():
    graph = toy_graph(num_items=30)
    pairs = torch.tensor([[0, 1, 2], [3, 4, 5]])
    sampler = PinSageSampler(graph, 1, shared_negatives=False)
    batch = next(iter(LinkLoader(graph, link_sampler=sampler,
                                 edge_label_index=pairs,
                                 neg_sampling=NegativeSampling('triplet', 4),
                                 batch_size=3)))
    assert batch.dst_neg_index.shape == (3, 4)
    # Shared negatives are capped by the number of items:
    sampler = PinSageSampler(graph, 1)
    batch = next(iter(LinkLoader(graph, link_sampler=sampler,
                                 edge_label_index=pairs,
                                 neg_sampling=NegativeSampling('triplet',
                                                               500),
                                 batch_size=3)))
    assert batch.dst_neg_index.numel() == 30
    with pytest.raises(ValueError, match='triplet'):
        next(iter(LinkLoader(graph, link_sampler=sampler,
                             edge_label_index=pairs,
                             neg_sampling=NegativeSampling('binary', 1),
                             batch_size=3)))


def test_sampler_in_worker_processes():
    graph = toy_graph()
    sampler = PinSageSampler(graph, num_layers=2)
    loader = NodeLoader(graph, node_sampler=sampler,
                        input_nodes=torch.arange(60), batch_size=20,
                        num_workers=2)
    seen = torch.cat([b.n_id[:b.batch_size] for b in loader])
    assert torch.equal(seen.sort()[0], torch.arange(60))


def test_rejects_unsorted_graph():
    g = Data(edge_index=torch.tensor([[0, 1], [2, 1]]), num_nodes=3)
    with pytest.raises(ValueError, match='sorted by target'):
        PinSageSampler(g, 1)
