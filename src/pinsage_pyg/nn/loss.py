r"""Training objectives over (query, positive, negatives) embeddings."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def _neg_scores(query: Tensor, neg: Tensor) -> Tensor:
    if neg.dim() == 2:  # shared negatives [N, d]
        return query @ neg.t()
    if neg.dim() == 3:  # per-example negatives [B, N, d]
        return torch.einsum('bd,bnd->bn', query, neg)
    raise ValueError(f"negatives must be [N, d] (shared) or [B, N, d] "
                     f"(per example); got shape {tuple(neg.shape)}")


def _scores(query: Tensor, pos: Tensor, neg: Tensor,
            neg_mask: Optional[Tensor], hard_neg: Optional[Tensor],
            hard_mask: Optional[Tensor]
            ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""Positive scores ``[B, 1]``, negative scores ``[B, N (+ H)]`` and
    their mask (``None``: all count)."""
    pos_score = (query * pos).sum(dim=-1, keepdim=True)
    neg_score = _neg_scores(query, neg)
    if hard_neg is None or hard_neg.size(1) == 0:
        return pos_score, neg_score, neg_mask
    if hard_neg.dim() != 3 or hard_neg.size(0) != query.size(0):
        raise ValueError(f"hard negatives must be [B, H, d] with B = "
                         f"{query.size(0)}; got {tuple(hard_neg.shape)}")
    hard_score = torch.einsum('bd,bhd->bh', query, hard_neg)
    score = torch.cat([neg_score, hard_score], dim=1)
    if neg_mask is None and hard_mask is None:
        return pos_score, score, None
    b = query.size(0)
    nm = torch.ones_like(neg_score, dtype=torch.bool) if neg_mask is None \
        else neg_mask.expand(b, -1)
    hm = torch.ones_like(hard_score, dtype=torch.bool) if hard_mask is None \
        else hard_mask
    return pos_score, score, torch.cat([nm, hm], dim=1)


def max_margin_loss(query: Tensor, pos: Tensor, neg: Tensor,
                    margin: float = 0.1,
                    neg_mask: Optional[Tensor] = None,
                    hard_neg: Optional[Tensor] = None,
                    hard_mask: Optional[Tensor] = None,
                    weight: Optional[Tensor] = None) -> Tensor:
    r"""PinSage's max-margin ranking loss

    .. math::
        J = \mathbb{E}_{n \sim P_n(q)} \max(0, \mathbf{z}_q \cdot
        \mathbf{z}_n - \mathbf{z}_q \cdot \mathbf{z}_i + \Delta)

    averaged over the pairs of the batch and their negatives.

    Args:
        query (Tensor): Query embeddings :math:`[B, d]`.
        pos (Tensor): Positive embeddings :math:`[B, d]`.
        neg (Tensor): Negatives, shared by the batch :math:`[N, d]` (the
            paper's choice) or per example :math:`[B, N, d]`.
        margin (float): :math:`\Delta \geq 0`. (default: ``0.1``)
        neg_mask (BoolTensor, optional): :math:`[B, N]`, ``False`` for
            (example, negative) combinations to ignore, e.g. a shared
            negative that is the example's own positive or query.
        hard_neg (Tensor, optional): Per-example hard negatives
            :math:`[B, H, d]` (PPR-ranked, the curriculum's), scored next
            to the :obj:`neg` ones.
        hard_mask (BoolTensor, optional): :math:`[B, H]` mask of
            :obj:`hard_neg`.
        weight (Tensor, optional): Per-example weights ``[B]`` (e.g. the
            window decay of the pair): each example's hinge is averaged
            over its negatives, then the examples are averaged with these
            weights.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (got {margin})")
    pos_score, neg_score, neg_mask = _scores(query, pos, neg, neg_mask,
                                             hard_neg, hard_mask)
    loss = F.relu(neg_score - pos_score + margin)
    if weight is not None:
        if neg_mask is None:
            per_example = loss.mean(dim=1)
        else:
            mask = neg_mask.expand_as(loss).to(loss.dtype)
            per_example = (loss * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return _weighted_mean(per_example, weight)
    if neg_mask is None:
        return loss.mean()
    mask = neg_mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def _weighted_mean(loss: Tensor, weight: Optional[Tensor]) -> Tensor:
    if weight is None:
        return loss.mean()
    if weight.shape != loss.shape:
        raise ValueError(f"weight must have one value per example "
                         f"{tuple(loss.shape)}; got {tuple(weight.shape)}")
    weight = weight.to(loss.dtype)
    return (loss * weight).sum() / weight.sum().clamp(min=1e-12)


def sampled_softmax_loss(query: Tensor, pos: Tensor, neg: Tensor,
                         temperature: float = 0.05,
                         neg_mask: Optional[Tensor] = None,
                         hard_neg: Optional[Tensor] = None,
                         hard_mask: Optional[Tensor] = None,
                         pos_log_q: Optional[Tensor] = None,
                         neg_log_q: Optional[Tensor] = None,
                         weight: Optional[Tensor] = None) -> Tensor:
    r"""Sampled softmax (InfoNCE): the cross-entropy of the positive
    against the sampled negatives, scores divided by :obj:`temperature`,
    optionally with the sampling-bias (logQ) correction of Bengio and
    Senecal (2008) / Yi et al. (2019):

    .. math::
        \ell = -\log rac{\exp(s_{qi}/	au - \log Q_i)}
        {\exp(s_{qi}/	au - \log Q_i) + \sum_{n} \exp(s_{qn}/	au -
        \log Q_n)}

    where :math:`Q_j` is the expected number of times item :math:`j` is in
    the sampled set (e.g. :math:`N / |\mathcal{I}|` for :math:`N` uniform
    negatives, :math:`B p_j` for the positives of a batch of :math:`B`
    pairs used as in-batch negatives). With the correction, the sampled
    loss is an unbiased-in-the-limit estimate of the softmax over the
    whole catalogue instead of over the sampling distribution. Same
    arguments as :func:`max_margin_loss`, plus:

    Args:
        pos_log_q (Tensor, optional): :math:`\log Q` of each example's
            positive ``[B]`` (``None``: no correction of the positive).
        neg_log_q (Tensor, optional): :math:`\log Q` of the negatives,
            ``[N]`` (shared) or ``[B, N]``; hard negatives (not drawn from
            a known distribution) are not corrected.
        weight (Tensor, optional): Per-example weights ``[B]`` (e.g. the
            window decay of the pair); the loss is the weighted mean.

    Masked negatives (:obj:`neg_mask` ``False``: accidental hits, i.e. the
    example's own positive or query drawn as a negative) are left out of
    the denominator."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    pos_score, neg_score, neg_mask = _scores(query, pos, neg, neg_mask,
                                             hard_neg, hard_mask)
    pos_logit = pos_score / temperature
    neg_logit = neg_score / temperature
    if pos_log_q is not None:
        pos_logit = pos_logit - pos_log_q.view(-1, 1).to(pos_logit.dtype)
    if neg_log_q is not None:
        lq = neg_log_q.to(neg_logit.dtype)
        lq = lq.view(1, -1).expand(query.size(0), -1) if lq.dim() == 1 \
            else lq
        if lq.size(1) < neg_logit.size(1):  # hard negatives: uncorrected
            lq = torch.cat([lq, lq.new_zeros(lq.size(0), neg_logit.size(1)
                                             - lq.size(1))], dim=1)
        neg_logit = neg_logit - lq
    if neg_mask is not None:
        neg_logit = neg_logit.masked_fill(~neg_mask, float('-inf'))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    target = torch.zeros(logits.size(0), dtype=torch.long,
                         device=logits.device)
    loss = F.cross_entropy(logits, target, reduction='none')
    return _weighted_mean(loss, weight)


