r"""PinSage's importance neighbourhoods on Apache Spark: random walks
item -> user -> item (with restarts) over a partitioned interaction graph
and top-T visit counting, the same walks as the local sampler.

Input (Parquet)::

    interactions  user_id    integer >= 0
                  item_id    integer >= 0
                  timestamp  number, optional: orders each user's items

Output (Parquet directory; the ``neighbors`` input of the layer-wise
job)::

    target    long   the seed item u
    neighbor  long   one of its top-T visited items v
    weight    float  alpha_{u,v}: its visit count / the kept counts' sum

The walks are the local plain-PyTorch walk of
:func:`~pinsage_pyg.sampler.walks.importance_neighbors` on its keyed
random stream: the random numbers of walk ``j`` from item ``i`` are a
counter-based hash of ``(walk_key(seed), i, j, draw)``, so they do not
depend on where the walker is computed. Nothing of the graph is
broadcast. Items and users are hashed into ``G`` groups (one shuffle
partition each); per walk step

1. **item side**: the walkers are sent to the group of the item they
   stand on (``cogroup(...).applyInArrow`` with the items' user lists,
   one row per item); each picks a uniformly random user of its item;
2. **user side**: the walkers are sent to the group of that user and
   cogrouped with the users' item lists; each picks a uniformly random
   item of the user, records the visit and, before the next step,
   jumps back to its start item with probability ``restart_prob``.

Step 1 of step 0 needs no shuffle: every item row starts its
``num_walks`` walkers where it is. Each step is written to Parquet
(the lineage stays one step long). Finally the walkers are grouped by
their start item and counted with the local top-T code
(:func:`~pinsage_pyg.sampler.walks._top_t`: ties to the smaller item
id). With the graph listed in the same order (a user's items by
``timestamp``, then item id; an item's users by user id), the output
equals :func:`~pinsage_pyg.sampler.walks.importance_graph` with
``backend='torch'`` and the same seed, edge for edge and weight for
weight (the tests assert it).

Only the paper's whole-history walk is implemented (not the local
sampler's time-windowed ``window=`` walk).
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Dict, Optional

import numpy as np
import torch

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.spark.job import (
    _FS, _ShuffleConf, _check_columns, _group_of, _list_parts, _qualify,
    _read_input, _replace, group_keys, pack_vectors, unpack_vectors,
    write_atomic)
from pinsage_pyg.sampler.walks import (_M32, BipartiteCSR, _draw, _top_t,
                                       _walker_states, walk_key)

log = logging.getLogger(__name__)

#: A walker between steps: its start item, its 32-bit random state, the
#: item it stands on and the items it visited so far (packed int64).
WALKER_SCHEMA = 'start long, state long, cur long, visits binary'
#: A walker half-way through a step: the user it moved to.
AT_USER_SCHEMA = 'start long, state long, user long, visits binary'
NEIGHBORS_SCHEMA = 'target long, neighbor long, weight float'


def _lookup(ids: np.ndarray, table_ids: np.ndarray, what: str) -> np.ndarray:
    r"""Row of each of :obj:`ids` in the sorted :obj:`table_ids`."""
    row = np.searchsorted(table_ids, ids)
    row = np.minimum(row, max(len(table_ids) - 1, 0))
    if len(ids) and (not len(table_ids)
                     or not (table_ids[row] == ids).all()):
        raise DataError(f"a walker reached a {what} without interactions "
                        f"(an intermediate table of another run?).")
    return row


def _adjacency(table, id_col: str, list_col: str):
    r"""``(ids, first, deg, flat)`` of one group's adjacency rows: the
    sorted ids, each one's first position in ``flat`` and its degree."""
    ids = table.column(id_col).to_numpy()
    order = np.argsort(ids, kind='stable')
    lengths, flat = _list_parts(table.column(list_col))
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return ids[order], first[order], lengths[order], flat.astype(np.int64)


def _step(state: np.ndarray, draw: int, first: np.ndarray, deg: np.ndarray,
          flat: np.ndarray) -> np.ndarray:
    r"""One uniform pick per walker from its row of an adjacency, with
    draw :obj:`draw` of the keyed stream: ``flat[first + (z * deg >>
    32)]``, the arithmetic of the local walk."""
    z = _draw(_tensor(state), draw)
    z *= _tensor(deg)
    z >>= 32
    z += _tensor(first)
    return flat[z.numpy()]


