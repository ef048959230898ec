r"""The training objectives: values against hand computations, masking,
weights, the logQ correction, gradients, and full == sampled softmax when
every item is sampled."""
import math

import pytest
import torch
import torch.nn.functional as F

from pinsage_pyg.nn import (full_softmax_loss, max_margin_loss,
                            sampled_softmax_loss)


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_sampled_softmax_log_q_hand_case():
    # One query, a positive and two negatives with known scores.
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[0.8, 0.6]])            # score 0.8
    neg = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # scores 0.6, 0.0
    tau = 0.5
    pos_lq = torch.tensor([math.log(0.2)])
    neg_lq = torch.tensor([math.log(0.5), math.log(0.1)])
    logits = [0.8 / tau - math.log(0.2), 0.6 / tau - math.log(0.5),
              0.0 / tau - math.log(0.1)]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    got = sampled_softmax_loss(q, pos, neg, tau, pos_log_q=pos_lq,
                               neg_log_q=neg_lq)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Without the correction it is the plain sampled softmax:
    plain = [0.8 / tau, 0.6 / tau, 0.0]
    expected = -plain[0] + math.log(sum(math.exp(v) for v in plain))
    assert sampled_softmax_loss(q, pos, neg, tau).item() == \
        pytest.approx(expected, rel=1e-6)
    # A constant log Q (uniform sampling) changes nothing:
    same = sampled_softmax_loss(q, pos, neg, tau,
                                pos_log_q=torch.full((1, ), -3.0),
                                neg_log_q=torch.full((2, ), -3.0))
    assert same.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_masks_accidental_hits():
    q, pos, neg = unit(3, 4), unit(3, 4, seed=1), unit(5, 4, seed=2)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 2] = False
    base = sampled_softmax_loss(q, pos, neg, 0.1, mask)
    # Whatever the masked negative scores, the loss does not move:
    neg2 = neg.clone()
    neg2[2] = q[1]
    moved = sampled_softmax_loss(q, pos, neg2, 0.1, mask)
    mask_row1 = sampled_softmax_loss(q[1:2], pos[1:2], neg2[[0, 1, 3, 4]],
                                     0.1)
    per_row = [sampled_softmax_loss(q[i:i + 1], pos[i:i + 1], neg2, 0.1)
               for i in (0, 2)]
    assert torch.isclose(moved, (per_row[0] + mask_row1 + per_row[1]) / 3)
    assert not torch.isclose(base, sampled_softmax_loss(q, pos, neg2, 0.1))


def test_weights_are_a_weighted_mean_of_per_example_losses():
    q, pos, neg = unit(4, 6), unit(4, 6, seed=3), unit(7, 6, seed=4)
    w = torch.tensor([1.0, 0.5, 0.25, 2.0])
    for fn, kw in ((sampled_softmax_loss, {'temperature': 0.2}),
                   (max_margin_loss, {'margin': 0.3})):
        per = torch.stack([fn(q[i:i + 1], pos[i:i + 1], neg, **kw)
                           for i in range(4)])
        got = fn(q, pos, neg, weight=w, **kw)
        assert torch.isclose(got, (per * w).sum() / w.sum(), atol=1e-6)
        # Equal weights: the unweighted loss.
        assert torch.isclose(fn(q, pos, neg, weight=torch.full((4, ), 3.0),
                                **kw), fn(q, pos, neg, **kw), atol=1e-6)
    with pytest.raises(ValueError, match='one value per example'):
        sampled_softmax_loss(q, pos, neg, weight=torch.ones(3))


def test_full_softmax_equals_sampled_when_every_item_is_sampled():
    n, d = 12, 5
    items = unit(n, d, seed=5)
    query_id = torch.tensor([0, 3, 7])
    pos_id = torch.tensor([4, 3 + 1, 2])
    q = unit(3, d, seed=6)
    target = torch.zeros(3, n)
    target[torch.arange(3), pos_id] = 1.0
    full = full_softmax_loss(q, items, target, 0.1, query_id)
    # Sampled: all n items as shared negatives (each sampled once: Q = 1),
    # the pair's positive and query masked as accidental hits.
    cand = torch.arange(n)
    mask = (cand.view(1, -1) != pos_id.view(-1, 1)) & \
        (cand.view(1, -1) != query_id.view(-1, 1))
    sampled = sampled_softmax_loss(q, items[pos_id], items, 0.1, mask,
                                   pos_log_q=torch.zeros(3),
                                   neg_log_q=torch.zeros(n))
    assert torch.isclose(full, sampled, atol=1e-6)


