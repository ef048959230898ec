import numpy as np
import pytest
import torch

from pinsage_pyg.config import HardNegativeConfig
from pinsage_pyg.sampler import (BipartiteCSR, HardNegativeMiner, band_ranks,
                                 personalized_pagerank, ppr_topk)
from pinsage_pyg.sampler.hard_negatives import transition_matrices


def random_csr(num_users=30, num_items=40, num_edges=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    key = torch.unique(torch.randint(num_users * num_items, (num_edges, ),
                                     generator=g))
    return BipartiteCSR.from_edges(key // num_items, key % num_items,
                                   num_users, num_items)


def exact_ppr(csr, q, alpha):
    r"""Closed form: r = alpha e + (1 - alpha) (P^T r + lost(r) e)."""
    to_user, to_item = transition_matrices(csr)
    step = (to_item.to_dense() @ to_user.to_dense()).double().numpy()
    n = csr.num_items
    e = np.zeros(n)
    e[q] = 1.0
    # lost(r) = (1 - colsum(step)) . r  -> a rank-one term e (1 - 1^T S)^T
    lost = 1.0 - step.sum(axis=0)
    m = step + np.outer(e, lost)
    return np.linalg.solve(np.eye(n) - (1 - alpha) * m, alpha * e)


def test_power_iteration_matches_closed_form():
    csr = random_csr()
    # an item without users: its mass must go back to the query
    q = torch.tensor([0, 5, 17])
    ppr = personalized_pagerank(csr, q, restart_prob=0.3, num_iters=80)
    for row, qi in enumerate(q.tolist()):
        want = exact_ppr(csr, qi, 0.3)
        np.testing.assert_allclose(ppr[row].double().numpy(), want,
                                   atol=1e-5)
        assert abs(float(ppr[row].sum()) - 1.0) < 1e-4


def test_ppr_ranks_known_structure():
    # Two communities of items {0..4} and {5..9} engaged by disjoint user
    # groups, plus one user bridging item 4 and item 5. From item 0 every
    # item of its own community must rank above the other community, and
    # item 5 (one bridge away) above items 6..9.
    user, item = [], []
    for u in range(6):
        for i in range(5):
            user.append(u)
            item.append(i)
            user.append(u + 6)
            item.append(i + 5)
    user += [12, 12]
    item += [4, 5]
    csr = BipartiteCSR.from_edges(torch.tensor(user), torch.tensor(item), 13,
                                  10)
    for method in ('power', 'walk'):
        top, score = ppr_topk(csr, torch.tensor([0]), 9, method=method,
                              num_walks=4000,
                              generator=torch.Generator().manual_seed(0))
        ranked = top[0].tolist()
        assert 0 not in ranked  # never the query itself
        assert set(ranked[:4]) == {1, 2, 3, 4}, (method, ranked)
        assert ranked[4] == 5, (method, ranked)
        assert (score[0, :-1] >= score[0, 1:]).all()


def test_walk_estimate_agrees_with_power_iteration():
    csr = random_csr(num_users=60, num_items=80, num_edges=900, seed=1)
    q = torch.arange(0, 80, 10)
    exact, _ = ppr_topk(csr, q, 5, method='power')
    approx, _ = ppr_topk(csr, q, 10, method='walk', num_walks=3000,
                         generator=torch.Generator().manual_seed(0))
    # Each exact top-5 item is within the estimated top-10.
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in
            zip(exact, approx)]
    assert sum(hits) >= 0.9 * 5 * len(q), hits


def test_band_ranks_scale_with_the_catalogue():
    assert band_ranks(1682) == (33, 85)      # ML-100K
    assert band_ranks(3883) == (77, 195)     # ML-1M (all movies)
    assert band_ranks(10_000_000) == (2000, 5000)  # paper's band
    assert band_ranks(100, 0.5, 1.0) == (50, 99)   # never past the end
    with pytest.raises(ValueError, match='start < end'):
        band_ranks(1000, 0.05, 0.02)
    with pytest.raises(ValueError, match='empty'):
        band_ranks(2, 0.5, 1.0)  # rank 1 is the last one: [1, 1)
    with pytest.raises(ValueError, match='>= 2 items'):
        band_ranks(1)


def test_miner_draws_from_band_and_excludes_positives():
    csr = random_csr(num_users=50, num_items=120, num_edges=2500, seed=2)
    queries = torch.arange(120)
    cfg = HardNegativeConfig(band_start=0.1, band_end=0.4, method='power')
    miner = HardNegativeMiner(csr, queries, csr.user_ptr, csr.user_items, cfg)
    assert (miner.lo, miner.hi) == (12, 48)
    exact, _ = ppr_topk(csr, queries, miner.hi, method='power')
    g = torch.Generator().manual_seed(0)
    user = torch.randint(50, (400, ), generator=g)
    query = torch.randint(120, (400, ), generator=g)
    pos = torch.randint(120, (400, ), generator=g)
    out = miner.sample(query, pos, user, 5, generator=g)
    assert out.shape == (400, 5)
    for b in range(400):
        got = [v for v in out[b].tolist() if v >= 0]
        assert len(set(got)) == len(got)  # without replacement
        band = set(exact[query[b], miner.lo:miner.hi].tolist())
        engaged = set(csr.user_items[csr.user_ptr[user[b]]:
                                     csr.user_ptr[user[b] + 1]].tolist())
        assert set(got) <= band
        assert not set(got) & engaged
        assert int(pos[b]) not in got and int(query[b]) not in got
        # Unfilled slots only where the band has too few admissible items.
        admissible = band - engaged - {int(pos[b])}
        assert len(got) == min(5, len(admissible))
    with pytest.raises(ValueError, match='holds 36'):
        miner.sample(query, pos, user, 37)


def test_miner_refuses_unknown_query_items():
    csr = random_csr()
    miner = HardNegativeMiner(csr, torch.tensor([1, 2]), csr.user_ptr,
                              csr.user_items,
                              HardNegativeConfig(band_start=0.1,
                                                 band_end=0.5))
    with pytest.raises(ValueError, match='not given to the miner'):
        miner.sample(torch.tensor([3]), torch.tensor([4]), torch.tensor([0]),
                     1)
