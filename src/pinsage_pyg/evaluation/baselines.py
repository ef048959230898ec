r"""Non-learned item-to-item baselines, as *item scorers*.

An item scorer is any callable ``scorer(query_items) -> scores`` mapping a
LongTensor of :math:`c` query items to a dense :math:`[c, I]` block of
candidate scores (higher = more similar / more likely next). Scorers are
called on chunks of queries by :mod:`pinsage_pyg.evaluation.protocols` and
never materialise a dense :math:`I \times I` matrix: pairwise statistics are
kept as sparse CSR matrices and densified one chunk of rows at a time.

Train interactions are given as two LongTensors ``train_user`` and
``train_item`` of equal length, sorted by user and, within a user,
chronologically (the given order is the time order).
"""
import warnings
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from torch_geometric.utils import cumsum

from pinsage_pyg.utils import gather_csr_rows

__all__ = [
    'ItemScorer',
    'Scorer',
    'PopularityScorer',
    'RandomScorer',
    'CooccurrenceScorer',
    'TransitionScorer',
    'EmbeddingScorer',
    'popularity_scorer',
    'random_scorer',
    'cooccurrence_scorer',
    'transition_scorer',
    'embedding_scorer',
]

#: Anything that maps query items :math:`[c]` to scores :math:`[c, I]`.
Scorer = Callable[[Tensor], Tensor]


# Helpers #####################################################################


