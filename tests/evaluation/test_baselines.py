import math

import pytest
import torch

from pinsage_pyg.evaluation.baselines import (
    cooccurrence_scorer,
    embedding_scorer,
    popularity_scorer,
    random_scorer,
    transition_scorer,
)

# 3 users, 5 items, each user's items in time order. User 1 sees item 1
# twice (counts once for co-occurrence, twice for transitions).
SEQUENCES = [[0, 1, 2], [1, 2, 3, 1], [2, 4]]
NUM_USERS, NUM_ITEMS = 3, 5


def interactions(sequences=SEQUENCES):
    user = torch.tensor([u for u, seq in enumerate(sequences) for _ in seq])
    item = torch.tensor([i for seq in sequences for i in seq])
    return user, item


def test_popularity_scorer():
    _, item = interactions()
    scorer = popularity_scorer(item, NUM_ITEMS)
    out = scorer(torch.tensor([0, 4, 4]))
    expected = torch.tensor([1., 3., 3., 1., 1.])
    assert out.shape == (3, NUM_ITEMS)
    assert torch.equal(out, expected.expand(3, -1))
    assert scorer.name == 'popularity'
    assert str(scorer) == 'PopularityScorer(num_items=5)'


def test_cooccurrence_scorer_hand_computed():
    user, item = interactions()
    scorer = cooccurrence_scorer(user, item, NUM_USERS, NUM_ITEMS)
    # Users of each item: 0:{0} 1:{0,1} 2:{0,1,2} 3:{1} 4:{2}.
    s2, s3, s6 = math.sqrt(2), math.sqrt(3), math.sqrt(6)
    expected = torch.tensor([
        [1., 1 / s2, 1 / s3, 0., 0.],
        [1 / s2, 1., 2 / s6, 1 / s2, 0.],
        [1 / s3, 2 / s6, 1., 1 / s3, 1 / s3],
        [0., 1 / s2, 1 / s3, 1., 0.],
        [0., 0., 1 / s3, 0., 1.],
    ])
    out = scorer(torch.arange(NUM_ITEMS))
    assert torch.allclose(out, expected, atol=1e-6)
    # Query order and repeats are respected:
    assert torch.allclose(scorer(torch.tensor([2, 0, 2])),
                          expected[[2, 0, 2]], atol=1e-6)


def test_cooccurrence_scorer_item_without_users():
    user, item = interactions([[0, 1], [1]])
    out = cooccurrence_scorer(user, item, 2, 4)(torch.tensor([3, 0]))
    assert torch.equal(out[0], torch.zeros(4))
    assert torch.allclose(out[1], torch.tensor([1., 1 / math.sqrt(2), 0, 0]))


def test_transition_scorer_forward_window_decay():
    user, item = interactions()
    scorer = transition_scorer(user, item, NUM_ITEMS, window=2, decay=0.5)
    # d=1 pairs (weight 1): 0>1 1>2 | 1>2 2>3 3>1 | 2>4
    # d=2 pairs (weight .5): 0>2 | 1>3 2>1 ; nothing across users.
    expected = torch.tensor([
        [0., 1., .5, 0., 0.],
        [0., 0., 2., .5, 0.],
        [0., .5, 0., 1., 1.],
        [0., 1., 0., 0., 0.],
        [0., 0., 0., 0., 0.],
    ])
    assert torch.equal(scorer(torch.arange(NUM_ITEMS)), expected)
    assert scorer.num_transitions == int((expected > 0).sum())

    window1 = transition_scorer(user, item, NUM_ITEMS, window=1)
    assert torch.equal(window1(torch.arange(NUM_ITEMS)),
                       (expected == 1) * 1. + (expected == 2) * 2.)


def test_transition_scorer_backward():
    user, item = interactions()
    scorer = transition_scorer(user, item, NUM_ITEMS, window=2, decay=0.5,
                               backward_weight=0.25)
    expected = torch.tensor([
        [0., 1., .5, 0., 0.],
        [.25, 0., 2.125, .75, 0.],
        [.125, 1., 0., 1., 1.],
        [0., 1.125, .25, 0., 0.],
        [0., 0., .25, 0., 0.],
    ])
    assert torch.equal(scorer(torch.arange(NUM_ITEMS)), expected)
    assert 'backward_weight=0.25' in str(scorer)


def reference_transition(sequences, num_items, window, decay, backward):
    out = torch.zeros(num_items, num_items, dtype=torch.float64)
    for seq in sequences:
        for p, q in enumerate(seq):
            for d in range(1, window + 1):
                if p + d < len(seq):
                    out[q, seq[p + d]] += decay**(d - 1)
                if p - d >= 0:
                    out[q, seq[p - d]] += backward * decay**(d - 1)
    return out