def test_full_softmax_masks_the_query_and_weights_targets():
    n, d = 8, 4
    items, q = unit(n, d, seed=7), unit(2, d, seed=8)
    target = torch.zeros(2, n)
    target[0, 1], target[0, 2] = 1.0, 0.5
    target[1, 5] = 2.0
    rows = torch.tensor([0, 3])
    logits = q @ items.t() / 0.2
    logits[0, 0] = logits[1, 3] = float('-inf')
    logp = logits.log_softmax(-1)
    expected = -(1.0 * logp[0, 1] + 0.5 * logp[0, 2] + 2.0 * logp[1, 5]) / 3.5
    got = full_softmax_loss(q, items, target, 0.2, rows)
    assert torch.isclose(got, expected, atol=1e-6)
    # The query's own score is out of the softmax: making it huge changes
    # nothing.
    items2 = items.clone()
    items2[0] = q[0] * 10
    items2[3] = q[1] * 10
    moved = full_softmax_loss(q, items2, target, 0.2, rows)
    logits2 = q @ items2.t() / 0.2
    logits2[0, 0] = logits2[1, 3] = float('-inf')
    logp2 = logits2.log_softmax(-1)
    assert torch.isclose(moved, -(logp2[0, 1] + 0.5 * logp2[0, 2]
                                  + 2 * logp2[1, 5]) / 3.5, atol=1e-6)
    assert torch.isfinite(moved)
    with pytest.raises(ValueError, match=r'target must be \[R, N\]'):
        full_softmax_loss(q, items, target[:, :4])
    # The sparse (CSR) form of the same targets gives the same loss and
    # the same gradients:
    sp = target.to_sparse_csr()
    csr = (sp.crow_indices(), sp.col_indices(), sp.values())
    qa, qb = q.clone().requires_grad_(), q.clone().requires_grad_()
    dense = full_softmax_loss(qa, items, target, 0.2, rows)
    sparse = full_softmax_loss(qb, items, csr, 0.2, rows)
    assert torch.isclose(dense, sparse, atol=1e-6)
    dense.backward()
    sparse.backward()
    assert torch.allclose(qa.grad, qb.grad, atol=1e-6)
    with pytest.raises(ValueError, match='sparse target must be'):
        full_softmax_loss(q, items, (csr[0][:2], csr[1], csr[2]))


def test_full_softmax_gradient_is_expected_minus_target_embedding():
    # d loss / d q = (E_p[z_j] - E_w[z_j]) / tau, for one row.
    n, d, tau = 9, 3, 0.3
    items = unit(n, d, seed=9)
    q = unit(1, d, seed=10).requires_grad_()
    w = torch.zeros(1, n)
    w[0, 2], w[0, 6] = 2.0, 1.0
    full_softmax_loss(q, items, w, tau).backward()
    p = (q.detach() @ items.t() / tau).softmax(-1)
    expected = ((p @ items) - (w @ items) / w.sum()) / tau
    assert torch.allclose(q.grad, expected, atol=1e-6)


def test_losses_give_finite_gradients_to_every_input():
    q = unit(4, 6).requires_grad_()
    pos = unit(4, 6, seed=1).requires_grad_()
    neg = unit(10, 6, seed=2).requires_grad_()
    hard = unit(4, 2, 6, seed=3).requires_grad_()
    for loss in (max_margin_loss(q, pos, neg, 0.5, hard_neg=hard),
                 sampled_softmax_loss(q, pos, neg, 0.1, hard_neg=hard,
                                      neg_log_q=torch.zeros(10))):
        grads = torch.autograd.grad(loss, (q, pos, neg, hard))
        assert all(torch.isfinite(g).all() and g.abs().sum() > 0
                   for g in grads)