def _check_index(x: Tensor, size: int, what: str, fn: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 1:
        raise ValueError(f"'{fn}': '{what}' must be a 1-D LongTensor (got "
                         f"{type(x).__name__} of shape "
                         f"{tuple(getattr(x, 'shape', ()))})")
    if x.dtype != torch.long:
        raise ValueError(f"'{fn}': '{what}' must have dtype torch.long "
                         f"(got {x.dtype})")
    if x.numel() > 0 and (int(x.min()) < 0 or int(x.max()) >= size):
        raise ValueError(f"'{fn}': '{what}' holds indices outside [0, {size})"
                         f" (min {int(x.min())}, max {int(x.max())}); map "
                         f"ids to contiguous indices first")
    return x


def _check_interactions(train_user: Tensor, train_item: Tensor,
                        num_users: Optional[int], num_items: int,
                        fn: str) -> None:
    _check_index(train_item, num_items, 'train_item', fn)
    _check_index(train_user, num_users if num_users is not None else
                 torch.iinfo(torch.long).max, 'train_user', fn)
    if train_user.numel() != train_item.numel():
        raise ValueError(f"'{fn}': 'train_user' and 'train_item' must have "
                         f"the same length (got {train_user.numel()} and "
                         f"{train_item.numel()})")
    if train_user.numel() > 1 and bool((train_user[1:] < train_user[:-1])
                                       .any()):
        raise ValueError(f"'{fn}': 'train_user' must be sorted (by user, "
                         f"then chronologically within a user); sort the "
                         f"interactions with a stable sort on the user")


def _csr_from_sorted_rows(row: Tensor, col: Tensor, value: Tensor,
                          num_rows: int) -> Tuple[Tensor, Tensor, Tensor]:
    r"""(ptr, col, value) of a CSR matrix from entries sorted by row."""
    ptr = cumsum(torch.bincount(row, minlength=num_rows))
    return ptr, col, value


def _dense_rows(ptr: Tensor, col: Tensor, value: Tensor,
                num_cols: int) -> Tensor:
    r"""Densifies a (small) CSR matrix given as (ptr, col, value)."""
    num_rows = ptr.numel() - 1
    out = value.new_zeros(num_rows * num_cols)
    row = torch.arange(num_rows, device=ptr.device).repeat_interleave(
        ptr.diff())
    out[row * num_cols + col] = value  # CSR entries are unique.
    return out.view(num_rows, num_cols)


def _sparse_csr(ptr: Tensor, col: Tensor, value: Tensor,
                size: Tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "Sparse CSR support is in beta".
        warnings.simplefilter('ignore', UserWarning)
        return torch.sparse_csr_tensor(ptr, col, value, size)


# Scorers #####################################################################


class ItemScorer:
    r"""Base class of the item scorers: validates the query items and
    delegates to :meth:`score`.

    Attributes:
        name (str): A short name for result tables.
        num_items (int): The number of items :math:`I` (score columns).

    Shapes:
        - **input:** query_items :math:`(c)`
        - **output:** scores :math:`(c, I)`
    """
    name: str = 'scorer'
    num_items: int

    def __call__(self, query_items: Tensor) -> Tensor:
        query_items = _check_index(query_items, self.num_items,
                                   'query_items', self.__class__.__name__)
        return self.score(query_items)

    def score(self, query_items: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(num_items={self.num_items})'


class PopularityScorer(ItemScorer):
    r"""Scores every candidate by its number of train interactions, for
    every query alike. See :func:`popularity_scorer`."""
    name = 'popularity'

    def __init__(self, train_item: Tensor, num_items: int) -> None:
        _check_index(train_item, num_items, 'train_item', 'popularity_scorer')
        self.num_items = num_items
        self.count = torch.bincount(train_item, minlength=num_items).to(
            torch.get_default_dtype())

    def score(self, query_items: Tensor) -> Tensor:
        return self.count.view(1, -1).repeat(query_items.numel(), 1)


class RandomScorer(ItemScorer):
    r"""I.i.d. :math:`\mathcal{U}(0, 1)` scores from a private generator.
    See :func:`random_scorer`."""
    name = 'random'

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items = num_items
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def score(self, query_items: Tensor) -> Tensor:
        return torch.rand(query_items.numel(), self.num_items,
                          generator=self.generator)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_items={self.num_items}, '
                f'seed={self.seed})')


class CooccurrenceScorer(ItemScorer):
    r"""Cosine similarity of binary user-incidence vectors. See
    :func:`cooccurrence_scorer`."""
    name = 'cooccurrence'

    def __init__(self, train_user: Tensor, train_item: Tensor,
                 num_users: int, num_items: int) -> None:
        _check_interactions(train_user, train_item, num_users, num_items,
                            'cooccurrence_scorer')
        self.num_users, self.num_items = num_users, num_items
        # Distinct (user, item) pairs, sorted by user, then item:
        key = torch.unique(train_user * num_items + train_item)
        user, item = key // num_items, key % num_items
        degree = torch.bincount(item, minlength=num_items)
        value = degree.clamp(min=1).to(torch.get_default_dtype()).rsqrt()
        value = value[item]
        # X: [U, I] with L2-normalised columns, as a torch CSR matrix:
        self.user_item = _sparse_csr(
            *_csr_from_sorted_rows(user, item, value, num_users),
            (num_users, num_items))
        # X^T: [I, U] as raw CSR arrays, to gather the query rows from:
        perm = torch.argsort(item, stable=True)
        self.item_ptr, self.item_user, self.item_value = \
            _csr_from_sorted_rows(item[perm], user[perm], value[perm],
                                  num_items)

    def score(self, query_items: Tensor) -> Tensor:
        ptr, pos = gather_csr_rows(self.item_ptr, query_items)
        query_users = _sparse_csr(ptr, self.item_user[pos],
                                  self.item_value[pos],
                                  (query_items.numel(), self.num_users))
        out = query_users @ self.user_item  # Sparse [c, I].
        return _dense_rows(out.crow_indices(), out.col_indices(),
                           out.values(), self.num_items)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_users={self.num_users}, '
                f'num_items={self.num_items})')


class TransitionScorer(ItemScorer):
    r"""Windowed, decayed transition counts within user sequences. See
    :func:`transition_scorer`."""
    name = 'transition'

    def __init__(self, train_user: Tensor, train_item: Tensor,
                 num_items: int, window: int = 3, decay: float = 1.0,
                 backward_weight: float = 0.0) -> None:
        fn = 'transition_scorer'
        _check_interactions(train_user, train_item, None, num_items, fn)
        if int(window) != window or window < 1:
            raise ValueError(f"'{fn}': 'window' must be a positive integer "
                             f"(got {window})")
        if not decay > 0:
            raise ValueError(f"'{fn}': 'decay' must be positive (got {decay})")
        if not backward_weight >= 0:
            raise ValueError(f"'{fn}': 'backward_weight' must be non-negative"
                             f" (got {backward_weight})")
        self.num_items = num_items
        self.window, self.decay = int(window), float(decay)
        self.backward_weight = float(backward_weight)

        src, dst, weight = [], [], []
        for d in range(1, self.window + 1):  # Loop over offsets only.
            same_user = train_user[d:] == train_user[:-d]
            before = train_item[:-d][same_user]
            after = train_item[d:][same_user]
            w = self.decay**(d - 1)
            src.append(before)
            dst.append(after)
            weight.append(torch.full((before.numel(), ), w,
                                     dtype=torch.float64))
            if self.backward_weight > 0:
                src.append(after)
                dst.append(before)
                weight.append(
                    torch.full((before.numel(), ), self.backward_weight * w,
                               dtype=torch.float64))
        key = torch.cat(src) * num_items + torch.cat(dst)
        key, inverse = torch.unique(key, return_inverse=True)
        value = torch.zeros(key.numel(), dtype=torch.float64)
        value.index_add_(0, inverse, torch.cat(weight))
        self.ptr, self.col, self.value = _csr_from_sorted_rows(
            key // num_items, key % num_items,
            value.to(torch.get_default_dtype()), num_items)

    @property
    def num_transitions(self) -> int:
        r"""The number of non-zero entries of the :math:`I \times I` matrix."""
        return self.col.numel()

    def score(self, query_items: Tensor) -> Tensor:
        ptr, pos = gather_csr_rows(self.ptr, query_items)
        return _dense_rows(ptr, self.col[pos], self.value[pos],
                           self.num_items)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_items={self.num_items}, '
                f'window={self.window}, decay={self.decay}, '
                f'backward_weight={self.backward_weight})')


