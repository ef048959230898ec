r"""Chunked, tie-fair ranking evaluation of item scorers.

Two protocols:

- **Leave-last-out** (:func:`evaluate_leave_last_out`): one row per user;
  query = the user's last train item, candidates = all items minus the
  user's train items, hit if the held-out item is in the top :math:`k`
  (PyG's :class:`~torch_geometric.metrics.LinkPredHitRatio`).
- **Pairs** (:func:`evaluate_pairs`): the paper's hit-rate@:math:`k` and
  scaled MRR on held-out :math:`(q, i)` pairs, pool = all items except
  :math:`q`.

**Tie-breaking.** Popularity and co-occurrence scores tie exactly and often
(e.g. all zeros), and :func:`torch.topk` would then favour low item indices.
Every method is therefore ranked after the same procedure: each chunk of
scores is converted to :obj:`float64` and a jitter

.. math::
    \epsilon_{ji} = 10^{-9} \, (1 + \max_{i'} |s_{ji'}|) \, u_{ji}, \quad
    u_{ji} \sim \mathcal{U}(0, 1)

is added (max over the row's finite scores), drawn from a CPU
:class:`torch.Generator` seeded with the call's :obj:`seed`, before excluded
candidates are set to :obj:`-inf`. The jitter is far below the
:obj:`float32` precision relative to the row's largest score, so it only
reorders scores that agree to within :math:`10^{-9}` of that scale (exact
ties above all), uniformly at random. Draws are consumed row by row, so
results do not depend on :obj:`chunk_size` (nor on the device the scorer
runs on).
"""
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple

import pandas as pd
import torch
from torch import Tensor
from torch_geometric.metrics import LinkPredHitRatio
from torch_geometric.utils import cumsum

from pinsage_pyg.data.dataset import PinSageDataset
from pinsage_pyg.evaluation.baselines import (Scorer, cooccurrence_scorer,
                                              popularity_scorer,
                                              random_scorer,
                                              transition_scorer)
from pinsage_pyg.evaluation.metrics import (
    HitRate,
    ScaledMRR,
    default_mrr_scale,
    target_rank,
)
from pinsage_pyg.utils import gather_csr_rows

__all__ = [
    'JITTER',
    'jitter_scores',
    'user_history',
    'top_k_items',
    'evaluate_leave_last_out',
    'evaluate_pairs',
    'LeaveLastOutSplit',
    'PairSplit',
    'evaluate_scorers',
    'evaluation_splits',
    'baseline_scorers',
]

#: Relative magnitude of the tie-breaking jitter.
JITTER = 1e-9


def jitter_scores(scores: Tensor, generator: torch.Generator) -> Tensor:
    r"""Returns :obj:`scores` as :obj:`float64` plus the tie-breaking jitter
    :math:`10^{-9} (1 + \max_{i} |s_{ji}|) \, \mathcal{U}(0, 1)` (see the
    module docstring). Raises on NaN scores. :obj:`-inf` scores stay
    :obj:`-inf`.

    Shapes:
        - **input:** scores :math:`(c, I)`
        - **output:** :math:`(c, I)`, :obj:`torch.float64`, a new tensor
    """
    scores = scores.detach().to(torch.float64)
    if bool(torch.isnan(scores).any()):
        raise ValueError("The scorer returned NaN scores; check the model or "
                         "embeddings (scores must be finite, or -inf for "
                         "candidates it excludes itself)")
    finite = torch.isfinite(scores)
    scale = scores.abs().masked_fill(~finite, 0.0).amax(dim=1, keepdim=True)
    noise = torch.rand(scores.shape, generator=generator, dtype=torch.float64)
    return scores + (JITTER * (1.0 + scale)) * noise.to(scores.device)


def user_history(train_user: Tensor, train_item: Tensor,
                 num_users: int) -> Tuple[Tensor, Tensor]:
    r"""The CSR pointer over users of user-sorted train interactions and
    every user's last train item (:obj:`-1` for users without one).

    With interactions sorted by user and chronologically within a user,
    :obj:`last_item`, :obj:`ptr` and :obj:`train_item` are the
    leave-last-out :obj:`query_item`, :obj:`exclude_ptr` and
    :obj:`exclude_item` of all users (drop users with :obj:`last_item == -1`
    and re-base :obj:`ptr` accordingly).

    Shapes:
        - **input:** train_user :math:`(E)`, train_item :math:`(E)`
        - **output:** ptr :math:`(U + 1)`, last_item :math:`(U)`
    """
    if train_user.numel() > 1 and bool(
        (train_user[1:] < train_user[:-1]).any()):
        raise ValueError("'user_history': 'train_user' must be sorted")
    if train_user.numel() > 0 and (int(train_user.min()) < 0
                                   or int(train_user.max()) >= num_users):
        raise ValueError(f"'user_history': 'train_user' holds indices outside"
                         f" [0, {num_users})")
    ptr = cumsum(torch.bincount(train_user, minlength=num_users))
    last_item = torch.full((num_users, ), -1, dtype=torch.long,
                           device=train_item.device)
    has_item = ptr[1:] > ptr[:-1]
    last_item[has_item] = train_item[ptr[1:][has_item] - 1]
    return ptr, last_item


