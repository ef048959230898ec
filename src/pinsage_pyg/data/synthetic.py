r"""Synthetic interaction logs with realistic structure, for tests and
benchmarks: skewed (Zipf-like) item popularity and user activity, items in
latent clusters that users mostly stay within, and sequential structure
(a user's next item tends to come from the same cluster).

:func:`synthetic_interactions` returns pandas tables that go through the
normal dataset code path; :func:`synthetic_graph` builds a large graph with
power-law degrees directly as CSR arrays, for scale benchmarks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from pinsage_pyg.sampler.walks import BipartiteCSR


def synthetic_interactions(
    num_users: int = 200,
    num_items: int = 300,
    num_interactions: int = 5000,
    num_clusters: int = 10,
    zipf: float = 1.1,
    stay_prob: float = 0.8,
    seed: int = 0,
    feature_noise: float = 0.0,
    with_cluster: bool = False,
    release_share: float = 0.0,
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    r"""Generates ``(interactions, items)`` in the same schema the built-in
    loaders produce (``user, item, timestamp`` / ``item, title, year,
    genres``), so they go through the same code path.

    Items belong to one of :obj:`num_clusters` clusters (their ``genres``
    name the cluster, their ``title`` holds cluster words). Each user's
    sequence is a Markov chain over clusters: with probability
    :obj:`stay_prob` the next item comes from the current cluster. Within a
    cluster items are drawn with Zipf(:obj:`zipf`) popularity, and users
    have Zipf-skewed activity.

    With :obj:`feature_noise` :math:`p > 0`, each item's ``genres`` and
    title words name a uniformly random cluster with probability :math:`p`
    (features identify the cluster only in part; the interactions still
    follow the true one). :obj:`with_cluster` adds the true cluster as an
    integer column ``cluster`` of the item table (the ground truth; leave
    it out of the features).

    With :obj:`release_share` :math:`r > 0` the catalogue grows over time,
    as a real one does: a share :math:`r` of the items (never the first of
    a cluster) is released at a uniformly random time of the log's
    timeline, and an engagement picks only among the items of its cluster
    released by then (same popularity weights). The items released late
    are new items for the cold-start protocol
    (:func:`~pinsage_pyg.evaluation.cold_start.new_item_split`); without
    it, users' random time offsets leave few items whose first engagement
    is late. The log of :math:`r = 0` is unchanged.
    """
    if min(num_users, num_items, num_interactions, num_clusters) < 1:
        raise ValueError("all sizes must be >= 1")
    if not 0.0 <= release_share < 1.0:
        raise ValueError(f"release_share must be in [0, 1) (got "
                         f"{release_share})")
    if not 0.0 <= feature_noise <= 1.0:
        raise ValueError(f"feature_noise must be in [0, 1] (got "
                         f"{feature_noise})")
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, num_clusters, num_items)
    # Item popularity: Zipf weights over a random permutation of items.
    pop = 1.0 / np.arange(1, num_items + 1) ** zipf
    pop = pop[rng.permutation(num_items)]
    # Per cluster: items and their normalised popularity (CSR layout).
    order = np.argsort(cluster, kind='stable')
    counts = np.bincount(cluster, minlength=num_clusters)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    cdf = np.zeros(num_items)
    for c in range(num_clusters):  # loop over clusters, not items
        s = slice(ptr[c], ptr[c + 1])
        if counts[c]:
            w = pop[order[s]]
            cdf[s] = np.cumsum(w) / w.sum()

    act = 1.0 / np.arange(1, num_users + 1) ** 0.8
    act = act[rng.permutation(num_users)]
    user = rng.choice(num_users, size=num_interactions, p=act / act.sum())
    user = np.sort(user, kind='stable')
    first = np.r_[True, user[1:] != user[:-1]]
    # Cluster chain: switch to a random non-empty cluster w.p. 1-stay_prob.
    nonempty = np.flatnonzero(counts)
    jump = first | (rng.random(num_interactions) > stay_prob)
    fresh = rng.choice(nonempty, size=num_interactions)
    idx = np.where(jump, np.arange(num_interactions), 0)
    np.maximum.accumulate(idx, out=idx)
    cl = fresh[idx]
    u = rng.random(num_interactions)
    pos = np.clip(_vector_pick(cdf, ptr, cl, u), ptr[cl], ptr[cl + 1] - 1)
    item = order[pos]
    base = rng.integers(8.8e8, 8.9e8, num_users)
    step = rng.integers(1, 3600, num_interactions)
    ts = base[user] + _segment_cumsum(step, first)
    if release_share > 0:  # own stream: r = 0 keeps the log as it was
        item = _released_items(cluster, pop, cl, u, ts, release_share,
                               np.random.default_rng([seed, 2]))

    shown = cluster
    if feature_noise > 0:  # own stream: the log is the same for any noise
        noise_rng = np.random.default_rng([seed, 1])
        noisy = noise_rng.random(num_items) < feature_noise
        shown = np.where(noisy,
                         noise_rng.integers(0, num_clusters, num_items),
                         cluster)
    words = np.array(['alpha', 'bravo', 'charlie', 'delta', 'echo',
                      'foxtrot', 'golf', 'hotel', 'india', 'juliet'])
    titles = [f"{words[c % 10]} {words[(c * 7 + 3) % 10]} item {i}"
              for i, c in enumerate(shown)]
    items = pd.DataFrame({
        'item': [f'i{i}' for i in range(num_items)],
        'title': titles,
        'year': (1950 + rng.integers(0, 70, num_items)).astype(np.float64),
        'genres': [f'cluster{c}' for c in shown],
    })
    if with_cluster:
        items['cluster'] = cluster
    inter = pd.DataFrame({
        'user': [f'u{x}' for x in user],
        'item': [f'i{x}' for x in item],
        'timestamp': ts,
    })
    # Shuffle rows: loaders must not depend on the input order.
    inter = inter.iloc[rng.permutation(len(inter))].reset_index(drop=True)
    return inter, items


def _released_items(cluster: np.ndarray, pop: np.ndarray, cl: np.ndarray,
                    u: np.ndarray, ts: np.ndarray, share: float,
                    rng: np.random.Generator) -> np.ndarray:
    # Items sorted by (cluster, release time); the first of each cluster is
    # there from the start. An engagement at time t in cluster c draws by
    # popularity among its cluster's prefix of items released by t.
    num_items, num_clusters = len(cluster), int(cluster.max()) + 1
    t0, span = float(ts.min()), float(ts.max() - ts.min()) + 1.0
    release = np.where(rng.random(num_items) < share,
                       rng.random(num_items) * 0.999, 0.0)
    order = np.lexsort((release, cluster))
    counts = np.bincount(cluster, minlength=num_clusters)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    release[order[ptr[:-1][counts > 0]]] = 0.0
    key = cluster[order] + release[order]  # sorted: c + [0, 1)
    end = np.searchsorted(key, cl + (ts - t0) / span, side='right')
    w = pop[order]
    total = np.concatenate([[0.0], np.cumsum(w)])
    cdf = total[1:] - np.repeat(total[ptr[:-1]], counts)  # per cluster
    # One global search: cluster c's CDF offset by c * (more than any
    # cluster's weight); draw below the CDF of the last released item.
    big = float(w.sum()) + 1.0
    shifted = cdf + np.repeat(np.arange(num_clusters) * big, counts)
    pos = np.searchsorted(shifted, cl * big + u * cdf[end - 1])
    return order[np.clip(pos, ptr[cl], end - 1)]


def _segment_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    c = np.cumsum(x)
    start = np.where(first, c - x, 0)
    np.maximum.accumulate(start, out=start)
    return c - start


def _vector_pick(cdf: np.ndarray, ptr: np.ndarray, cl: np.ndarray,
                 u: np.ndarray) -> np.ndarray:
    # Offset each cluster's CDF by its cluster id so one global
    # searchsorted finds the item inside the right cluster.
    shifted = cdf + np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    return np.searchsorted(shifted, cl + u)


def synthetic_graph(
    num_items: int,
    num_users: Optional[int] = None,
    mean_degree: float = 8.0,
    degree_exponent: float = 2.2,
    max_degree: Optional[int] = None,
    user_skew: float = 3.0,
    num_clusters: Optional[int] = None,
    stay_prob: float = 0.9,
    cold_fraction: float = 0.01,
    num_features: int = 32,
    seed: int = 0,
) -> Tuple['BipartiteCSR', Tensor]:
    r"""A large item-user graph with realistic skewed degrees, built
    directly as a :class:`~pinsage_pyg.sampler.BipartiteCSR` plus item
    features (no pandas, no raw ids: millions of items in seconds).

    * Item degrees follow a discrete power law
      :math:`P(d) \propto d^{-\gamma}` (:obj:`degree_exponent`
      :math:`\gamma`, rescaled to :obj:`mean_degree`, capped at
      :obj:`max_degree`); a :obj:`cold_fraction` of the items has no
      interactions at all (cold start).
    * Items and users belong to :obj:`num_clusters` clusters. Each
      interaction of an item goes, with probability :obj:`stay_prob`, to a
      user of the item's cluster, otherwise to any user; within the chosen
      group, user ranks are drawn as :math:`\lfloor n \cdot u^{s} \rfloor`
      with :math:`u \sim U(0, 1)` and :math:`s` = :obj:`user_skew`, so user
      activity is power-law skewed (density :math:`\propto r^{1/s - 1}`).
    * Features: the item's cluster centroid plus Gaussian noise
      (``num_features - 1`` columns) and a standardised ``log(1 + degree)``
      column.

    Args:
        num_items (int): Number of items :math:`N`.
        num_users (int, optional): Number of users (context nodes).
            (default: :math:`N / 2`)
        mean_degree (float): Mean interactions per warm item.
            (default: ``8.0``)
        degree_exponent (float): Power-law exponent :math:`\gamma > 2` of
            the item degrees. (default: ``2.2``)
        max_degree (int, optional): Largest item degree. (default: the
            number of users, at most ``100000``)
        user_skew (float): Skew :math:`s \geq 1` of user activity.
            (default: ``3.0``)
        num_clusters (int, optional): (default: :math:`\max(1,
            \lfloor\sqrt{N}\rfloor / 4)`)
        stay_prob (float): Probability an interaction stays within the
            item's cluster. (default: ``0.9``)
        cold_fraction (float): Fraction of items without interactions.
            (default: ``0.01``)
        num_features (int): Feature columns (``>= 1``). (default: ``32``)
        seed (int): Random seed. (default: ``0``)

    Returns:
        ``(csr, x)``: the graph and float32 features ``[N, num_features]``.
    """
    from pinsage_pyg.sampler.walks import BipartiteCSR
    if num_items < 1 or num_features < 1:
        raise ValueError("num_items and num_features must be >= 1")
    if degree_exponent <= 2.0:
        raise ValueError(f"degree_exponent must be > 2 (a finite mean; got "
                         f"{degree_exponent})")
    if user_skew < 1.0:
        raise ValueError(f"user_skew must be >= 1 (got {user_skew})")
    if not (0.0 <= cold_fraction < 1.0 and 0.0 <= stay_prob <= 1.0):
        raise ValueError("cold_fraction must be in [0, 1) and stay_prob "
                         "in [0, 1]")
    num_users = int(num_users or max(1, num_items // 2))
    num_clusters = int(num_clusters or max(1, int(np.sqrt(num_items)) // 4))
    rng = np.random.default_rng(seed)

    # Power-law degrees (continuous Pareto with x_min scaled to the mean):
    xmin = mean_degree * (degree_exponent - 2) / (degree_exponent - 1)
    u = rng.random(num_items, dtype=np.float32)
    deg = xmin * (1.0 - u) ** (-1.0 / (degree_exponent - 1.0))
    max_degree = int(max_degree or min(num_users, 100_000))
    deg = np.clip(np.rint(deg), 1, max_degree).astype(np.int64)
    deg[rng.random(num_items, dtype=np.float32) < cold_fraction] = 0
    del u
    item_ptr = np.zeros(num_items + 1, dtype=np.int64)
    np.cumsum(deg, out=item_ptr[1:])
    num_edges = int(item_ptr[-1])

    # Clusters: items uniformly; users in contiguous blocks of the id range.
    item_cluster = rng.integers(0, num_clusters, num_items, dtype=np.int32)
    user_start = (np.arange(num_clusters + 1, dtype=np.int64) * num_users
                  // num_clusters)
    edge_cluster = np.repeat(item_cluster, deg)
    lo, hi = user_start[edge_cluster], user_start[edge_cluster + 1]
    del edge_cluster
    anywhere = rng.random(num_edges, dtype=np.float32) >= stay_prob
    lo[anywhere], hi[anywhere] = 0, num_users
    del anywhere
    size = np.maximum(hi - lo, 1)
    del hi
    r = rng.random(num_edges, dtype=np.float32) ** np.float32(user_skew)
    item_users = lo + np.minimum((r * size).astype(np.int64), size - 1)
    del lo, size, r

    # The user side: a stable counting sort of the edges by user.
    order = np.argsort(item_users, kind='stable')
    user_items = np.repeat(np.arange(num_items, dtype=np.int64), deg)[order]
    user_ptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(item_users, minlength=num_users),
              out=user_ptr[1:])
    del order

    # Features: centroid + noise, and a log-degree column.
    centroids = rng.standard_normal((num_clusters, num_features),
                                    dtype=np.float32)
    x = np.empty((num_items, num_features), dtype=np.float32)
    step = 1 << 20
    for lo_ in range(0, num_items, step):  # loop over blocks, not items
        hi_ = min(lo_ + step, num_items)
        x[lo_:hi_] = centroids[item_cluster[lo_:hi_]]
        x[lo_:hi_] += 0.5 * rng.standard_normal((hi_ - lo_, num_features),
                                                dtype=np.float32)
    logd = np.log1p(deg).astype(np.float32)
    x[:, -1] = (logd - logd.mean()) / max(float(logd.std()), 1e-6)
    csr = BipartiteCSR(torch.from_numpy(item_ptr),
                       torch.from_numpy(item_users),
                       torch.from_numpy(user_ptr),
                       torch.from_numpy(user_items))
    return csr, torch.from_numpy(x)
