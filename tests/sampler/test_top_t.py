r"""Top-T counting on the fixed-width visit matrix against the global
unique/sort counting it replaced (kept here as the oracle)."""
import pytest
import torch

from pinsage_pyg.sampler import BipartiteCSR, importance_neighbors
from pinsage_pyg.sampler.walks import _keyed_walk, _top_t
from pinsage_pyg.utils import index_to_ptr


def oracle_top_t(visits, seeds, num_items, num_neighbors):
    r"""The previous implementation: one global unique over ``row * N +
    item`` keys, two stable sorts to order by (row, count desc, item asc),
    ranks within each row, top T, L1 normalisation."""
    n = seeds.numel()
    row = torch.arange(n).repeat_interleave(visits.size(1))
    visits = visits.reshape(-1)
    keep = (visits >= 0) & (visits != seeds[row])
    key = row[keep] * num_items + visits[keep]
    key, count = torch.unique(key, sorted=True, return_counts=True)
    row, item = key // num_items, key % num_items
    perm = torch.sort(count, descending=True, stable=True)[1]
    perm = perm[torch.sort(row[perm], stable=True)[1]]
    row, item, count = row[perm], item[perm], count[perm]
    group_start = index_to_ptr(row, n)
    rank = torch.arange(row.numel()) - group_start[row]
    top = rank < num_neighbors
    row, item, count = row[top], item[top], count[top].to(torch.float)
    total = torch.zeros(n).index_add_(0, row, count)
    return row, item, count / total[row]


def assert_same(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize('flat', [None, True, False])
@pytest.mark.parametrize('num_items,width,T', [(7, 12, 3), (50, 60, 50),
                                              (1000, 40, 10), (5, 3, 8)])
def test_exactly_the_old_counts_on_fixed_visits(num_items, width, T, flat):
    g = torch.Generator().manual_seed(num_items + width)
    n = 300
    seeds = torch.randint(num_items, (n, ), generator=g)
    # Few distinct values per row (many ties), dead steps (-1) and visits
    # of the seed itself, which are dropped:
    visits = torch.randint(-1, num_items, (n, width), generator=g)
    visits[::7] = seeds[::7].view(-1, 1)  # rows with nothing else
    visits[1::5, :width // 2] = seeds[1::5].view(-1, 1)
    visits[2::3] %= 4
    assert_same(_top_t(visits, seeds, num_items, T, flat=flat),
                oracle_top_t(visits, seeds, num_items, T))


@pytest.mark.parametrize('flat', [True, False])
def test_both_first_sorts_with_keys_beyond_int32(flat):
    # n * (N + 1) >= 2**31 takes the int64 flat keys (or the row-wise
    # sort); ids near N - 1 check the offsets are removed exactly.
    num_items, n, width = 2**26, 40, 12
    g = torch.Generator().manual_seed(3)
    seeds = torch.randint(num_items, (n, ), generator=g)
    visits = num_items - 1 - torch.randint(6, (n, width), generator=g)
    visits[::4, :3] = seeds[::4].view(-1, 1)
    visits[1::3, -2:] = -1
    assert n * (num_items + 1) >= 2**31
    assert_same(_top_t(visits, seeds, num_items, 4, flat=flat),
                oracle_top_t(visits, seeds, num_items, 4))


def test_ties_go_to_the_smaller_item_and_rows_stay_grouped():
    seeds = torch.tensor([0, 9])
    visits = torch.tensor([[5, 3, 3, 5, 8, 0, -1, 2],
                           [4, 4, 1, 1, 7, 7, 9, 9]])
    row, item, w = _top_t(visits, seeds, 10, 3)
    assert row.tolist() == [0, 0, 0, 1, 1, 1]
    # seed 0: 3 and 5 twice (3 first), then 2 (< 8) once:
    assert item.tolist() == [3, 5, 2, 1, 4, 7]
    torch.testing.assert_close(w, torch.tensor([.4, .4, .2, 1 / 3, 1 / 3,
                                                1 / 3]))


def test_exactly_the_old_counts_on_real_walks_with_restarts():
    g = torch.Generator().manual_seed(0)
    num_users, num_items = 60, 200
    user = torch.randint(num_users, (1500, ), generator=g)
    item = (torch.rand(1500, generator=g) ** 2 * num_items).long()
    csr = BipartiteCSR.from_edges(user, item, num_users, num_items)
    seeds = torch.arange(num_items)
    W, L = 15, 3
    walk_id = torch.arange(W).repeat(num_items)
    visits = _keyed_walk(csr, seeds.repeat_interleave(W), walk_id, L, 0.3,
                         key=11, window=None).view(num_items, W * L)
    expected = oracle_top_t(visits, seeds, num_items, 10)
    assert_same(_top_t(visits, seeds, num_items, 10), expected)
    # importance_neighbors is the same walks + the same counting:
    assert_same(importance_neighbors(csr, seeds, 10, W, L, 0.3, key=11,
                                     backend='torch'), expected)


def oracle_walk(csr, start, walk_length, generator):
    r"""The previous walk (torch.rand per step, float scaling)."""
    def step(ptr, col, node):
        safe = node.clamp(min=0)
        first = ptr[safe]
        deg = ptr[safe + 1] - first
        r = torch.rand(node.shape, generator=generator)
        off = (r * deg).long().clamp(max=(deg - 1).clamp(min=0))
        out = col[(first + off).clamp(max=col.numel() - 1)]
        return torch.where((node >= 0) & (deg > 0), out,
                           torch.full_like(node, -1))

    out = torch.empty((start.numel(), walk_length), dtype=torch.long)
    cur = start
    for s in range(walk_length):
        cur = torch.where(cur < 0, start, cur)
        cur = step(csr.user_ptr, csr.user_items,
                   step(csr.item_ptr, csr.item_users, cur))
        out[:, s] = cur
    return out


def test_same_distribution_as_the_old_walk_and_counting():
    # New keyed walks + row-wise counting against the old walk + global
    # counting, averaged over 20 random streams each (no truncation, so
    # the mean weights estimate the same visit distribution).
    g = torch.Generator().manual_seed(1)
    num_users, num_items = 40, 80
    user = torch.randint(num_users, (600, ), generator=g)
    item = torch.randint(num_items, (600, ), generator=g)
    key = torch.unique(user * num_items + item)
    csr = BipartiteCSR.from_edges(key // num_items, key % num_items,
                                  num_users, num_items)
    seeds = torch.arange(num_items)
    W, L, reps = 200, 2, 20

    def dense(out):
        a = torch.zeros(num_items, num_items, dtype=torch.float64)
        row, nbr, w = out
        a[row, nbr] = w.double()
        return a

    new, old = 0, 0
    for rep in range(reps):
        new = new + dense(importance_neighbors(
            csr, seeds, num_items, W, L, key=rep, backend='torch'))
        visits = oracle_walk(csr, seeds.repeat_interleave(W), L, g)
        old = old + dense(oracle_top_t(visits.view(num_items, W * L), seeds,
                                       num_items, num_items))
    assert (new / reps - old / reps).abs().max() < 0.02