def _check_queries(query_item: Tensor, target_item: Tensor, fn: str) -> None:
    for name, x in (('query_item', query_item), ('target_item', target_item)):
        if not isinstance(x, Tensor) or x.dim() != 1 or x.dtype != torch.long:
            raise ValueError(f"'{fn}': '{name}' must be a 1-D LongTensor "
                             f"(got {getattr(x, 'dtype', type(x).__name__)} "
                             f"of shape {tuple(getattr(x, 'shape', ()))})")
    if query_item.numel() != target_item.numel():
        raise ValueError(f"'{fn}': 'query_item' and 'target_item' must have "
                         f"the same length (got {query_item.numel()} and "
                         f"{target_item.numel()})")
    if bool((query_item < 0).any()):
        raise ValueError(f"'{fn}': {int((query_item < 0).sum())} rows have "
                         f"query_item < 0 (users without a train item); drop "
                         f"them before evaluating")
    if bool((target_item < 0).any()):
        raise ValueError(f"'{fn}': 'target_item' holds negative indices")


def _check_exclusions(exclude_ptr: Tensor, exclude_item: Tensor, n: int,
                      fn: str) -> None:
    if exclude_ptr.dtype != torch.long or exclude_item.dtype != torch.long:
        raise ValueError(f"'{fn}': 'exclude_ptr' and 'exclude_item' must be "
                         f"LongTensors (got {exclude_ptr.dtype} and "
                         f"{exclude_item.dtype})")
    if exclude_ptr.dim() != 1 or exclude_ptr.numel() != n + 1 or (
            int(exclude_ptr[0]) != 0
            or int(exclude_ptr[-1]) != exclude_item.numel()
            or bool((exclude_ptr.diff() < 0).any())):
        raise ValueError(f"'{fn}': 'exclude_ptr' must be a non-decreasing "
                         f"CSR pointer of length n + 1 = {n + 1} running from"
                         f" 0 to len(exclude_item) = {exclude_item.numel()}")
    if bool((exclude_item < 0).any()):
        raise ValueError(f"'{fn}': 'exclude_item' holds negative indices")


def _score_chunk(scorer: Scorer, query: Tensor, generator: torch.Generator,
                 fn: str, *indices: Tensor) -> Tensor:
    r"""Scores a chunk, checks its shape and that the chunk's item
    :obj:`indices` address its columns, and jitters it."""
    with torch.no_grad():
        scores = scorer(query)
    if not isinstance(scores, Tensor) or scores.dim() != 2 or \
            scores.size(0) != query.numel():
        raise ValueError(f"'{fn}': the scorer returned scores of shape "
                         f"{tuple(getattr(scores, 'shape', ()))} for "
                         f"{query.numel()} queries (expected "
                         f"[{query.numel()}, num_items])")
    num_items = scores.size(1)
    for x in (query, ) + indices:
        if x.numel() > 0 and int(x.max()) >= num_items:
            raise ValueError(f"'{fn}': item index {int(x.max())} is out of "
                             f"range for a scorer over {num_items} items")
    return jitter_scores(scores, generator)


