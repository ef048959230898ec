import math

import pytest
import torch

from pinsage_pyg.evaluation.baselines import (
    cooccurrence_scorer,
    popularity_scorer,
    random_scorer,
    transition_scorer,
)
from pinsage_pyg.evaluation.protocols import (
    LeaveLastOutSplit,
    PairSplit,
    evaluate_leave_last_out,
    evaluate_pairs,
    evaluate_scorers,
    jitter_scores,
    top_k_items,
    user_history,
)


class ConstantScorer:
    r"""Every candidate ties: the worst case for index-order bias."""
    name = 'constant'

    def __init__(self, num_items):
        self.num_items = num_items

    def __call__(self, query):
        return torch.zeros(query.numel(), self.num_items)


class OracleScorer:
    r"""Knows the target of every query item: target(q) = (7q + 3) % I."""
    name = 'oracle'

    def __init__(self, num_items):
        self.num_items = num_items

    def target(self, query):
        return (7 * query + 3) % self.num_items

    def __call__(self, query):
        out = torch.rand(query.numel(), self.num_items)
        out[torch.arange(query.numel()), self.target(query)] = 2.0
        return out


def no_exclusions(n):
    ptr = torch.zeros(n + 1, dtype=torch.long)
    return ptr, torch.zeros(0, dtype=torch.long)


def random_exclusions(n, num_items, gen, max_size=8):
    count = torch.randint(0, max_size, (n, ), generator=gen)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), count.cumsum(0)])
    item = torch.randint(0, num_items, (int(ptr[-1]), ), generator=gen)
    return ptr, item


def test_jitter_only_breaks_exact_ties():
    gen = torch.Generator().manual_seed(0)
    # Neighbouring float32 values one ulp apart keep their order:
    base = torch.tensor(1e6, dtype=torch.float32)
    up = torch.nextafter(base, torch.tensor(math.inf))
    scores = torch.stack([base, up, base, torch.tensor(-math.inf)]).view(1, 4)
    out = jitter_scores(scores, gen)
    assert out.dtype == torch.float64
    assert out[0, 1] > out[0, 0] and out[0, 1] > out[0, 2]
    assert out[0, 0] != out[0, 2]  # The exact tie is broken.
    assert out[0, 3] == -math.inf
    # Reproducible per seed:
    again = jitter_scores(scores, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match='NaN'):
        jitter_scores(torch.tensor([[0., math.nan]]), gen)


def test_user_history():
    user = torch.tensor([0, 0, 1, 3, 3, 3])
    item = torch.tensor([4, 2, 0, 1, 5, 3])
    ptr, last = user_history(user, item, num_users=5)
    assert ptr.tolist() == [0, 2, 3, 3, 6, 6]
    assert last.tolist() == [2, 0, -1, 3, -1]
    with pytest.raises(ValueError, match='sorted'):
        user_history(user.flip(0), item, 5)


def test_ties_do_not_favour_low_indices():
    num_items, n = 100, 2000
    scorer = ConstantScorer(num_items)
    query = torch.arange(n) % num_items
    # Targets at both ends of the index range:
    target = torch.where(torch.arange(n) % 2 == 0, 0, num_items - 1)
    target = torch.where(target == query, 50, target)
    hr = evaluate_leave_last_out(scorer, query, target, *no_exclusions(n))
    sd = math.sqrt(0.1 * 0.9 / n)
    assert abs(hr - 10 / num_items) < 4 * sd
    for half in (0, 1):  # Neither end of the index range is favoured.
        mask = torch.arange(n) % 2 == half
        hr = evaluate_leave_last_out(scorer, query[mask], target[mask],
                                     *no_exclusions(int(mask.sum())))
        assert abs(hr - 0.1) < 4 * math.sqrt(2) * sd

    out = evaluate_pairs(scorer, query, target, k=10)
    assert abs(out['hit_rate@10'] - 10 / (num_items - 1)) < 4 * sd
    # Uniform rank on 1..99: E[1/rank] = H_99 / 99.
    harmonic = sum(1 / r for r in range(1, num_items)) / (num_items - 1)
    assert out['scaled_mrr'] == pytest.approx(harmonic, abs=0.02)
    assert out['mrr_scale'] == 1


