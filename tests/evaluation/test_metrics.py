import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from pinsage_pyg.evaluation.metrics import (
    HitRate,
    ScaledMRR,
    default_mrr_scale,
    target_rank,
)

RANK = torch.tensor([1, 5, 10, 11, 100, 250])


def test_hit_rate_hand_computed():
    metric = HitRate(k=10)
    metric.update(RANK)
    assert metric.compute().item() == pytest.approx(3 / 6)
    metric.update(torch.tensor([2]))
    assert metric.compute().item() == pytest.approx(4 / 7)
    assert str(metric) == 'HitRate(k=10)'
    metric.reset()
    with pytest.warns(UserWarning, match='before the ``update``'):
        assert metric.compute().item() == 0.0


def test_scaled_mrr_hand_computed():
    # ceil(rank / 10) = 1, 1, 1, 2, 10, 25
    metric = ScaledMRR(scale=10)
    metric.update(RANK)
    expected = (1 + 1 + 1 + 1 / 2 + 1 / 10 + 1 / 25) / 6
    assert metric.compute().item() == pytest.approx(expected)

    plain = ScaledMRR(scale=1)
    plain.update(RANK)
    expected = (1 + 1 / 5 + 1 / 10 + 1 / 11 + 1 / 100 + 1 / 250) / 6
    assert plain.compute().item() == pytest.approx(expected)
    assert str(plain) == 'ScaledMRR(scale=1)'


@pytest.mark.parametrize('make', [lambda: HitRate(3), lambda: ScaledMRR(4)])
def test_metrics_reduce_like_ddp(make):
    rank = torch.randint(1, 20, (101, ), generator=torch.Generator()
                         .manual_seed(0))
    whole = make()
    whole.update(rank)

    first, second = make(), make()
    first.update(rank[:40])
    second.update(rank[40:])
    # Every state is declared with dist_reduce_fx='sum':
    assert all(fx is dim_zero_sum for fx in first._reductions.values())

    # DDP-style: sum every state over the two "processes".
    summed = make()
    summed.update(rank[:0])  # An empty update leaves the states at zero.
    for name in summed.metric_state:
        setattr(summed, name,
                getattr(first, name) + getattr(second, name))
    assert summed.compute().item() == pytest.approx(whole.compute().item())

    first.merge_state(second)
    assert first.compute().item() == pytest.approx(whole.compute().item())


def test_metric_input_errors():
    with pytest.raises(ValueError, match='positive'):
        HitRate(0)
    with pytest.raises(ValueError, match='scale'):
        ScaledMRR(0)
    with pytest.raises(ValueError, match='1-based'):
        HitRate(5).update(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='integer'):
        ScaledMRR(1).update(torch.tensor([1.5]))


def test_default_mrr_scale():
    assert default_mrr_scale(5_000_000) == 100  # The paper's setting.
    assert default_mrr_scale(10_000_000) == 200
    assert default_mrr_scale(1_000_000) == 20
    assert default_mrr_scale(3_705) == 1
    assert default_mrr_scale(0) == 1


def test_target_rank_without_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5, float('-inf')],
                           [3.0, 2.0, 1.0, 0.0],
                           [3.0, 2.0, 1.0, 0.0]])
    rank = target_rank(scores, torch.tensor([2, 0, 3]))
    assert rank.dtype == torch.long
    assert rank.tolist() == [2, 1, 4]
    # -inf (excluded) candidates never rank above a finite target:
    assert target_rank(scores[:1], torch.tensor([0])).tolist() == [3]


def test_target_rank_breaks_ties_uniformly_and_reproducibly():
    scores = torch.tensor([[5., 1., 1., 1., 1., 0.]]).repeat(4000, 1)
    target = torch.full((4000, ), 2)

    rank = target_rank(scores, target, torch.Generator().manual_seed(0))
    again = target_rank(scores, target, torch.Generator().manual_seed(0))
    assert torch.equal(rank, again)
    # One item is higher; the target is uniform among 4 tied positions:
    assert rank.min() == 2 and rank.max() == 5
    counts = torch.bincount(rank - 2, minlength=4) / 4000
    assert torch.allclose(counts, torch.full((4, ), 0.25), atol=0.03)


def test_target_rank_errors():
    with pytest.raises(ValueError, match='shape'):
        target_rank(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match='outside'):
        target_rank(torch.zeros(1, 4), torch.tensor([4]))
    with pytest.raises(ValueError, match='NaN'):
        target_rank(torch.tensor([[float('nan'), 0.]]), torch.tensor([0]))