def top_k_items(
    scorer: Scorer,
    query_item: Tensor,
    exclude_ptr: Optional[Tensor] = None,
    exclude_item: Optional[Tensor] = None,
    k: int = 10,
    chunk_size: int = 1024,
    seed: int = 0,
) -> Tensor:
    r"""The top-:math:`k` items of every query, best first, never including
    row :math:`j`'s excluded items
    :obj:`exclude_item[exclude_ptr[j]:exclude_ptr[j + 1]]`. Rows with fewer
    than :math:`k` candidates are padded with :obj:`-1`. Ties are broken by
    the seeded jitter of the module docstring.

    Args:
        scorer (callable): Maps query items :math:`[c]` to scores
            :math:`[c, I]`.
        query_item (torch.Tensor): Query item per row.
        exclude_ptr (torch.Tensor, optional): CSR pointer of the exclude
            sets. (default: :obj:`None`)
        exclude_item (torch.Tensor, optional): Concatenated exclude sets.
            (default: :obj:`None`)
        k (int, optional): The number of items. (default: :obj:`10`)
        chunk_size (int, optional): Rows scored at once; memory is
            :math:`O(\text{chunk\_size} \cdot I)`. (default: :obj:`1024`)
        seed (int, optional): Seed of the tie-breaking jitter.
            (default: :obj:`0`)

    Shapes:
        - **input:** query_item :math:`(n)`, exclude_ptr :math:`(n + 1)`,
          exclude_item :math:`(m)`
        - **output:** :math:`(n, k)`, :obj:`torch.long`
    """
    return _top_k_items(scorer, query_item, exclude_ptr, exclude_item, k,
                        chunk_size, seed, 'top_k_items')


def _top_k_items(scorer: Scorer, query_item: Tensor,
                 exclude_ptr: Optional[Tensor], exclude_item: Optional[Tensor],
                 k: int, chunk_size: int, seed: int, fn: str,
                 target_item: Optional[Tensor] = None) -> Tensor:
    _check_queries(query_item, query_item, fn)
    n = query_item.numel()
    if (exclude_ptr is None) != (exclude_item is None):
        raise ValueError(f"'{fn}': give both 'exclude_ptr' and "
                         f"'exclude_item', or neither")
    if exclude_ptr is None or exclude_item is None:
        exclude_ptr = torch.zeros(n + 1, dtype=torch.long)
        exclude_item = torch.zeros(0, dtype=torch.long)
    _check_exclusions(exclude_ptr, exclude_item, n, fn)
    if int(k) != k or k < 1:
        raise ValueError(f"'{fn}': 'k' must be a positive integer (got {k})")
    if chunk_size < 1:
        raise ValueError(f"'{fn}': 'chunk_size' must be positive")

    generator = torch.Generator().manual_seed(seed)
    out = torch.full((n, k), -1, dtype=torch.long)
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        col = exclude_item[int(exclude_ptr[start]):int(exclude_ptr[end])]
        targets = () if target_item is None else (target_item[start:end], )
        scores = _score_chunk(scorer, query_item[start:end], generator, fn,
                              col, *targets)
        count = exclude_ptr[start + 1:end + 1] - exclude_ptr[start:end]
        row = torch.arange(end - start).repeat_interleave(count)
        scores[row.to(scores.device), col.to(scores.device)] = float('-inf')

        top_score, top_index = scores.topk(min(k, scores.size(1)), dim=1)
        top_index = top_index.masked_fill(top_score == float('-inf'), -1)
        out[start:end, :top_index.size(1)] = top_index.cpu()
    return out


def evaluate_leave_last_out(
    scorer: Scorer,
    query_item: Tensor,
    target_item: Tensor,
    exclude_ptr: Tensor,
    exclude_item: Tensor,
    k: int = 10,
    chunk_size: int = 1024,
    seed: int = 0,
) -> float:
    r"""HR@:math:`k` of the leave-last-out protocol: row :math:`j` ranks all
    items except :obj:`exclude_item[exclude_ptr[j]:exclude_ptr[j + 1]]`
    (typically the user's train items) by :obj:`scorer(query_item[j])`, and
    hits if :obj:`target_item[j]` is among the top :math:`k`
    (:func:`top_k_items`, scored with
    :class:`~torch_geometric.metrics.LinkPredHitRatio`). A target that is
    itself excluded can never be a hit. Ties are broken by the seeded jitter
    of the module docstring.

    Args:
        scorer (callable): Maps query items :math:`[c]` to scores
            :math:`[c, I]`.
        query_item (torch.Tensor): Query item per row (typically the user's
            last train item); :obj:`-1` (no train item) is refused.
        target_item (torch.Tensor): Held-out item per row.
        exclude_ptr (torch.Tensor): CSR pointer of the exclude sets.
        exclude_item (torch.Tensor): Concatenated exclude sets.
        k (int, optional): The cut-off. (default: :obj:`10`)
        chunk_size (int, optional): Rows scored at once; memory is
            :math:`O(\text{chunk\_size} \cdot I)`. (default: :obj:`1024`)
        seed (int, optional): Seed of the tie-breaking jitter.
            (default: :obj:`0`)

    Returns:
        HR@:math:`k` (:obj:`nan` for zero rows).

    Shapes:
        - **input:** query_item :math:`(n)`, target_item :math:`(n)`,
          exclude_ptr :math:`(n + 1)`, exclude_item :math:`(m)`
    """
    fn = 'evaluate_leave_last_out'
    _check_queries(query_item, target_item, fn)
    top = _top_k_items(scorer, query_item, exclude_ptr, exclude_item, k,
                       chunk_size, seed, fn, target_item)
    n = query_item.numel()
    if n == 0:
        return float('nan')
    # Padding (-1) must never match a target: point it past every index.
    sentinel = max(int(top.max()), int(target_item.max())) + 1
    top = top.masked_fill(top < 0, sentinel)
    metric = LinkPredHitRatio(k)
    metric.update(top, torch.stack([torch.arange(n), target_item.cpu()]))
    return float(metric.compute())


