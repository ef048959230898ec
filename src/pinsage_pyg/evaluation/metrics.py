r"""Ranking metrics of the PinSage paper, as O(1)-state torchmetrics objects.

The metrics consume the 1-based rank of each held-out target among its
candidate pool (see :func:`target_rank`), so they can be updated chunk by
chunk and reduced across processes by summing their states.

For the leave-last-out protocol's HR@k, which consumes top-:math:`k` index
lists instead of ranks, use PyG's own
:class:`torch_geometric.metrics.LinkPredHitRatio` (as
:func:`pinsage_pyg.evaluation.protocols.evaluate_leave_last_out` does).
"""
from typing import Optional

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    'HitRate',
    'ScaledMRR',
    'default_mrr_scale',
    'target_rank',
]

#: Pool size and MRR scale of the paper (Ying et al., 2018, Sec. 4.2).
PAPER_POOL_SIZE = 5_000_000
PAPER_MRR_SCALE = 100


def _check_rank(rank: Tensor, name: str) -> Tensor:
    if not isinstance(rank, Tensor) or rank.dim() != 1:
        raise ValueError(f"'{name}.update' expects a 1-D tensor of 1-based "
                         f"ranks (got {type(rank).__name__} with shape "
                         f"{tuple(getattr(rank, 'shape', ()))})")
    if rank.is_floating_point() or rank.is_complex():
        raise ValueError(f"'{name}.update' expects integer ranks "
                         f"(got dtype {rank.dtype})")
    if rank.numel() > 0 and int(rank.min()) < 1:
        raise ValueError(f"'{name}.update' expects 1-based ranks >= 1 "
                         f"(got minimum {int(rank.min())})")
    return rank


class HitRate(Metric):
    r"""Hit-rate@:math:`k` of the PinSage paper: the fraction of held-out
    targets ranked within the top :math:`k` of their candidate pool,

    .. math::
        \mathrm{HR@}k = \frac{1}{n} \sum_{j=1}^{n} [R_j \le k].

    Args:
        k (int): The cut-off (paper: :obj:`500` for a pool of 5M items).

    Shapes:
        - **update input:** rank :math:`(n)`, 1-based, integer
        - **compute output:** scalar
    """
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    hits: Tensor
    total: Tensor

    def __init__(self, k: int) -> None:
        super().__init__()
        if int(k) != k or k <= 0:
            raise ValueError(f"'k' needs to be a positive integer in "
                             f"'HitRate' (got {k})")
        self.k = int(k)
        self.add_state('hits', torch.tensor(0), dist_reduce_fx='sum')
        self.add_state('total', torch.tensor(0), dist_reduce_fx='sum')

    def update(self, rank: Tensor) -> None:
        rank = _check_rank(rank, 'HitRate')
        self.hits += (rank <= self.k).sum().to(self.hits.device)
        self.total += rank.numel()

    def compute(self) -> Tensor:
        if self.total == 0:
            return torch.tensor(0.0, device=self.hits.device)
        return self.hits.double() / self.total

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k})'


class ScaledMRR(Metric):
    r"""Scaled mean reciprocal rank of the PinSage paper,

    .. math::
        \mathrm{MRR} = \frac{1}{n} \sum_{j=1}^{n}
        \frac{1}{\lceil R_j / s \rceil},

    where :math:`R_j` is the 1-based rank of the :math:`j`-th target and
    :math:`s` the scale. The paper uses :math:`s = 100` for a pool of 5M
    candidates and says to scale :math:`s` with the pool, so that a target
    ranked 1st or 100th out of 5M counts the same; use
    :func:`default_mrr_scale` for that. With :math:`s = 1` it is the usual
    MRR.

    Args:
        scale (int): The rank scale :math:`s \ge 1`.

    Shapes:
        - **update input:** rank :math:`(n)`, 1-based, integer
        - **compute output:** scalar
    """
    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    reciprocal_sum: Tensor
    total: Tensor

    def __init__(self, scale: int = 1) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"'scale' needs to be an integer >= 1 in "
                             f"'ScaledMRR' (got {scale})")
        self.scale = int(scale)
        self.add_state('reciprocal_sum',
                       torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx='sum')
        self.add_state('total', torch.tensor(0), dist_reduce_fx='sum')

    def update(self, rank: Tensor) -> None:
        rank = _check_rank(rank, 'ScaledMRR')
        # Integer ceil division: ceil(r / s) == (r + s - 1) // s.
        bucket = torch.div(rank + (self.scale - 1), self.scale,
                           rounding_mode='floor')
        self.reciprocal_sum += bucket.double().reciprocal().sum().to(
            self.reciprocal_sum.device)
        self.total += rank.numel()

    def compute(self) -> Tensor:
        if self.total == 0:
            return torch.zeros_like(self.reciprocal_sum)
        return self.reciprocal_sum / self.total

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(scale={self.scale})'


def default_mrr_scale(num_candidates: int) -> int:
    r"""The MRR scale for a pool of :obj:`num_candidates` items, growing
    linearly with the pool from the paper's :math:`s = 100` at 5M items:
    :math:`\max(1, \mathrm{round}(100 \cdot N / 5{,}000{,}000))`.
    """
    if num_candidates < 0:
        raise ValueError(f"'num_candidates' must be non-negative "
                         f"(got {num_candidates})")
    return max(1, round(PAPER_MRR_SCALE * num_candidates / PAPER_POOL_SIZE))


def target_rank(
    scores: Tensor,
    target: Tensor,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""The 1-based rank of each row's target among that row's candidates.

    .. math::
        R_j = 1 + |\{i : s_{ji} > s_{j t_j}\}| + U_j, \quad
        U_j \sim \mathcal{U}\{0, \dots, |\{i \ne t_j : s_{ji} = s_{jt_j}\}|\}

    i.e., the target is placed uniformly at random among the candidates that
    tie with it exactly, so that ties never favour low item indices. Give
    excluded candidates a score of :obj:`-inf` before calling.
    :func:`~pinsage_pyg.evaluation.protocols.jitter_scores` breaks ties before
    ranking already; the random placement here only covers what is left.

    Args:
        scores (torch.Tensor): Candidate scores, higher is better.
        target (torch.Tensor): The target column of every row.
        generator (torch.Generator, optional): The CPU generator for the tie
            placement; :obj:`None` uses torch's global RNG.
            (default: :obj:`None`)

    Shapes:
        - **input:** scores :math:`(c, I)`, target :math:`(c)`
        - **output:** rank :math:`(c)`, :obj:`torch.long`
    """
    if scores.dim() != 2 or target.dim() != 1 or \
            target.numel() != scores.size(0):
        raise ValueError(f"'target_rank' expects scores of shape [c, I] and "
                         f"target of shape [c] (got {tuple(scores.shape)} and "
                         f"{tuple(target.shape)})")
    if target.numel() > 0 and (int(target.min()) < 0
                               or int(target.max()) >= scores.size(1)):
        raise ValueError(f"'target_rank' got target indices outside "
                         f"[0, {scores.size(1)})")
    target = target.to(scores.device)
    target_score = scores.gather(1, target.view(-1, 1))
    if bool(torch.isnan(target_score).any()):
        raise ValueError("'target_rank' got NaN target scores; the scorer "
                         "must return finite scores or -inf for exclusions")
    higher = (scores > target_score).sum(dim=1)
    ties = (scores == target_score).sum(dim=1) - 1
    u = torch.rand(scores.size(0), generator=generator, dtype=torch.float64)
    offset = (u.to(scores.device) * (ties + 1).double()).floor().long()
    return 1 + higher + offset.clamp(max=ties)