class EmbeddingScorer(ItemScorer):
    r"""Dot products of query and candidate embeddings. See
    :func:`embedding_scorer`."""
    name = 'embedding'

    def __init__(self, query_emb: Tensor,
                 item_emb: Optional[Tensor] = None) -> None:
        item_emb = query_emb if item_emb is None else item_emb
        if query_emb.dim() != 2 or item_emb.dim() != 2 or \
                query_emb.size(1) != item_emb.size(1):
            raise ValueError(f"'embedding_scorer' expects 'query_emb' [I, d] "
                             f"and 'item_emb' [I, d] (got "
                             f"{tuple(query_emb.shape)} and "
                             f"{tuple(item_emb.shape)})")
        self.query_emb = query_emb.detach()
        self.item_emb = item_emb.detach()
        self.num_items = item_emb.size(0)
        self.num_queries = query_emb.size(0)

    def __call__(self, query_items: Tensor) -> Tensor:
        query_items = _check_index(query_items, self.num_queries,
                                   'query_items', 'EmbeddingScorer')
        return self.score(query_items)

    def score(self, query_items: Tensor) -> Tensor:
        query = self.query_emb[query_items.to(self.query_emb.device)]
        return query @ self.item_emb.t()

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_items={self.num_items}, '
                f'dim={self.item_emb.size(1)})')


# Factories ###################################################################