def evaluate_pairs(
    scorer: Scorer,
    query_item: Tensor,
    target_item: Tensor,
    k: int = 10,
    mrr_scale: Optional[int] = None,
    chunk_size: int = 1024,
    seed: int = 0,
) -> Dict[str, float]:
    r"""The paper's hit-rate@:math:`k` and scaled MRR on held-out
    :math:`(q, i)` pairs: each target is ranked among all items except
    :math:`q`. Ties are broken by the seeded jitter of the module docstring.

    Args:
        scorer (callable): Maps query items :math:`[c]` to scores
            :math:`[c, I]`.
        query_item (torch.Tensor): Query item per pair.
        target_item (torch.Tensor): Target item per pair (must differ from
            the query).
        k (int, optional): The hit-rate cut-off. (default: :obj:`10`)
        mrr_scale (int, optional): The MRR scale; :obj:`None` scales the
            paper's 100-per-5M to the pool,
            :func:`~pinsage_pyg.evaluation.metrics.default_mrr_scale`.
            (default: :obj:`None`)
        chunk_size (int, optional): Rows scored at once.
            (default: :obj:`1024`)
        seed (int, optional): Seed of the tie-breaking jitter.
            (default: :obj:`0`)

    Returns:
        :obj:`{f'hit_rate@{k}': float, 'scaled_mrr': float,
        'mrr_scale': int}` (:obj:`nan` metrics for zero pairs)
    """
    fn = 'evaluate_pairs'
    _check_queries(query_item, target_item, fn)
    same = query_item == target_item
    if bool(same.any()):
        raise ValueError(f"'{fn}': {int(same.sum())} pairs have query_item "
                         f"== target_item; the target is not in the pool "
                         f"(all items except the query), drop those pairs")
    if int(k) != k or k < 1:
        raise ValueError(f"'{fn}': 'k' must be a positive integer (got {k})")
    if chunk_size < 1:
        raise ValueError(f"'{fn}': 'chunk_size' must be positive")

    generator = torch.Generator().manual_seed(seed)
    tie_generator = torch.Generator().manual_seed(seed + 1)
    hit_rate: Optional[HitRate] = None
    mrr: Optional[ScaledMRR] = None
    n = query_item.numel()
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        query, target = query_item[start:end], target_item[start:end]
        scores = _score_chunk(scorer, query, generator, fn, target)
        if hit_rate is None or mrr is None:
            if mrr_scale is None:
                mrr_scale = default_mrr_scale(scores.size(1) - 1)
            hit_rate, mrr = HitRate(k), ScaledMRR(mrr_scale)
        rows = torch.arange(end - start, device=scores.device)
        scores[rows, query.to(scores.device)] = float('-inf')
        rank = target_rank(scores, target, tie_generator).cpu()
        hit_rate.update(rank)
        mrr.update(rank)
    if hit_rate is None or mrr is None:
        return {f'hit_rate@{k}': float('nan'), 'scaled_mrr': float('nan'),
                'mrr_scale': mrr_scale}
    return {
        f'hit_rate@{k}': float(hit_rate.compute()),
        'scaled_mrr': float(mrr.compute()),
        'mrr_scale': mrr_scale,
    }


class LeaveLastOutSplit(NamedTuple):
    r"""The inputs of :func:`evaluate_leave_last_out` for one split."""
    query_item: Tensor
    target_item: Tensor
    exclude_ptr: Tensor
    exclude_item: Tensor


class PairSplit(NamedTuple):
    r"""The inputs of :func:`evaluate_pairs` for one split."""
    query_item: Tensor
    target_item: Tensor


