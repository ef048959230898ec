import pytest
import torch

from pinsage_pyg.sampler import (BipartiteCSR, importance_graph,
                                 importance_neighbors, random_walk)


def star_graph():
    # items 0..3; user 0 engages items 0,1,2 ; user 1 engages items 2,3.
    # item 4 is isolated (no users).
    user = torch.tensor([0, 0, 0, 1, 1])
    item = torch.tensor([0, 1, 2, 2, 3])
    return BipartiteCSR.from_edges(user, item, num_users=2, num_items=5)


def test_csr_layout():
    csr = star_graph()
    assert csr.item_ptr.tolist() == [0, 1, 2, 4, 5, 5]
    assert csr.item_users.tolist() == [0, 0, 0, 1, 1]
    assert csr.user_ptr.tolist() == [0, 3, 5]
    assert csr.user_items.tolist() == [0, 1, 2, 2, 3]
    with pytest.raises(ValueError, match='item index'):
        BipartiteCSR.from_edges(torch.tensor([0]), torch.tensor([9]), 1, 5)


def test_walk_follows_edges_and_transition_probabilities():
    csr = star_graph()
    gen = torch.Generator().manual_seed(0)
    start = torch.zeros(20000, dtype=torch.long)
    walk = random_walk(csr, start, walk_length=1, generator=gen)
    # From item 0 the only user is 0, whose items are 0,1,2 uniformly.
    freq = torch.bincount(walk[:, 0], minlength=5).float() / 20000
    assert torch.allclose(freq[:3], torch.full((3, ), 1 / 3), atol=0.02)
    assert freq[3:].sum() == 0
    # Two steps from item 3: 3 -> u1 -> {2,3}; from 2 -> {u0,u1} -> ...
    start = torch.full((40000, ), 3, dtype=torch.long)
    walk = random_walk(csr, start, walk_length=2, generator=gen)
    # P(step2 = 0) = P(s1=2) * P(u0|2) * 1/3 = 1/2 * 1/2 * 1/3
    p0 = (walk[:, 1] == 0).float().mean()
    assert abs(p0 - 1 / 12) < 0.01
    # Every consecutive pair of items shares a user:
    adj = torch.zeros(5, 5, dtype=torch.bool)
    adj[:3, :3] = True
    adj[2:4, 2:4] = True
    assert adj[walk[:, 0], walk[:, 1]].all()


def test_walk_dead_end_and_restart():
    csr = star_graph()
    walk = random_walk(csr, torch.tensor([4, 4]), walk_length=3)
    assert (walk == -1).all()  # isolated item: no step possible
    gen = torch.Generator().manual_seed(1)
    start = torch.zeros(20000, dtype=torch.long)
    walk = random_walk(csr, start, 2, restart_prob=0.99, generator=gen)
    # With restart ~1, step 2 starts again from item 0 -> never item 3.
    assert (walk[:, 1] == 3).float().mean() < 0.002
    with pytest.raises(ValueError, match='walk_length'):
        random_walk(csr, start, 0)
    with pytest.raises(ValueError, match='restart_prob'):
        random_walk(csr, start, 1, restart_prob=1.0)


def test_importance_neighbors_topk_and_normalisation():
    csr = star_graph()
    gen = torch.Generator().manual_seed(0)
    seeds = torch.tensor([0, 3, 4])
    row, nbr, w = importance_neighbors(csr, seeds, num_neighbors=2,
                                       num_walks=2000, walk_length=2,
                                       generator=gen)
    # The seed itself is never its own neighbour; isolated seed has none:
    assert not (nbr == seeds[row]).any()
    assert (row != 2).all()
    for r in (0, 1):
        m = row == r
        assert m.sum() == 2  # top-T with T=2
        assert torch.isclose(w[m].sum(), torch.tensor(1.0))
        assert (w[m][:-1] >= w[m][1:]).all()  # sorted by importance
    # From item 3 the most visited other item is 2 (the only bridge):
    assert nbr[row == 1][0] == 2
    # From item 0, items 1 and 2 dominate, item 3 is rarer:
    assert set(nbr[row == 0].tolist()) == {1, 2}


def test_importance_neighbors_match_exact_visit_probabilities():
    # Compare visit frequencies with the exact 2-step distribution.
    torch.manual_seed(0)
    num_users, num_items = 30, 40
    user = torch.randint(num_users, (300, ))
    item = torch.randint(num_items, (300, ))
    key = torch.unique(user * num_items + item)
    user, item = key // num_items, key % num_items
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    A = torch.zeros(num_items, num_users)
    A[item, user] = 1.0
    P_iu = A / A.sum(1, keepdim=True).clamp(min=1)
    P_ui = A.t() / A.t().sum(1, keepdim=True).clamp(min=1)
    P = P_iu @ P_ui
    seed = int(torch.argmax(A.sum(1)))
    expected = P[seed] + (P @ P)[seed]  # expected visits per walk (L=2)
    expected[seed] = 0
    expected = expected / expected.sum()
    gen = torch.Generator().manual_seed(3)
    row, nbr, w = importance_neighbors(csr, torch.tensor([seed]),
                                       num_neighbors=num_items,
                                       num_walks=40000, walk_length=2,
                                       generator=gen)
    est = torch.zeros(num_items)
    est[nbr] = w
    assert (est - expected).abs().max() < 0.01


def test_importance_graph_sorted_by_target_and_seeded():
    csr = star_graph()
    x = torch.randn(5, 3)
    g1 = importance_graph(csr, x, num_neighbors=2, num_walks=50, seed=7)
    g2 = importance_graph(csr, x, num_neighbors=2, num_walks=50, seed=7)
    assert torch.equal(g1.edge_index, g2.edge_index)
    assert torch.allclose(g1.edge_weight, g2.edge_weight)
    g3 = importance_graph(csr, x, num_neighbors=2, num_walks=50, seed=8)
    assert not torch.equal(g1.edge_weight, g3.edge_weight)
    # Chunked computation covers every item exactly like one chunk:
    g4 = importance_graph(csr, x, num_neighbors=2, num_walks=50, seed=7,
                          chunk_size=2)
    assert torch.equal(g4.edge_index[1].unique(), g1.edge_index[1].unique())
    dst = g1.edge_index[1]
    assert (dst[1:] >= dst[:-1]).all()
    assert g1.num_nodes == 5 and torch.equal(g1.x, x)
    assert (dst != 4).all()  # isolated item has no neighbourhood
    with pytest.raises(ValueError, match='rows'):
        importance_graph(csr, torch.randn(3, 3))
    with pytest.raises(ValueError, match='num_neighbors'):
        importance_graph(csr, num_neighbors=0)