def _tensor(a: np.ndarray) -> torch.Tensor:
    r"""An int64 tensor of :obj:`a` (Arrow's buffers are read-only:
    copied then, as torch needs writable memory)."""
    a = np.asarray(a, dtype=np.int64)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _start_fn(key: int, num_walks: int, wide: bool):
    r"""Step 0, item side, per partition of the item lists: every item
    starts :obj:`num_walks` walkers and each picks a user."""
    def start(batches):
        import pyarrow as pa
        for b in batches:
            items = b.column('item_id').to_numpy()
            lengths, flat = _list_parts(b.column('users'))
            first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            rows = np.repeat(np.arange(len(items)), num_walks)
            start_ = items[rows]
            walk_id = np.tile(np.arange(num_walks), len(items))
            state = _walker_states(_tensor(start_), _tensor(walk_id), key,
                                   wide).numpy()
            user = _step(state, 0, first[rows].astype(np.int64),
                         lengths[rows], flat.astype(np.int64))
            yield pa.RecordBatch.from_arrays(
                [pa.array(start_), pa.array(state), pa.array(user),
                 pack_vectors(np.zeros((len(start_), 0), np.int64),
                              np.int64)],
                names=['start', 'state', 'user', 'visits'])
    return start


def _item_side_fn(step: int):
    r"""Step :obj:`step` > 0, item side, per group: pick a user of the
    current item (draw ``3 step``)."""
    def item_side(walkers, items):
        import pyarrow as pa
        ids, first, deg, flat = _adjacency(items, 'item_id', 'users')
        state = walkers.column('state').to_numpy()
        row = _lookup(walkers.column('cur').to_numpy(), ids, 'item')
        user = _step(state, 3 * step, first[row], deg[row], flat)
        return pa.Table.from_arrays(
            [walkers.column('start'), walkers.column('state'),
             pa.array(user), walkers.column('visits')],
            names=['start', 'state', 'user', 'visits'])
    return item_side


def _user_side_fn(step: int, threshold: int, last: bool):
    r"""Step :obj:`step`, user side, per group: pick an item of the user
    (draw ``3 step + 1``) and record the visit; unless it is the
    :obj:`last` step, the walker restarts from its start item before the
    next one with probability ``threshold / 2**32`` (draw
    ``3 (step + 1) + 2``), so it is sent to the group of the item it
    really stands on."""
    num_visits = step

    def user_side(walkers, users):
        import pyarrow as pa
        ids, first, deg, flat = _adjacency(users, 'user_id', 'items')
        state = walkers.column('state').to_numpy()
        row = _lookup(walkers.column('user').to_numpy(), ids, 'user')
        cur = _step(state, 3 * step + 1, first[row], deg[row], flat)
        visits = unpack_vectors(walkers.column('visits'), num_visits,
                                np.int64) if num_visits else \
            np.zeros((len(cur), 0), np.int64)
        visits = np.concatenate([visits, cur[:, None]], axis=1)
        if threshold > 0 and not last:
            reset = _draw(_tensor(state), 3 * step + 5).numpy() < \
                threshold
            cur = np.where(reset, walkers.column('start').to_numpy(), cur)
        return pa.Table.from_arrays(
            [walkers.column('start'), walkers.column('state'),
             pa.array(cur), pack_vectors(visits, np.int64)],
            names=['start', 'state', 'cur', 'visits'])
    return user_side


def _top_t_fn(num_walks: int, walk_length: int, num_neighbors: int):
    r"""Per group of start items: the local top-T counting of every start
    item's ``num_walks * walk_length`` visits."""
    width = num_walks * walk_length

    def top_t(walkers):
        import pyarrow as pa
        start = walkers.column('start').to_numpy()
        visits = unpack_vectors(walkers.column('visits'), walk_length,
                                np.int64)
        order = np.argsort(start, kind='stable')
        seeds = start[order][::num_walks]
        if len(start) != len(seeds) * num_walks:
            raise DataError("a start item lost walkers (an intermediate "
                            "table of another run?).")
        visits = visits[order].reshape(len(seeds), width)
        # Dense ranks keep the order of the ids: the same tie-breaking
        # (smaller id first) as the local graph's node indices.
        uniq, inv = np.unique(np.concatenate([seeds, visits.reshape(-1)]),
                              return_inverse=True)
        inv = torch.from_numpy(inv.astype(np.int64))
        row, item, weight = _top_t(inv[len(seeds):].view(len(seeds), width),
                                   inv[:len(seeds)], len(uniq),
                                   num_neighbors)
        return pa.Table.from_arrays(
            [pa.array(seeds[row.numpy()]), pa.array(uniq[item.numpy()]),
             pa.array(weight.numpy().astype(np.float32))],
            names=['target', 'neighbor', 'weight'])
    return top_t


