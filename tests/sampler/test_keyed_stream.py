r"""The walks' random stream is keyed by item: no chunk size, seed block
or batch composition changes a neighbourhood or an embedding."""
import numpy as np
import pytest
import torch

import pinsage_pyg.sampler.walks as walks
from pinsage_pyg.inference.layerwise import layerwise_embed
from pinsage_pyg.nn import PinSage
from pinsage_pyg.sampler import (BipartiteCSR, importance_graph,
                                 importance_neighbors, random_walk, walk_key)


def graph(num_items=90, cold=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(30, (700, ), generator=g)
    item = torch.randint(num_items - cold, (700, ), generator=g)
    return BipartiteCSR.from_edges(user, item, 30, num_items), \
        torch.randn(num_items, 6, generator=g)


def same_graph(a, b):
    assert torch.equal(a.edge_index, b.edge_index)
    assert a.edge_weight.numpy().tobytes() == b.edge_weight.numpy().tobytes()


@pytest.mark.parametrize('kw', [dict(), dict(restart_prob=0.3),
                                dict(window=2)])
def test_importance_graph_does_not_depend_on_chunks_or_blocks(monkeypatch,
                                                              kw):
    csr, _ = graph()
    ref = importance_graph(csr, num_neighbors=8, num_walks=30, seed=4,
                           backend='torch', **kw)
    for chunk in (1, 7, 64):
        same_graph(importance_graph(csr, num_neighbors=8, num_walks=30,
                                    seed=4, chunk_size=chunk,
                                    backend='torch', **kw), ref)
    # The walker blocks of the plain walk are invisible too:
    monkeypatch.setattr(walks, 'WALK_BLOCK', 45)
    same_graph(importance_graph(csr, num_neighbors=8, num_walks=30, seed=4,
                                backend='torch', **kw), ref)
    # Another seed, another graph:
    other = importance_graph(csr, num_neighbors=8, num_walks=30, seed=5,
                             backend='torch', **kw)
    assert not torch.equal(other.edge_weight, ref.edge_weight) or \
        not torch.equal(other.edge_index, ref.edge_index)


def test_a_neighbourhood_depends_only_on_the_key_and_the_item():
    csr, _ = graph()
    key = walk_key(9)
    full = importance_neighbors(csr, torch.arange(90), 8, 30, 2, key=key,
                                backend='torch')
    # The same items in another order, with others around them:
    seeds = torch.tensor([40, 3, 77, 3])
    row, item, w = importance_neighbors(csr, seeds, 8, 30, 2, key=key,
                                        backend='torch')
    for r, s in enumerate(seeds.tolist()):
        m, ref = row == r, full[0] == s
        assert torch.equal(item[m], full[1][ref])
        assert torch.equal(w[m], full[2][ref])
    # The generator only supplies the key:
    gen = torch.Generator().manual_seed(0)
    key2 = int(torch.randint(0, 2**63 - 1, (1, ),
                             generator=torch.Generator().manual_seed(0)))
    a = importance_neighbors(csr, seeds, 8, 30, 2, generator=gen,
                             backend='torch')
    b = importance_neighbors(csr, seeds, 8, 30, 2, key=key2,
                             backend='torch')
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_random_walk_is_keyed_by_start_and_walk_id():
    csr, _ = graph()
    start = torch.tensor([5, 5, 12, 30])
    walk_id = torch.tensor([0, 1, 0, 3])
    a = random_walk(csr, start, 4, key=1, walk_id=walk_id, backend='torch')
    b = random_walk(csr, start[[2, 0]], 4, key=1, walk_id=walk_id[[2, 0]],
                    backend='torch')
    assert torch.equal(a[[2, 0]], b)
    assert not torch.equal(a[0], a[1])  # same item, another walk id
    with pytest.raises(ValueError, match='walk_id'):
        random_walk(csr, start, 2, key=1, walk_id=walk_id[:2])


def test_walk_key_is_a_fixed_function_of_the_seed():
    # Recorded values: changing them changes every seeded graph.
    assert walk_key(0) == 0xE220A8397B1DCDAF
    assert walk_key(1) != walk_key(0) and 0 <= walk_key(2**40) < 2**64


def test_layerwise_embedding_bytes_do_not_depend_on_walk_chunks(tmp_path):
    torch.manual_seed(0)
    csr, x = graph()
    model = PinSage(6, 16, 8, num_layers=2).eval()

    def embed(walk_chunk, chunk):
        work = tmp_path / f'{walk_chunk}_{chunk}'
        res = layerwise_embed(model, x, csr, work, num_neighbors=6,
                              num_walks=20, seed=3,
                              walk_chunk_size=walk_chunk, chunk_size=chunk,
                              backend='torch', keep_intermediate=True)
        nbr = np.load(work / 'neighbors.npy')
        return nbr, np.load(work / 'weights.npy'), res.load()[1]

    ref = embed(65536, 16384)
    for walk_chunk in (8, 13, 90):
        got = embed(walk_chunk, 16384)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got, ref))
    # chunk_size splits the dense maths only: the same neighbourhoods, and
    # embeddings equal up to float rounding of the matrix kernels, which
    # may differ by block shape.
    for chunk in (1, 7):
        nbr, w, emb = embed(65536, chunk)
        assert nbr.tobytes() == ref[0].tobytes()
        assert w.tobytes() == ref[1].tobytes()
        assert np.abs(emb - ref[2]).max() < 1e-6
