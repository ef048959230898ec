r"""Synthetic interaction logs with realistic structure, for tests and
benchmarks: skewed (Zipf-like) item popularity and user activity, items in
latent clusters that users mostly stay within, and sequential structure
(a user's next item tends to come from the same cluster)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import pandas as pd


def synthetic_interactions(
    num_users: int = 200,
    num_items: int = 300,
    num_interactions: int = 5000,
    num_clusters: int = 10,
    zipf: float = 1.1,
    stay_prob: float = 0.8,
    seed: int = 0,
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
    """
    if min(num_users, num_items, num_interactions, num_clusters) < 1:
        raise ValueError("all sizes must be >= 1")
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

    words = np.array(['alpha', 'bravo', 'charlie', 'delta', 'echo',
                      'foxtrot', 'golf', 'hotel', 'india', 'juliet'])
    titles = [f"{words[c % 10]} {words[(c * 7 + 3) % 10]} item {i}"
              for i, c in enumerate(cluster)]
    items = pd.DataFrame({
        'item': [f'i{i}' for i in range(num_items)],
        'title': titles,
        'year': (1950 + rng.integers(0, 70, num_items)).astype(np.float64),
        'genres': [f'cluster{c}' for c in cluster],
    })
    inter = pd.DataFrame({
        'user': [f'u{x}' for x in user],
        'item': [f'i{x}' for x in item],
        'timestamp': ts,
    })
    # Shuffle rows: loaders must not depend on the input order.
    inter = inter.iloc[rng.permutation(len(inter))].reset_index(drop=True)
    return inter, items


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