def local_csr(user_id, item_id, timestamp=None,
              num_users: Optional[int] = None,
              num_items: Optional[int] = None) -> BipartiteCSR:
    r"""The local graph that the Spark walks walk on, for comparison: the
    :class:`~pinsage_pyg.sampler.walks.BipartiteCSR` over
    :obj:`num_users` users and :obj:`num_items` items (default: the
    largest id + 1) with every user's items ordered by
    :obj:`timestamp`, then item id (the order of the Spark job's user
    lists). ``importance_graph(local_csr(...), ..., seed=seed,
    backend='torch')`` is then what :func:`spark_importance_neighbors`
    computes with the same parameters."""
    user = np.asarray(user_id, dtype=np.int64)
    item = np.asarray(item_id, dtype=np.int64)
    t = np.zeros(len(user)) if timestamp is None else \
        np.asarray(timestamp, dtype=np.float64)
    order = np.lexsort((item, t, user))
    return BipartiteCSR.from_edges(
        torch.from_numpy(user[order]), torch.from_numpy(item[order]),
        num_users if num_users is not None else
        int(user.max()) + 1 if len(user) else 0,
        num_items if num_items is not None else
        int(item.max()) + 1 if len(item) else 0)


def read_interactions(spark, path: str):
    r"""Reads and checks the ``interactions`` input; returns ``(df,
    num_interactions, num_items, num_users, max_item)`` with the columns
    ``user_id, item_id`` (long) and ``t`` (double; 0 without a
    ``timestamp`` column)."""
    from pyspark.sql import functions as F
    df = _read_input(spark, path, 'interactions')
    _check_columns(df, path, 'interactions',
                   {'user_id': 'integer', 'item_id': 'integer'},
                   ('timestamp', ))
    has_t = 'timestamp' in df.columns
    df = df.select(F.col('user_id').cast('long'),
                   F.col('item_id').cast('long'),
                   (F.col('timestamp') if has_t else F.lit(0.0))
                   .cast('double').alias('t'))
    row = df.agg(
        F.count(F.lit(1)).alias('n'),
        F.sum((F.col('user_id').isNull() | F.col('item_id').isNull()
               | F.col('t').isNull() | F.isnan('t')).cast('long'))
        .alias('nulls'),
        F.sum(((F.col('user_id') < 0) | (F.col('item_id') < 0))
              .cast('long')).alias('negative'),
        F.count_distinct('item_id').alias('items'),
        F.count_distinct('user_id').alias('users'),
        F.max('item_id').alias('max_item')).first()
    if not row['n']:
        raise DataError(f"interactions '{path}' has no rows.")
    if row['nulls']:
        raise DataError(f"interactions '{path}' has {row['nulls']} rows with"
                        f" a null user_id or item_id (or a null / NaN "
                        f"timestamp); drop or fill them first.")
    if row['negative']:
        raise DataError(f"interactions '{path}' has {row['negative']} rows "
                        f"with a negative user_id or item_id; map raw ids to"
                        f" integers >= 0 first and keep the map.")
    return (df, int(row['n']), int(row['items']), int(row['users']),
            int(row['max_item']))