def test_random_and_oracle_scorers():
    num_items, n = 200, 2000
    gen = torch.Generator().manual_seed(0)
    query = torch.randint(0, num_items, (n, ), generator=gen)
    oracle = OracleScorer(num_items)
    target = oracle.target(query)
    ptr, excluded = random_exclusions(n, num_items, gen)
    # Keep targets out of the exclude sets for this test:
    row = torch.arange(n).repeat_interleave(ptr.diff())
    excluded = torch.where(excluded == target[row], (target[row] + 1) %
                           num_items, excluded)

    assert evaluate_leave_last_out(oracle, query, target, ptr, excluded) == 1.0
    out = evaluate_pairs(oracle, query, target, k=10)
    assert out['hit_rate@10'] == 1.0 and out['scaled_mrr'] == 1.0

    hr = evaluate_leave_last_out(random_scorer(num_items), query, target,
                                 ptr, excluded)
    assert abs(hr - 10 / num_items) < 4 * math.sqrt(0.05 * 0.95 / n)
    out = evaluate_pairs(random_scorer(num_items), query, target, k=10)
    assert abs(out['hit_rate@10'] - 10 / (num_items - 1)) < 0.02


def test_exclusion():
    num_items, n, k = 30, 300, 10
    gen = torch.Generator().manual_seed(1)
    query = torch.randint(0, num_items, (n, ), generator=gen)
    ptr, excluded = random_exclusions(n, num_items, gen, max_size=15)
    oracle = OracleScorer(num_items)

    top = top_k_items(oracle, query, ptr, excluded, k=k)
    assert top.shape == (n, k)
    row = torch.arange(n).repeat_interleave(ptr.diff())
    is_excluded = torch.zeros(n, num_items, dtype=torch.bool)
    is_excluded[row, excluded] = True
    assert not is_excluded.gather(1, top).any()
    # Oracle targets rank first unless excluded:
    target = oracle.target(query)
    target_excluded = is_excluded[torch.arange(n), target]
    assert target_excluded.any() and not target_excluded.all()
    assert torch.equal(top[:, 0] == target, ~target_excluded)

    # An excluded target is never a hit, even for the oracle:
    hr = evaluate_leave_last_out(oracle, query, target, ptr, excluded, k=k)
    assert hr == pytest.approx(1 - target_excluded.double().mean().item())


def test_fewer_candidates_than_k():
    # 5 items, user excludes 3 of them: 2 candidates for k = 10.
    scorer = ConstantScorer(5)
    query = torch.tensor([0, 0])
    ptr, excluded = torch.tensor([0, 3, 6]), torch.tensor([0, 1, 2, 0, 1, 4])
    top = top_k_items(scorer, query, ptr, excluded, k=10)
    assert sorted(top[0, :2].tolist()) == [3, 4]
    assert sorted(top[1, :2].tolist()) == [2, 3]
    assert (top[:, 2:] == -1).all()
    # Target 4 is a candidate in row 0 (hit), excluded in row 1 (miss):
    hr = evaluate_leave_last_out(scorer, query, torch.tensor([4, 4]), ptr,
                                 excluded, k=10)
    assert hr == 0.5


def test_chunking_invariance():
    gen = torch.Generator().manual_seed(2)
    num_users, num_items, n = 40, 25, 120
    user = torch.randint(0, num_users, (300, ), generator=gen).sort()[0]
    item = torch.randint(0, num_items, (300, ), generator=gen)
    query = torch.randint(0, num_items, (n, ), generator=gen)
    target = (query + torch.randint(1, num_items, (n, ), generator=gen)) % \
        num_items
    ptr, excluded = random_exclusions(n, num_items, gen)

    makers = {
        'random': lambda: random_scorer(num_items, seed=5),
        'popularity': lambda: popularity_scorer(item, num_items),
        'cooccurrence': lambda: cooccurrence_scorer(user, item, num_users,
                                                    num_items),
        'transition': lambda: transition_scorer(user, item, num_items, 3, .8,
                                                .5),
    }
    for name, make in makers.items():
        small = top_k_items(make(), query, ptr, excluded, k=5, chunk_size=1)
        large = top_k_items(make(), query, ptr, excluded, k=5,
                            chunk_size=1000)
        assert torch.equal(small, large), name
        hr = [
            evaluate_leave_last_out(make(), query, target, ptr, excluded,
                                    chunk_size=c) for c in (1, 7, 1000)
        ]
        assert hr[0] == hr[1] == hr[2], name
        pairs = [
            evaluate_pairs(make(), query, target, chunk_size=c)
            for c in (1, 7, 1000)
        ]
        # Same ranks; the MRR sum may differ in the last bit by chunk order.
        for other in pairs[1:]:
            assert other == pytest.approx(pairs[0], rel=1e-12, abs=0), name
    # The seed matters (ties are broken differently):
    constant = ConstantScorer(num_items)
    assert not torch.equal(top_k_items(constant, query, k=5, seed=0),
                           top_k_items(constant, query, k=5, seed=1))