def full_softmax_loss(query: Tensor, items: Tensor, target,
                      temperature: float = 0.1,
                      query_index: Optional[Tensor] = None,
                      reduction: str = 'mean') -> Tensor:
    r"""Exact softmax over the whole catalogue with weighted targets:

    .. math::
        \ell = -\frac{\sum_{q,j} w_{qj} \log \mathrm{softmax}_j(
        \mathbf{z}_q \cdot \mathbf{z}_j / \tau)}{\sum_{q,j} w_{qj}}

    Every item is a negative of every query (no sampling, no bias to
    correct). The rows of :obj:`target` are the weighted co-engagement
    targets of the queries (e.g. window-weighted forward and backward
    pairs, aggregated per query item).

    Args:
        query (Tensor): Query embeddings ``[R, d]``.
        items (Tensor): Embeddings of all items ``[N, d]``.
        target (Tensor or tuple): Target weights, dense ``[R, N]`` (>= 0)
            or sparse as a CSR triple ``(ptr [R + 1], col, weight)``
            (cheaper: the scores of the targets are gathered, the
            normaliser is one log-sum-exp per row).
        temperature (float): :math:`\tau > 0`. (default: ``0.1``)
        query_index (LongTensor, optional): The item id of each query
            ``[R]``; an item never scores itself (masked out of the
            softmax; its target weight must be 0).
        reduction (str): ``mean`` (the weighted mean above) or ``sum``
            (the numerator only, to combine chunks).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    if reduction not in ('mean', 'sum'):
        raise ValueError(f"reduction must be 'mean' or 'sum' (got "
                         f"{reduction!r})")
    r, n = query.size(0), items.size(0)
    sparse = isinstance(target, (tuple, list))
    if sparse:
        ptr, col, weight = target
        if ptr.numel() != r + 1 or col.numel() != weight.numel():
            raise ValueError(f"sparse target must be (ptr [R + 1], col, "
                             f"weight) with R = {r}; got ptr of "
                             f"{ptr.numel()}, {col.numel()} columns and "
                             f"{weight.numel()} weights")
    elif target.shape != (r, n):
        raise ValueError(f"target must be [R, N] = [{r}, {n}]; got "
                         f"{tuple(target.shape)}")
    logits = query @ items.t() / temperature
    if query_index is not None:
        rows = torch.arange(r, device=logits.device)
        # In place: neither the matmul nor the division needs its output
        # for the backward pass.
        logits.index_put_((rows, query_index.to(logits.device)),
                          logits.new_tensor(float('-inf')))
    if sparse:
        device = logits.device
        ptr, col = ptr.to(device), col.to(device)
        weight = weight.to(device=device, dtype=logits.dtype)
        row = torch.repeat_interleave(torch.arange(r, device=device),
                                      ptr[1:] - ptr[:-1])
        lse = torch.logsumexp(logits, dim=1)
        num = -(weight * (logits[row, col] - lse[row])).sum()
        total = weight.sum()
    else:
        logp = F.log_softmax(logits, dim=-1)
        target = target.to(logp.dtype)
        # 0 * -inf (the masked self score) counts as 0:
        num = -(target * logp.masked_fill(target == 0, 0.0)).sum()
        total = target.sum()
    if reduction == 'sum':
        return num
    return num / total.clamp(min=1e-12)
