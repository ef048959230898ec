r"""The K-hop expansion with item-sized masks/tables builds exactly the
batches of the previous unique / isin / searchsorted code (the oracle)."""
import pytest
import torch
from torch_geometric.sampler import EdgeSamplerInput, NegativeSampling

from pinsage_pyg.sampler import (BipartiteCSR, PinSageSampler,
                                 importance_graph)


def oracle_expand(self, seeds, forbidden=None):
    num_nodes = self.num_nodes
    nodes, edges, frontier, seen = [seeds], [], seeds, seeds
    for _ in range(self.num_layers):
        eid = self._in_edges(frontier)
        if forbidden is not None and eid.numel() > 0:
            s, tgt = self.src[eid], self.dst[eid]
            key = torch.minimum(s, tgt) * num_nodes + torch.maximum(s, tgt)
            eid = eid[~torch.isin(key, forbidden)]
        edges.append(eid)
        nbr = torch.unique(self.src[eid])
        new = nbr[~torch.isin(nbr, seen)]
        nodes.append(new)
        seen = torch.cat([seen, new])
        frontier = new
    node = torch.cat(nodes)
    eid = torch.cat(edges)
    sorted_node, perm = torch.sort(node)
    row = perm[torch.searchsorted(sorted_node, self.src[eid])]
    col = perm[torch.searchsorted(sorted_node, self.dst[eid])]
    return node, row, col, eid, [n.numel() for n in nodes], \
        [e.numel() for e in edges]


@pytest.mark.parametrize('K', [1, 2, 3])
def test_batches_unchanged(monkeypatch, K):
    g = torch.Generator().manual_seed(K)
    csr = BipartiteCSR.from_edges(torch.randint(50, (900, ), generator=g),
                                  torch.randint(150, (900, ), generator=g),
                                  50, 160)  # 10 items without users
    graph = importance_graph(csr, num_neighbors=6, num_walks=15, seed=1)
    sampler = PinSageSampler(graph, K, seed=0)
    src = torch.randint(160, (40, ), generator=g)
    dst = graph.edge_index[0][torch.randint(graph.edge_index.size(1),
                                            (40, ), generator=g)]
    inp = EdgeSamplerInput(input_id=torch.arange(40), row=src, col=dst)
    out = sampler.sample_from_edges(inp, NegativeSampling('triplet',
                                                          amount=30))
    calls = []
    monkeypatch.setattr(PinSageSampler, '_expand',
                        lambda self, s, f=None, *_a, **_k:
                        calls.append((s, f)) or oracle_out(self, s, f))

    def oracle_out(self, s, f):
        from torch_geometric.sampler import SamplerOutput
        node, row, col, eid, nn, ne = oracle_expand(self, s, f)
        return SamplerOutput(node=node, row=row, col=col, edge=eid,
                             num_sampled_nodes=nn, num_sampled_edges=ne)

    ref = sampler.sample_from_edges(inp, NegativeSampling('triplet',
                                                          amount=30))
    assert calls and calls[0][1] is not None  # pairs were excluded
    for name in ('node', 'row', 'col', 'edge'):
        assert torch.equal(getattr(out, name), getattr(ref, name)), name
    assert out.num_sampled_nodes == ref.num_sampled_nodes
    assert out.num_sampled_edges == ref.num_sampled_edges
