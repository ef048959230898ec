r"""PinSage's hard negatives (Ying et al., KDD 2018, Sec. 3.3): items ranked
in a band by Personalized PageRank (PPR) with respect to the query item --
related to the query, but not its best matches.

Two vectorised PPR approximations over the item-user graph, each for a
whole batch of query items at once (no Python loop over queries):

* ``method="walk"`` (scales to any graph): random walks with
  restart from every query; the visit counts estimate PPR. Cost is
  :math:`O(B \cdot W \cdot L)` for :math:`B` queries, independent of the
  graph size; memory is that of the visits.
* ``method="power"`` (exact up to truncation, small graphs): power
  iteration on a dense ``[num_items, B]`` score matrix with two sparse
  matmuls per iteration; cost :math:`O(I \cdot |E| \cdot B)`, memory
  :math:`O(|\mathcal{I}| \cdot B)`.

The band is given relative to the catalogue size (see :func:`band_ranks`),
so one default serves 1.7K, 3.7K and 10M items.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from pinsage_pyg.config import HardNegativeConfig
from pinsage_pyg.sampler.walks import (BipartiteCSR, _importance_neighbors,
                                       check_ids)

METHODS = ('auto', 'walk', 'power')
#: ``method='auto'`` uses exact power iteration while ``items x edges`` (the
#: work of one iteration for a full table of queries) is at most this.
AUTO_POWER_MAX_WORK = 1_000_000_000


def resolve_method(csr: BipartiteCSR, method: str) -> str:
    r"""``auto`` -> ``power`` for small graphs (``num_items x num_edges <=``
    :data:`AUTO_POWER_MAX_WORK`, e.g. MovieLens-100K), else ``walk``."""
    if method != 'auto':
        return method
    work = csr.num_items * csr.item_users.numel()
    return 'power' if work <= AUTO_POWER_MAX_WORK else 'walk'


def band_ranks(num_items: int, start: float = 0.02, end: float = 0.05,
               max_start: int = 2000, max_end: int = 5000
               ) -> Tuple[int, int]:
    r"""The hard-negative rank band ``[lo, hi)`` (0 = the query's best
    match other than itself) for a catalogue of :obj:`num_items` items.

    ``lo = min(floor(start * num_items), max_start)`` and
    ``hi = min(ceil(end * num_items), max_end)``: a fixed fraction of small
    catalogues, the paper's ranks 2000-5000 for large ones. Defaults give
    ranks 33-85 for ML-100K (1,682 items), 77-195 for ML-1M (3,883) and
    2000-5000 for 10M items.
    """
    if num_items < 2:
        raise ValueError(f"a hard-negative band needs >= 2 items (got "
                         f"{num_items})")
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"band fractions must satisfy 0 <= start < end <= 1 "
                         f"(got start={start}, end={end})")
    if not 0 <= max_start < max_end:
        raise ValueError(f"band caps must satisfy 0 <= max_start < max_end "
                         f"(got {max_start}, {max_end})")
    lo = min(int(math.floor(start * num_items)), max_start)
    hi = min(int(math.ceil(end * num_items)), max_end, num_items - 1)
    if hi <= lo:
        raise ValueError(f"the hard-negative band [{lo}, {hi}) is empty for "
                         f"{num_items} items; widen it (start/end)")
    return lo, hi


def default_num_walks(k: int, walk_length: int) -> int:
    r"""Walks per query that :func:`ppr_topk` uses by default for the top
    :obj:`k`: about 32 visits per requested rank."""
    return max(1, math.ceil(32 * k / walk_length))


def transition_matrices(csr: BipartiteCSR) -> Tuple[Tensor, Tensor]:
    r"""Sparse CSR matrices of the two hops of an item -> user -> item step
    (uniform choice at each hop): ``to_user [num_users, num_items]`` with
    entries ``1 / deg(i)`` and ``to_item [num_items, num_users]`` with
    entries ``1 / deg(u)``, so that ``to_item @ (to_user @ r)`` moves item
    mass one step. Mass on items without users is dropped."""
    dev = csr.item_ptr.device
    item_deg = csr.item_ptr[1:] - csr.item_ptr[:-1]
    user_deg = csr.user_ptr[1:] - csr.user_ptr[:-1]
    item = torch.repeat_interleave(torch.arange(csr.num_items, device=dev),
                                   item_deg)
    user = torch.repeat_interleave(torch.arange(csr.num_users, device=dev),
                                   user_deg)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter('ignore', UserWarning)
        to_user = torch.sparse_coo_tensor(
            torch.stack([csr.item_users, item]),
            1.0 / item_deg[item].float(), (csr.num_users, csr.num_items),
            check_invariants=True)
        to_item = torch.sparse_coo_tensor(
            torch.stack([csr.user_items, user]),
            1.0 / user_deg[user].float(), (csr.num_items, csr.num_users),
            check_invariants=True)
        return (to_user.coalesce().to_sparse_csr(),
                to_item.coalesce().to_sparse_csr())


def personalized_pagerank(csr: BipartiteCSR, queries: Tensor,
                          restart_prob: float = 0.3, num_iters: int = 20
                          ) -> Tensor:
    r"""Exact-up-to-truncation PPR of all items for a batch of queries by
    power iteration:

    .. math::
        \mathbf{r}^{(t+1)} = \alpha \mathbf{e}_q + (1 - \alpha)
        \mathbf{P}^\top \mathbf{r}^{(t)} + (1 - \alpha)\, \ell^{(t)}
        \mathbf{e}_q

    where :math:`\mathbf{P}` is the item -> user -> item transition matrix
    and :math:`\ell^{(t)}` the mass stranded on items without users (sent
    back to the query, as :func:`~pinsage_pyg.sampler.random_walk` does).
    The truncation error is at most :math:`(1 - \alpha)^{I}`.

    Returns:
        Tensor ``[B, num_items]``: scores per query (each row sums to 1).
    """
    if not 0.0 < restart_prob < 1.0:
        raise ValueError(f"restart_prob must be in (0, 1) (got "
                         f"{restart_prob})")
    if num_iters < 1:
        raise ValueError(f"num_iters must be >= 1 (got {num_iters})")
    queries = check_ids(queries, csr.num_items, 'PPR queries')
    b = queries.numel()
    to_user, to_item = transition_matrices(csr)
    e = torch.zeros(csr.num_items, b, device=queries.device)
    e[queries, torch.arange(b, device=queries.device)] = 1.0
    r = e.clone()
    for _ in range(num_iters):
        moved = to_item @ (to_user @ r)
        lost = (1.0 - moved.sum(dim=0, keepdim=True)).clamp(min=0)
        r = restart_prob * e + (1 - restart_prob) * (moved + lost * e)
    return r.t()


def ppr_topk(csr: BipartiteCSR, queries: Tensor, k: int,
             method: str = 'auto', restart_prob: float = 0.3,
             walk_length: int = 8, num_walks: Optional[int] = None,
             num_iters: int = 20,
             generator: Optional[torch.Generator] = None
             ) -> Tuple[Tensor, Tensor]:
    r"""The :obj:`k` items with the highest PPR w.r.t. each query (the
    query itself excluded), best first.

    Args:
        csr (BipartiteCSR): The item-user graph (train interactions only).
        queries (LongTensor): Query items ``[B]``.
        k (int): How many ranks to return.
        method (str): ``"walk"`` (random walks with restart), ``"power"``
            (power iteration, dense ``[num_items, B]``) or ``"auto"``
            (see :func:`resolve_method`).
        restart_prob (float): Restart probability :math:`\alpha` per item
            step.
        walk_length (int): Item steps per walk (``"walk"``).
        num_walks (int, optional): Walks per query (``"walk"``); default
            ``ceil(32 * k / walk_length)``, i.e. about 32 visits per
            requested rank.
        num_iters (int): Power iterations (``"power"``).

    Returns:
        ``(items, scores)``, both ``[B, k]``: ranked items and their PPR
        estimates; ``-1`` / ``0`` where fewer than :obj:`k` items were
        reached.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} (got {method!r})")
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    method = resolve_method(csr, method)
    queries = check_ids(queries, csr.num_items, 'PPR queries')
    b, device = queries.numel(), queries.device
    items = torch.full((b, k), -1, dtype=torch.long, device=device)
    scores = torch.zeros(b, k, device=device)
    if b == 0:
        return items, scores
    if method == 'power':
        ppr = personalized_pagerank(csr, queries, restart_prob, num_iters)
        ppr[torch.arange(b, device=device), queries] = -1.0
        kk = min(k, csr.num_items - 1)
        # Ties broken by the smaller item index (sorted, stable):
        order = torch.sort(-ppr, dim=1, stable=True)[1][:, :kk]
        val = ppr.gather(1, order)
        ok = val > 0
        items[:, :kk] = torch.where(ok, order, torch.full_like(order, -1))
        scores[:, :kk] = torch.where(ok, val, torch.zeros_like(val))
        return items, scores
    if num_walks is None:
        num_walks = default_num_walks(k, walk_length)
    row, item, weight = _importance_neighbors(
        csr, queries, k, num_walks, walk_length, restart_prob, generator,
        'auto', None, None)
    start = torch.searchsorted(row, torch.arange(b, device=device))
    rank = torch.arange(row.numel(), device=device) - start[row]
    items[row, rank] = item
    scores[row, rank] = weight
    return items, scores