def popularity_scorer(train_item: Tensor, num_items: int) -> PopularityScorer:
    r"""Scores candidate :math:`i` by its number of train interactions,
    :math:`s(i \mid q) = |\{(u, i) \in \mathcal{E}_{train}\}|` (the same row
    for every query).

    Args:
        train_item (torch.Tensor): The item of every train interaction.
        num_items (int): The number of items :math:`I`.
    """
    return PopularityScorer(train_item, num_items)


def random_scorer(num_items: int, seed: int = 0) -> RandomScorer:
    r"""I.i.d. :math:`\mathcal{U}(0, 1)` scores. The scores of the
    :math:`n`-th call depend on :obj:`seed` and on the number of rows
    scored before, so the same sequence of queries (in any chunking)
    reproduces the same scores; create a fresh scorer to start over.

    Args:
        num_items (int): The number of items :math:`I`.
        seed (int, optional): The seed of the private generator.
            (default: :obj:`0`)
    """
    return RandomScorer(num_items, seed)


def cooccurrence_scorer(train_user: Tensor, train_item: Tensor,
                        num_users: int, num_items: int) -> CooccurrenceScorer:
    r"""Item co-occurrence cosine. Each item is its binary user-incidence
    vector :math:`\mathbf{x}_i \in \{0, 1\}^U` (repeated interactions count
    once) and

    .. math::
        s(i \mid q) = \frac{\mathbf{x}_q^\top \mathbf{x}_i}
        {\|\mathbf{x}_q\|_2 \, \|\mathbf{x}_i\|_2}

    (:obj:`0` for items without train users). Rows are computed per query
    chunk as a sparse-sparse product, never as a dense :math:`I \times I`
    matrix.

    Args:
        train_user (torch.Tensor): The user of every train interaction,
            sorted.
        train_item (torch.Tensor): The item of every train interaction.
        num_users (int): The number of users :math:`U`.
        num_items (int): The number of items :math:`I`.
    """
    return CooccurrenceScorer(train_user, train_item, num_users, num_items)


def transition_scorer(train_user: Tensor, train_item: Tensor, num_items: int,
                      window: int = 3, decay: float = 1.0,
                      backward_weight: float = 0.0) -> TransitionScorer:
    r"""Windowed transition counts: for every user sequence
    :math:`(v_1, v_2, \dots)` and position :math:`p` with :math:`v_p = q`,

    .. math::
        s(i \mid q) \mathrel{+}= \sum_{d=1}^{w} \gamma^{d-1} \left(
        [v_{p+d} = i] + \beta \, [v_{p-d} = i] \right),

    with window :math:`w`, decay :math:`\gamma` and backward weight
    :math:`\beta`. The sparse :math:`I \times I` matrix (at most
    :math:`w (1 + [\beta > 0])` entries per interaction) is built once;
    rows are densified per query chunk.

    Args:
        train_user (torch.Tensor): The user of every train interaction,
            sorted by user and chronologically within a user.
        train_item (torch.Tensor): The item of every train interaction.
        num_items (int): The number of items :math:`I`.
        window (int, optional): How many following items count.
            (default: :obj:`3`)
        decay (float, optional): Weight factor :math:`\gamma` per step.
            (default: :obj:`1.0`)
        backward_weight (float, optional): Weight :math:`\beta` of preceding
            items. (default: :obj:`0.0`)
    """
    return TransitionScorer(train_user, train_item, num_items, window, decay,
                            backward_weight)


def embedding_scorer(query_emb: Tensor,
                     item_emb: Optional[Tensor] = None) -> EmbeddingScorer:
    r"""Dot-product scores :math:`s(i \mid q) = \mathbf{z}_q^\top
    \mathbf{z}'_i` (cosine if the embeddings are L2-normalised).

    Args:
        query_emb (torch.Tensor): Query-side item embeddings :math:`[I, d]`.
        item_emb (torch.Tensor, optional): Candidate-side item embeddings
            :math:`[I, d]`; defaults to :obj:`query_emb`.
            (default: :obj:`None`)
    """
    return EmbeddingScorer(query_emb, item_emb)