def test_input_errors():
    scorer = ConstantScorer(5)
    ptr, excluded = no_exclusions(2)
    with pytest.raises(ValueError, match='without a train item'):
        evaluate_leave_last_out(scorer, torch.tensor([0, -1]),
                                torch.tensor([1, 2]), ptr, excluded)
    with pytest.raises(ValueError, match='exclude_ptr'):
        evaluate_leave_last_out(scorer, torch.tensor([0, 1]),
                                torch.tensor([1, 2]), ptr[:-1], excluded)
    with pytest.raises(ValueError, match='out of range'):
        evaluate_leave_last_out(scorer, torch.tensor([0, 1]),
                                torch.tensor([1, 5]), ptr, excluded)
    with pytest.raises(ValueError, match='query_item == target_item'):
        evaluate_pairs(scorer, torch.tensor([0, 1]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match='NaN'):
        evaluate_pairs(lambda q: torch.full((q.numel(), 5), math.nan),
                       torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match='shape'):
        evaluate_pairs(lambda q: torch.zeros(5), torch.tensor([0]),
                       torch.tensor([1]))


def test_evaluate_scorers_table():
    gen = torch.Generator().manual_seed(3)
    num_users, num_items = 30, 20
    user = torch.randint(0, num_users, (200, ), generator=gen).sort()[0]
    item = torch.randint(0, num_items, (200, ), generator=gen)
    ptr, last = user_history(user, item, num_users)
    has = last >= 0
    target = torch.randint(0, num_items, (num_users, ), generator=gen)
    # Exclude sets of the users with a train item:
    count = ptr.diff()[has]
    sub_ptr = torch.cat([torch.zeros(1, dtype=torch.long), count.cumsum(0)])
    split = LeaveLastOutSplit(last[has], target[has], sub_ptr, item)
    pairs = PairSplit(last[has], (last[has] + 1) % num_items)

    df = evaluate_scorers(
        {
            'random': random_scorer(num_items),
            'popularity': popularity_scorer(item, num_items),
            'oracle': lambda q: torch.nn.functional.one_hot(
                (q + 1) % num_items, num_items).float(),
        },
        leave_last_out={'val': split, 'test': split},
        pairs={'test': pairs},
    )
    assert list(df.columns) == [
        'method', 'val_hr@10', 'test_hr@10', 'test_hit_rate@10',
        'test_scaled_mrr'
    ]
    assert df['method'].tolist() == ['random', 'popularity', 'oracle']
    assert df.attrs['mrr_scale'] == {'test': 1}
    oracle = df.set_index('method').loc['oracle']
    assert oracle['test_hit_rate@10'] == 1.0
    assert oracle['test_scaled_mrr'] == 1.0
    assert df['val_hr@10'].between(0, 1).all()
    # Same seed for every split and deterministic scorers -> same numbers:
    assert (df['val_hr@10'][1:] == df['test_hr@10'][1:]).all()


def test_large_catalogue_evaluation():
    num_users, num_items, num_edges, n = 2_000, 200_000, 20_000, 16
    gen = torch.Generator().manual_seed(4)
    user = torch.randint(0, num_users, (num_edges, ), generator=gen).sort()[0]
    item = torch.randint(0, num_items, (num_edges, ), generator=gen)
    ptr, last = user_history(user, item, num_users)
    rows = torch.nonzero(last >= 0).view(-1)[:n]
    # Target: the user's first train item (query = last), not excluded here.
    target = item[ptr[rows]]
    query = last[rows]
    keep = target != query
    query, target = query[keep], target[keep]
    for scorer in (cooccurrence_scorer(user, item, num_users, num_items),
                   transition_scorer(user, item, num_items, window=10,
                                     backward_weight=1.0)):
        out = evaluate_pairs(scorer, query, target, k=500, chunk_size=8)
        assert 0.0 <= out['hit_rate@500'] <= 1.0
        # Every target shares a user with its query: cosine > 0 puts it
        # near the top among ~200K mostly-zero candidates.
        if scorer.name == 'cooccurrence':
            assert out['hit_rate@500'] == 1.0
        assert out['mrr_scale'] == 4