class HardNegativeMiner:
    r"""Draws per-example hard negatives for (query, positive) pairs.

    The band of every query item -- the items at PPR ranks ``[lo, hi)``,
    see :func:`band_ranks` -- is computed once for all :obj:`query_items`
    in batches of :obj:`batch_size` (PPR w.r.t. an item does not change
    across epochs; memory ``4 * len(query_items) * (hi - lo)`` bytes) and
    then reused. :meth:`sample` draws :obj:`num` items uniformly from the
    band of each pair's query, never the pair's positive, nor any item the
    pair's user engaged with in training (the query is never in its own
    band). Slots that cannot be filled (a band with too few admissible
    items) are returned as ``-1``.

    Args:
        csr (BipartiteCSR): The item-user graph (train interactions).
        query_items (LongTensor): Items that occur as queries.
        user_items_ptr, user_items (LongTensor): CSR of every user's train
            items (the exclusion set).
        config (HardNegativeConfig): Band and PPR settings.
        batch_size (int, optional): Queries per PPR batch while building
            the table; default: as many as keep a batch's work (walk visits
            or dense power-iteration entries) near :obj:`max_batch_work`.
        max_batch_work (int): See :obj:`batch_size`. (default: ``2e7``)
    """
    def __init__(self, csr: BipartiteCSR, query_items: Tensor,
                 user_items_ptr: Tensor, user_items: Tensor,
                 config: Optional[HardNegativeConfig] = None,
                 batch_size: Optional[int] = None,
                 max_batch_work: int = 20_000_000):
        self.config = c = config or HardNegativeConfig()
        self.num_items = csr.num_items
        self.lo, self.hi = band_ranks(csr.num_items, c.band_start, c.band_end,
                                      c.band_max_start, c.band_max_end)
        query_items = torch.unique(check_ids(
            query_items, csr.num_items, 'HardNegativeMiner query_items'))
        user_items = check_ids(user_items, csr.num_items,
                               'HardNegativeMiner user_items')
        gen = torch.Generator(device=query_items.device).manual_seed(c.seed)
        if batch_size is None:
            batch_size = max(1, max_batch_work // self.work_per_query(csr))
        rows = []
        for s in range(0, query_items.numel(), batch_size):
            top, _ = ppr_topk(csr, query_items[s:s + batch_size], self.hi,
                              c.method, c.restart_prob, c.walk_length,
                              c.num_walks, c.num_iters, generator=gen)
            rows.append(top[:, self.lo:].to(torch.int32))
        band = torch.cat(rows) if rows else torch.empty(
            0, self.hi - self.lo, dtype=torch.int32)
        # Row of each item in the table (-1: not a query item):
        self.row_of = torch.full((csr.num_items, ), -1, dtype=torch.long)
        self.row_of[query_items] = torch.arange(query_items.numel())
        self.band = band
        # Sorted (user * num_items + item) keys for membership tests:
        num_users = user_items_ptr.numel() - 1
        user = torch.repeat_interleave(torch.arange(num_users),
                                       user_items_ptr[1:] - user_items_ptr[:-1])
        self.user_keys = torch.unique(user * csr.num_items + user_items.long())

    def work_per_query(self, csr: BipartiteCSR) -> int:
        r"""Memory units one query costs: walk visits, or dense scores."""
        c = self.config
        if resolve_method(csr, c.method) == 'power':
            return csr.num_items
        walks = c.num_walks or default_num_walks(self.hi, c.walk_length)
        return walks * c.walk_length

    @property
    def band_size(self) -> int:
        return self.hi - self.lo

    def coverage(self) -> float:
        r"""Fraction of band slots filled (queries whose walks reach fewer
        than ``hi`` items have partial bands)."""
        if self.band.numel() == 0:
            return 0.0
        return float((self.band >= 0).float().mean())

    def nbytes(self) -> int:
        return self.band.numel() * self.band.element_size()

    def sample(self, query: Tensor, pos: Tensor, user: Tensor, num: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
        r"""``[B, num]`` hard negatives for pairs ``(query, pos)`` of
        ``user`` (all ``[B]`` global ids); ``-1`` where none is left."""
        b = query.numel()
        if num <= 0:
            return torch.empty(b, 0, dtype=torch.long)
        if num > self.band_size:
            raise ValueError(f"{num} hard negatives per example, but the band "
                             f"[{self.lo}, {self.hi}) holds {self.band_size}")
        row = self.row_of[check_ids(query, self.num_items,
                                    'hard-negative queries')]
        if bool((row < 0).any()):
            raise ValueError("hard negatives requested for a query item that "
                             "was not given to the miner (query_items)")
        cand = self.band[row].long()                        # [B, M]
        keys = user.long().view(-1, 1) * self.num_items + cand.clamp(min=0)
        pos_in = torch.searchsorted(self.user_keys, keys).clamp(
            max=max(self.user_keys.numel() - 1, 0))
        engaged = self.user_keys[pos_in] == keys if self.user_keys.numel() \
            else torch.zeros_like(keys, dtype=torch.bool)
        ok = (cand >= 0) & ~engaged & (cand != pos.long().view(-1, 1))
        # Uniform choice among the admissible candidates: random keys,
        # inadmissible ones pushed to the end.
        r = torch.rand(cand.shape, generator=generator) + (~ok).float() * 2
        pick = torch.topk(r, num, dim=1, largest=False).indices
        out = cand.gather(1, pick)
        return torch.where(ok.gather(1, pick), out, torch.full_like(out, -1))