def default_walk_groups(spark, num_walkers: int,
                        walkers_per_group: int = 2_000_000) -> int:
    r"""Groups of a walk step: at least one per core and at most
    :obj:`walkers_per_group` walkers each (a group is held in one Python
    worker)."""
    return max(int(spark.sparkContext.defaultParallelism),
               -(-int(num_walkers) // walkers_per_group), 1)


def _check_params(num_neighbors, num_walks, walk_length, restart_prob,
                  num_groups) -> None:
    for name, value in (('num_neighbors', num_neighbors),
                        ('num_walks', num_walks),
                        ('walk_length', walk_length)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1 (got "
                              f"{value!r}).")
    if not 0.0 <= float(restart_prob) < 1.0:
        raise ConfigError(f"restart_prob must be in [0, 1) (got "
                          f"{restart_prob}).")
    if num_groups is not None and num_groups < 1:
        raise ConfigError(f"num_groups must be >= 1 (got {num_groups}).")


def compute_neighbors(spark, interactions, max_item: int, num_items: int,
                      out_path: str, fs: _FS, work: str,
                      num_neighbors: int = 50, num_walks: int = 100,
                      walk_length: int = 2, restart_prob: float = 0.0,
                      seed: int = 0, num_groups: Optional[int] = None
                      ) -> int:
    r"""The walks and the top-T counting on checked interactions
    (:func:`read_interactions`), written atomically to :obj:`out_path`
    (steps under :obj:`work`); returns the number of groups used."""
    from pyspark.sql import functions as F
    key = walk_key(seed)
    wide = max_item + 1 > _M32  # as the local walk over max_item+1 items
    threshold = int(round(float(restart_prob) * 2**32))
    groups = num_groups or default_walk_groups(spark, num_items * num_walks)
    tag = uuid.uuid4().hex
    with _ShuffleConf(spark, groups):
        keys = group_keys(spark, groups)
        item_adj = interactions.groupBy('item_id').agg(
            F.array_sort(F.collect_list('user_id')).alias('users'))
        item_adj = item_adj.select(_group_of('item_id', keys), 'item_id',
                                   'users')
        user_adj = interactions.groupBy('user_id').agg(F.array_sort(
            F.collect_list(F.struct('t', 'item_id'))).alias('e')).select(
            _group_of('user_id', keys), 'user_id',
            F.col('e.item_id').alias('items'))
        item_path, user_path = f"{work}/item_adj", f"{work}/user_adj"
        write_atomic(fs, item_adj, item_path, tag)
        write_atomic(fs, user_adj, user_path, tag)
        item_adj = spark.read.parquet(item_path)
        user_adj = spark.read.parquet(user_path)

        walkers = None
        for step in range(walk_length):
            t0 = time.perf_counter()
            if step == 0:
                at_user = item_adj.mapInArrow(
                    _start_fn(key, num_walks, wide), AT_USER_SCHEMA)
            else:
                at_user = walkers.select(_group_of('cur', keys), '*') \
                    .groupBy('g').cogroup(item_adj.groupBy('g')) \
                    .applyInArrow(_item_side_fn(step),
                                  AT_USER_SCHEMA)
            walkers = at_user.select(_group_of('user', keys), '*') \
                .groupBy('g').cogroup(user_adj.groupBy('g')) \
                .applyInArrow(_user_side_fn(step, threshold,
                                            step == walk_length - 1),
                              WALKER_SCHEMA)
            path = f"{work}/step_{step}"
            write_atomic(fs, walkers, path, tag)
            walkers = spark.read.parquet(path)
            log.info('walk step %d: %.1fs', step, time.perf_counter() - t0)
        neighbors = walkers.select(_group_of('start', keys), 'start',
                                   'visits').groupBy('g').applyInArrow(
            _top_t_fn(num_walks, walk_length, num_neighbors),
            NEIGHBORS_SCHEMA)
        write_atomic(fs, neighbors, out_path, tag)
    return groups


def spark_importance_neighbors(
    spark,
    interactions_path,
    out_path,
    num_neighbors: int = 50,
    num_walks: int = 100,
    walk_length: int = 2,
    restart_prob: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
    num_groups: Optional[int] = None,
) -> Dict[str, Any]:
    r"""Importance neighbourhoods of every item of :obj:`interactions_path`
    on Spark (see the module docstring); the output is the ``neighbors``
    input of :func:`~pinsage_pyg.inference.spark.spark_layerwise_embed`.

    Args:
        spark (pyspark.sql.SparkSession): The session.
        interactions_path: Parquet ``user_id, item_id[, timestamp]``.
        out_path: Output directory, written under a temporary sibling and
            renamed into place when complete.
        num_neighbors (int): ``T``, neighbours kept per item.
            (default: ``50``)
        num_walks (int): Walks per item. (default: ``100``)
        walk_length (int): Item-to-item steps per walk. (default: ``2``)
        restart_prob (float): Restart probability per step, in ``[0, 1)``.
            (default: ``0.0``)
        seed (int): Seed of the walks (:func:`walk_key` of it is the key:
            the local ``importance_graph(..., seed=seed)``). (default:
            ``0``)
        overwrite (bool): Replace an existing output. (default:
            :obj:`False`)
        num_groups (int, optional): Hash groups of items and users (one
            task per group and step). (default: one per core, at most 2M
            walkers each)

    Returns:
        dict: ``out_path``, ``num_interactions``, ``num_items``,
        ``num_users``, ``num_edges`` (kept pairs), ``num_groups``,
        ``seconds`` and ``items_per_second``.
    """
    t0 = time.perf_counter()
    _check_params(num_neighbors, num_walks, walk_length, restart_prob,
                  num_groups)
    interactions_path, out_path = (_qualify(spark, p) for p in
                                   (interactions_path, out_path))
    fs = _FS(spark, out_path)
    if fs.exists(out_path) and not overwrite:
        raise DataError(f"output '{out_path}' already exists; choose another"
                        f" path or pass overwrite=True (--overwrite).")
    df, n, num_items, num_users, max_item = read_interactions(
        spark, interactions_path)
    work = f"{out_path}._tmp_{uuid.uuid4().hex}"
    try:
        groups = compute_neighbors(
            spark, df, max_item, num_items, f"{work}/neighbors", fs, work,
            num_neighbors, num_walks, walk_length, restart_prob, seed,
            num_groups)
        num_edges = spark.read.parquet(f"{work}/neighbors").count()
        _replace(fs, f"{work}/neighbors", out_path, f"{work}/previous")
    finally:
        if fs.exists(work):
            fs.delete(work)
    seconds = time.perf_counter() - t0
    return {'out_path': out_path, 'num_interactions': n,
            'num_items': num_items, 'num_users': num_users,
            'num_edges': int(num_edges), 'num_groups': groups,
            'seconds': seconds, 'items_per_second': num_items / seconds}


__all__ = ['spark_importance_neighbors', 'read_interactions',
           'compute_neighbors', 'default_walk_groups', 'local_csr']
