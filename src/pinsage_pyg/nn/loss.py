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
                    hard_mask: Optional[Tensor] = None) -> Tensor:
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
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (got {margin})")
    pos_score, neg_score, neg_mask = _scores(query, pos, neg, neg_mask,
                                             hard_neg, hard_mask)
    loss = F.relu(neg_score - pos_score + margin)
    if neg_mask is None:
        return loss.mean()
    mask = neg_mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp(min=1.0)


def sampled_softmax_loss(query: Tensor, pos: Tensor, neg: Tensor,
                         temperature: float = 0.05,
                         neg_mask: Optional[Tensor] = None,
                         hard_neg: Optional[Tensor] = None,
                         hard_mask: Optional[Tensor] = None) -> Tensor:
    r"""Sampled-softmax (InfoNCE) alternative to the hinge: cross-entropy of
    the positive against the negatives, with scores divided by
    :obj:`temperature`. Same arguments as :func:`max_margin_loss`."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    pos_score, neg_score, neg_mask = _scores(query, pos, neg, neg_mask,
                                             hard_neg, hard_mask)
    if neg_mask is not None:
        neg_score = neg_score.masked_fill(~neg_mask, float('-inf'))
    logits = torch.cat([pos_score, neg_score], dim=1) / temperature
    target = torch.zeros(logits.size(0), dtype=torch.long,
                         device=logits.device)
    return F.cross_entropy(logits, target)