def evaluate_scorers(
    scorers: Mapping[str, Scorer],
    leave_last_out: Optional[Mapping[str, LeaveLastOutSplit]] = None,
    pairs: Optional[Mapping[str, PairSplit]] = None,
    k: int = 10,
    mrr_scale: Optional[int] = None,
    chunk_size: int = 1024,
    seed: int = 0,
) -> pd.DataFrame:
    r"""Evaluates several scorers on several splits into one table.

    One row per scorer (in the given order) with columns :obj:`method`,
    then :obj:`f'{split}_hr@{k}'` for every leave-last-out split, then
    :obj:`f'{split}_hit_rate@{k}'` and :obj:`f'{split}_scaled_mrr'` for every
    pair split. The MRR scale of each pair split is stored in
    :obj:`df.attrs['mrr_scale']` (a dict by split). All scorers share the
    same :obj:`seed`, hence the same tie-breaking jitter.

    Example:
        >>> df = evaluate_scorers(
        ...     {'popularity': pop, 'transition': trans},
        ...     leave_last_out={'val': val_split, 'test': test_split},
        ...     pairs={'test': test_pairs})
        >>> list(df.columns)
        ['method', 'val_hr@10', 'test_hr@10', 'test_hit_rate@10',
         'test_scaled_mrr']
    """
    leave_last_out = dict(leave_last_out or {})
    pairs = dict(pairs or {})
    if not leave_last_out and not pairs:
        raise ValueError("'evaluate_scorers' needs at least one split in "
                         "'leave_last_out' or 'pairs'")
    rows, scales = [], {}
    for method, scorer in scorers.items():
        row: Dict[str, object] = {'method': method}
        for split, data in leave_last_out.items():
            row[f'{split}_hr@{k}'] = evaluate_leave_last_out(
                scorer, *data, k=k, chunk_size=chunk_size, seed=seed)
        for split, data in pairs.items():
            out = evaluate_pairs(scorer, *data, k=k, mrr_scale=mrr_scale,
                                 chunk_size=chunk_size, seed=seed)
            row[f'{split}_hit_rate@{k}'] = out[f'hit_rate@{k}']
            row[f'{split}_scaled_mrr'] = out['scaled_mrr']
            scales[split] = out['mrr_scale']
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs['mrr_scale'] = scales
    return df


def baseline_scorers(ds: PinSageDataset, cfg: Mapping[str, Any],
                     seed: int = 0) -> Dict[str, Scorer]:
    r"""The reference methods PinSage must beat, fitted on the train
    interactions of :obj:`ds`: popularity, co-occurrence cosine, transition
    counts with :obj:`cfg['transition']` (and :obj:`cfg['transition_tuned']`
    when given), random. :obj:`cfg` is the ``evaluate`` config group."""
    tr = dict(cfg.get('transition') or {})
    tt = dict(cfg.get('transition_tuned') or {})
    out = {
        'popularity': popularity_scorer(ds.train_item, ds.num_items),
        'co-occurrence cosine': cooccurrence_scorer(
            ds.train_user, ds.train_item, ds.num_users, ds.num_items),
        f"transition (next {tr.get('window', 3)})": transition_scorer(
            ds.train_user, ds.train_item, ds.num_items, **tr),
    }
    if tt:
        out['transition (tuned)'] = transition_scorer(
            ds.train_user, ds.train_item, ds.num_items, **tt)
    out['random'] = random_scorer(ds.num_items, seed=seed)
    return out


def evaluation_splits(ds: PinSageDataset
                      ) -> Tuple[Dict[str, LeaveLastOutSplit],
                                 Dict[str, PairSplit]]:
    r"""Leave-last-out and held-out-pair inputs for val and test of
    :obj:`ds`: ``(leave_last_out, pairs)``, each a dict by split, the
    inputs of :func:`evaluate_scorers`."""
    last = ds.last_train_item()
    lloo, pairs = {}, {}
    for split in ('val', 'test'):
        user, target = getattr(ds, split)
        query = last[user]
        keep = query >= 0
        user, query, target = user[keep], query[keep], target[keep]
        ptr, pos = gather_csr_rows(ds.train_ptr, user)
        items = ds.train_item[pos]
        lloo[split] = LeaveLastOutSplit(query, target, ptr, items)
    # The paper's metrics on held-out consecutive pairs: (last train item ->
    # validation item) and (validation item -> test item).
    for split, (q, t) in {
        'val': (last[ds.val[0]], ds.val[1]),
        'test': (_val_item(ds)[ds.test[0]], ds.test[1]),
    }.items():
        keep = (q >= 0) & (q != t)
        pairs[split] = PairSplit(q[keep], t[keep])
    return lloo, pairs


def _val_item(ds: PinSageDataset) -> torch.Tensor:
    out = torch.full((ds.num_users, ), -1, dtype=torch.long)
    out[ds.val[0]] = ds.val[1]
    return out
