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


def chronological_graph():
    # user 0 engages items 5,3,1,0,4 in that order; user 1 engages 3,2;
    # user 2 engages only item 6 (a one-item history).
    user = torch.tensor([1, 0, 0, 2, 0, 1, 0, 0])
    item = torch.tensor([3, 5, 3, 6, 1, 2, 0, 4])
    return BipartiteCSR.from_edges(user, item, num_users=3, num_items=7)


def test_csr_keeps_chronological_order_and_edge_positions():
    csr = chronological_graph()
    assert csr.user_items.tolist() == [5, 3, 1, 0, 4, 3, 2, 6]
    # item_pos points every item-side edge at the same edge user-side:
    users = csr.item_users
    items = torch.repeat_interleave(torch.arange(7),
                                    csr.item_ptr[1:] - csr.item_ptr[:-1])
    assert torch.equal(csr.user_items[csr.item_pos], items)
    owner = torch.repeat_interleave(torch.arange(3),
                                    csr.user_ptr[1:] - csr.user_ptr[:-1])
    assert torch.equal(owner[csr.item_pos], users)


def exact_window_step(csr, item, window):
    r"""P(next item | item) of one windowed step, by enumeration."""
    p = torch.zeros(csr.num_items, dtype=torch.double)
    lo, hi = int(csr.item_ptr[item]), int(csr.item_ptr[item + 1])
    for e in range(lo, hi):
        u, pos = int(csr.item_users[e]), int(csr.item_pos[e])
        a = max(int(csr.user_ptr[u]), pos - window)
        b = min(int(csr.user_ptr[u + 1]) - 1, pos + window)
        others = [k for k in range(a, b + 1) if k != pos]
        for k in others:
            p[csr.user_items[k]] += 1 / (hi - lo) / len(others)
    return p


@pytest.mark.parametrize('window', [1, 2, 10])
def test_windowed_walk_matches_exact_step_distribution(window):
    csr = chronological_graph()
    gen = torch.Generator().manual_seed(0)
    for item in (3, 1, 5):
        start = torch.full((20000, ), item, dtype=torch.long)
        walk = random_walk(csr, start, walk_length=1, generator=gen,
                           window=window)
        freq = torch.bincount(walk[:, 0].clamp(min=0), minlength=7).double()
        exact = exact_window_step(csr, item, window)
        assert (walk >= 0).all()
        tv = 0.5 * (freq / 20000 - exact).abs().sum()
        assert tv < 0.02, (item, window, tv)
    # window=1 from item 1 (positions 1 <- 2 -> 3 of user 0): only 3 or 0.
    walk = random_walk(csr, torch.full((1000, ), 1), 1, generator=gen,
                       window=1)
    assert set(walk[:, 0].tolist()) == {3, 0}
    # Without a window the same step reaches all of user 0's items:
    walk = random_walk(csr, torch.full((1000, ), 1), 1, generator=gen)
    assert set(walk[:, 0].tolist()) == {5, 3, 1, 0, 4}


def test_windowed_walk_dead_ends_and_errors():
    csr = chronological_graph()
    # Item 6's only user has no other item; item 4... has neighbours.
    walk = random_walk(csr, torch.tensor([6, 6, 4]), 3, window=2)
    assert (walk[:2] == -1).all() and (walk[2] >= 0).all()
    with pytest.raises(ValueError, match='window'):
        random_walk(csr, torch.tensor([0]), 1, window=0)
    with pytest.raises(ValueError, match='time-local'):
        random_walk(csr, torch.tensor([0]), 1, backend='torch_cluster',
                    window=1)
    no_pos = BipartiteCSR(csr.item_ptr, csr.item_users, csr.user_ptr,
                          csr.user_items)
    with pytest.raises(ValueError, match='item_pos'):
        random_walk(no_pos, torch.tensor([0]), 1, window=1)


def test_windowed_importance_graph_pools_only_nearby_items():
    torch.manual_seed(0)
    num_users, num_items, n = 30, 40, 400
    user = torch.randint(0, num_users, (n, ))
    item = torch.randint(0, num_items, (n, ))
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    g = importance_graph(csr, num_neighbors=10, num_walks=50, walk_length=1,
                         seed=0, window=2)
    # Item pairs at most 2 positions apart in some user's history:
    near = torch.zeros(num_items, num_items, dtype=torch.bool)
    for u in range(num_users):
        seq = csr.user_items[csr.user_ptr[u]:csr.user_ptr[u + 1]].tolist()
        for a in range(len(seq)):
            for b in range(max(0, a - 2), min(len(seq), a + 3)):
                near[seq[a], seq[b]] = True
    src, dst = g.edge_index
    assert src.numel() > 0 and near[dst, src].all()
    full = importance_graph(csr, num_neighbors=10, num_walks=50,
                            walk_length=1, seed=0)
    assert not near[full.edge_index[1], full.edge_index[0]].all()