def reference_cosine(sequences, num_items):
    x = torch.zeros(len(sequences), num_items, dtype=torch.float64)
    for u, seq in enumerate(sequences):
        x[u, seq] = 1.
    x = x / x.norm(dim=0).clamp(min=1e-12)
    return x.t() @ x


@pytest.mark.parametrize('window,decay,backward', [(1, 1.0, 0.0),
                                                   (3, 0.7, 0.5),
                                                   (10, 0.8, 1.0)])
def test_scorers_match_brute_force(window, decay, backward):
    gen = torch.Generator().manual_seed(window)
    num_items = 15
    sequences = [
        torch.randint(0, num_items, (int(n), ), generator=gen).tolist()
        for n in torch.randint(0, 12, (20, ), generator=gen)
    ]
    user, item = interactions(sequences)
    query = torch.randint(0, num_items, (30, ), generator=gen)

    trans = transition_scorer(user, item, num_items, window, decay, backward)
    expected = reference_transition(sequences, num_items, window, decay,
                                    backward)
    assert torch.allclose(trans(query).double(), expected[query], atol=1e-5)

    cooc = cooccurrence_scorer(user, item, len(sequences), num_items)
    expected = reference_cosine(sequences, num_items)
    assert torch.allclose(cooc(query).double(), expected[query], atol=1e-6)


def test_scorers_are_chunking_invariant():
    user, item = interactions()
    query = torch.tensor([4, 0, 1, 1, 3, 2])
    for scorer in (cooccurrence_scorer(user, item, NUM_USERS, NUM_ITEMS),
                   transition_scorer(user, item, NUM_ITEMS, 3, .5, .5),
                   popularity_scorer(item, NUM_ITEMS)):
        whole = scorer(query)
        assert torch.equal(torch.cat([scorer(q) for q in query.split(1)]),
                           whole)
        assert scorer(query[:0]).shape == (0, NUM_ITEMS)

    whole = random_scorer(NUM_ITEMS, seed=3)(query)
    chunked = random_scorer(NUM_ITEMS, seed=3)
    assert torch.equal(torch.cat([chunked(q) for q in query.split(4)]), whole)


def test_random_scorer():
    a = random_scorer(1000, seed=1)(torch.zeros(20, dtype=torch.long))
    b = random_scorer(1000, seed=1)(torch.zeros(20, dtype=torch.long))
    c = random_scorer(1000, seed=2)(torch.zeros(20, dtype=torch.long))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (20, 1000) and 0 <= a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.02


def test_embedding_scorer():
    gen = torch.Generator().manual_seed(0)
    query_emb = torch.randn(6, 4, generator=gen)
    item_emb = torch.randn(6, 4, generator=gen)
    query = torch.tensor([5, 0])
    assert torch.allclose(
        embedding_scorer(query_emb)(query), query_emb[query] @ query_emb.t())
    assert torch.allclose(
        embedding_scorer(query_emb, item_emb)(query),
        query_emb[query] @ item_emb.t())
    with pytest.raises(ValueError, match='item_emb'):
        embedding_scorer(query_emb, torch.randn(6, 3))


def test_input_errors():
    user, item = interactions()
    with pytest.raises(ValueError, match='sorted'):
        cooccurrence_scorer(user.flip(0), item, NUM_USERS, NUM_ITEMS)
    with pytest.raises(ValueError, match='sorted'):
        transition_scorer(user.flip(0), item, NUM_ITEMS)
    with pytest.raises(ValueError, match='outside'):
        popularity_scorer(item, 3)
    with pytest.raises(ValueError, match='same length'):
        transition_scorer(user[:-1], item, NUM_ITEMS)
    with pytest.raises(ValueError, match='window'):
        transition_scorer(user, item, NUM_ITEMS, window=0)
    with pytest.raises(ValueError, match='query_items'):
        popularity_scorer(item, NUM_ITEMS)(torch.tensor([5]))


def test_large_catalogue_never_densifies_item_pairs():
    # A dense I x I matrix would need 160 GB (float32); chunks need 8 x I.
    num_users, num_items, num_edges = 5_000, 200_000, 60_000
    gen = torch.Generator().manual_seed(0)
    user = torch.randint(0, num_users, (num_edges, ), generator=gen).sort()[0]
    item = torch.randint(0, num_items, (num_edges, ), generator=gen)
    item[:100] = 7  # User 0 (and maybe 1) binges item 7.
    query = torch.tensor([7, 0, 123_456, 199_999, 7, 42, 1, 2])
    cooc = cooccurrence_scorer(user, item, num_users, num_items)
    trans = transition_scorer(user, item, num_items, window=5, decay=0.8,
                              backward_weight=0.5)
    for scorer in (cooc, trans):
        out = scorer(query)
        assert out.shape == (8, num_items)
        assert torch.equal(out[0], out[4])
    assert trans.num_transitions <= 2 * 5 * num_edges
    assert cooc(torch.tensor([7]))[0, 7].item() == pytest.approx(1.0)
