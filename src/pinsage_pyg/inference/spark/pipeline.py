r"""The whole embedding pipeline on Spark, resumable stage by stage:
interactions -> importance neighbourhoods -> layers ``0..K`` -> embeddings
-> faiss index.

Inputs: ``interactions`` (Parquet ``user_id, item_id[, timestamp]``, see
:mod:`~pinsage_pyg.inference.spark.walks`), ``items`` (Parquet
``item_id, features``) and the model file (see
:mod:`~pinsage_pyg.inference.spark.job`). Every item of the interactions
must be in ``items``; items without interactions get no neighbours and
are embedded from their features alone, as in the local path.

Layout of the output directory ``out``::

    manifest.json   (a one-line text dataset) the parameters, the input
                    paths and the model's SHA-256: a resumed run must
                    match it
    neighbors/      target, neighbor, weight (the walks' top-T)
    layers/layer_k  the state after layer k (k = 0..K)
    embeddings/     item_id, embedding[, query_embedding]
    index_shards/   with ``index_shards > 1``: shard, part, ntotal,
                    item_ids, index (each shard's serialised faiss index
                    and item ids in parts, built by the workers; see
                    :func:`~pinsage_pyg.inference.export.load_index_shards`)

and, for one index (the default), the faiss side, on the driver
(:obj:`index_dir`, default
``out/index`` for a local ``out``), as written by
:func:`~pinsage_pyg.inference.export.write_embeddings`::

    items.parquet, item_embeddings.npy[, query_embeddings.npy], index.faiss

Every stage is written under a temporary name and renamed into place when
complete, so a stage that exists is whole. A rerun with the same
arguments reuses every stage already there and computes the rest: a run
stopped in layer ``k`` restarts at layer ``k`` (``resume=False``
recomputes everything). With the same seed the embeddings equal the
local path's, ``PinSage.inference`` on ``importance_graph(local_csr(...),
seed=seed, backend='torch')``, up to float32 rounding.
"""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.spark.job import (
    _FS, _check_columns, _has_scheme, _model_from_bytes, _qualify,
    _read_input, _read_model_bytes, _validate, choose_gather,
    default_num_groups,
    read_embeddings, read_inputs, run_layers, write_atomic, write_heads)
from pinsage_pyg.inference.spark.walks import (_check_params,
                                               compute_neighbors,
                                               read_interactions)

log = logging.getLogger(__name__)

PIPELINE_FORMAT = 'pinsage_pyg.spark_pipeline'


def _write_manifest(spark, fs: _FS, path: str, manifest: Dict[str, Any],
                    key: str) -> None:
    df = spark.createDataFrame([(json.dumps(manifest, sort_keys=True), )],
                               'value string').coalesce(1)
    write_atomic(fs, df, path, key, 'text')


def _read_manifest(spark, path: str) -> Dict[str, Any]:
    rows = spark.read.text(path).collect()
    try:
        return json.loads(rows[0]['value'])
    except (IndexError, ValueError, TypeError):
        raise DataError(f"'{path}' is not a manifest of the Spark pipeline;"
                        f" use another output directory or resume=False."
                        ) from None


def _check_resume(old: Dict[str, Any], new: Dict[str, Any],
                  out: str) -> None:
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        shown = ', '.join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                          for k in diff)
        raise ConfigError(
            f"output '{out}' holds a pipeline run with other settings "
            f"({shown}); resume with the same arguments, use another output"
            f" directory, or pass resume=False (--no-resume) to recompute.")


def _write_index(index_dir: Path, item_ids: np.ndarray, item_emb,
                 query_emb, asymmetric: bool, kind: str,
                 params: Optional[dict]) -> None:
    r"""The embeddings directory with its faiss index, written into a
    temporary sibling and renamed into place whole."""
    from pinsage_pyg.inference.export import write_embeddings
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_dir.with_name(f'.{index_dir.name}.{uuid.uuid4().hex}.tmp')
    try:
        write_embeddings(tmp, item_ids, item_emb,
                         query_emb if asymmetric else None,
                         index_kind=kind, index_params=params)
        os.rename(tmp, index_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


#: Bytes of a shard per Parquet value (its index and item ids are split
#: into parts of this size, so no value strains the JVM heap or Parquet).
SHARD_PART_BYTES = 8 * 2**20


def build_index_shards(spark, emb_path: str, out: str, fs: _FS, key: str,
                       num_shards: int, kind: str = 'flat',
                       params: Optional[dict] = None,
                       part_bytes: int = SHARD_PART_BYTES) -> int:
    r"""The faiss index of the embeddings at :obj:`emb_path` in
    :obj:`num_shards` shards: shard ``s`` holds the items with
    ``pmod(hash(item_id), num_shards) == s`` (Spark's Murmur3 ``hash``,
    so the items are hash-partitioned into their shards by one shuffle
    and each Python worker builds whole shards; no embedding goes through
    the driver). Written to :obj:`out` atomically, as Parquet rows
    ``shard, part, ntotal, item_ids, index``: a shard's serialised index
    and its item ids (int64, in the index's row order, which is increasing
    ``item_id``) split into parts of :obj:`part_bytes` (see
    :func:`~pinsage_pyg.inference.export.load_index_shards`). A worker
    holds one shard's embeddings and index at a time. Returns the number
    of shards written (a shard without items is not written)."""
    import pandas as pd
    from pyspark.sql import functions as F
    params = dict(params or {})
    n = int(num_shards)
    step = int(part_bytes)
    emb = spark.read.parquet(emb_path).select('item_id', 'embedding')
    emb = emb.repartition(n, 'item_id').withColumn(
        'shard', F.pmod(F.hash('item_id'), F.lit(n)).cast('int'))

    def build(batches):
        from pinsage_pyg.inference.export import (build_faiss_index,
                                                  serialize_index)
        frames = [b for b in batches if len(b)]
        if not frames:
            return
        pdf = pd.concat(frames, ignore_index=True)
        for shard, part in pdf.groupby('shard', sort=True):
            part = part.sort_values('item_id', kind='stable')
            ids = part['item_id'].to_numpy(np.int64).tobytes()
            x = np.ascontiguousarray(np.stack(part['embedding'].to_numpy()),
                                     dtype=np.float32)
            blob = serialize_index(build_faiss_index(x, kind, **params))
            del x
            parts = max(-(-len(blob) // step), -(-len(ids) // step), 1)
            for k in range(parts):
                yield pd.DataFrame({
                    'shard': [int(shard)], 'part': [k],
                    'ntotal': [len(part)],
                    'item_ids': [ids[k * step:(k + 1) * step]],
                    'index': [blob[k * step:(k + 1) * step]]})

    shards = emb.mapInPandas(build, 'shard int, part int, ntotal long, '
                                    'item_ids binary, index binary')
    write_atomic(fs, shards, out, key)
    return spark.read.parquet(out).select('shard').distinct().count()


def spark_pipeline(
    spark,
    interactions_path,
    items_path,
    model_path,
    out_path,
    num_neighbors: int = 50,
    num_walks: int = 100,
    walk_length: int = 2,
    restart_prob: float = 0.0,
    seed: int = 0,
    index_dir=None,
    index_kind: str = 'flat',
    index_params: Optional[dict] = None,
    resume: bool = True,
    torch_threads: int = 1,
    num_groups: Optional[int] = None,
    gather: str = 'auto',
    index_shards: int = 1,
) -> Dict[str, Any]:
    r"""Runs (or resumes) the whole pipeline; see the module docstring.

    Args:
        spark (pyspark.sql.SparkSession): The session.
        interactions_path: Parquet ``user_id, item_id[, timestamp]``.
        items_path: Parquet ``item_id, features``.
        model_path: A ``save_model`` file or a ``pinsage-train``
            checkpoint.
        out_path: Output directory (local or a Hadoop URI).
        num_neighbors, num_walks, walk_length, restart_prob, seed: The
            walks (see
            :func:`.walks.spark_importance_neighbors`).
        index_dir: Local directory for the embeddings files and the faiss
            index, written by the driver. (default: ``out/index`` when
            :obj:`out_path` is local; required for a Hadoop URI)
        index_kind (str): ``flat`` (exact), ``ivf``, ``ivfpq`` or
            ``hnsw`` (see
            :func:`~pinsage_pyg.inference.export.build_faiss_index`).
        index_params (dict, optional): The index's parameters.
        resume (bool): Reuse the stages already in :obj:`out_path`
            (default), or recompute them all.
        torch_threads (int): torch threads per Python worker.
        num_groups (int, optional): Hash groups of the walks and the
            layers. (default: per stage, one per core at least)
        gather (str): How the layers' messages reach their targets
            (``auto``, ``broadcast`` or ``shuffle``; see
            :func:`~pinsage_pyg.inference.spark.spark_layerwise_embed`).
        index_shards (int): ``1`` (default): one index, built on the driver
            in :obj:`index_dir`. More: the index in that many shards, built
            by the workers into ``out/index_shards`` (nothing is collected
            on the driver, no :obj:`index_dir`; read them with
            :func:`~pinsage_pyg.inference.export.load_index_shards`).

    Returns:
        dict: ``out_path``, ``index_dir``, ``num_items``,
        ``num_interactions``, ``num_edges``, ``num_layers``, ``reused``
        (the stages taken from an earlier run), ``seconds``,
        ``items_per_second`` and, when sharded, ``index_shards`` (the
        dataset's path) and ``num_shards`` (``index_dir`` is then
        :obj:`None`).
    """
    t0 = time.perf_counter()
    _check_params(num_neighbors, num_walks, walk_length, restart_prob,
                  num_groups)
    choose_gather(gather, 0, 0)  # a bad name fails before any work
    from pinsage_pyg.inference.export import INDEX_KINDS
    if index_kind not in INDEX_KINDS:
        raise ConfigError(f"index_kind must be one of {list(INDEX_KINDS)} "
                          f"(got {index_kind!r}).")
    if not isinstance(index_shards, numbers.Integral) or isinstance(
            index_shards, bool) or index_shards < 1:
        raise ConfigError(f"index_shards must be an integer >= 1 (got "
                          f"{index_shards!r}).")
    if index_shards > 1 and index_dir is not None:
        raise ConfigError("index_dir is where the driver writes the single "
                          "index; with index_shards > 1 the shards are "
                          "written to <out>/index_shards instead: drop "
                          "index_dir (--index-dir).")
    if torch_threads < 0:
        raise ConfigError(f"torch_threads must be >= 0 (got "
                          f"{torch_threads}).")
    interactions_path, items_path, out_path = (
        _qualify(spark, p) for p in (interactions_path, items_path,
                                     out_path))
    model_path = os.fspath(model_path)
    if index_shards == 1 and index_dir is None:
        if _has_scheme(out_path) and not out_path.startswith('file:'):
            raise ConfigError(f"output '{out_path}' is not a local path: "
                              f"give index_dir (--index-dir), a local "
                              f"directory for the faiss index.")
        index_dir = Path(out_path.split(':', 1)[-1] if out_path.startswith(
            'file:') else out_path) / 'index'
    if index_dir is not None:
        index_dir = Path(index_dir).absolute()

    payload = _read_model_bytes(spark, model_path)
    model = _model_from_bytes(payload, f"model file '{model_path}'")
    manifest = {
        'format': PIPELINE_FORMAT, 'version': 1,
        'interactions': interactions_path, 'items': items_path,
        'model_sha256': hashlib.sha256(payload).hexdigest(),
        'num_neighbors': int(num_neighbors), 'num_walks': int(num_walks),
        'walk_length': int(walk_length),
        'restart_prob': float(restart_prob), 'seed': int(seed),
        'index_kind': index_kind, 'index_params': index_params or {}}
    if index_shards > 1:  # absent for one index (older manifests match)
        manifest['index_shards'] = int(index_shards)
    fs = _FS(spark, out_path)
    key = uuid.uuid4().hex
    man_path = f"{out_path}/manifest.json"
    if fs.exists(out_path):
        if not fs.exists(man_path):
            raise DataError(f"output '{out_path}' exists but is not a Spark "
                            f"pipeline output (no manifest.json); choose "
                            f"another directory.")
        if resume:
            _check_resume(_read_manifest(spark, man_path), manifest,
                          out_path)
        else:  # start over
            fs.delete(out_path)
            if index_dir is not None and index_dir.exists():
                shutil.rmtree(index_dir)
    reused = []
    nb_path = f"{out_path}/neighbors"
    num_interactions = None
    if fs.exists(nb_path):
        reused.append('neighbors')
        log.info('neighbors: reusing %s', nb_path)
    else:  # every check before anything is written
        inter, num_interactions, num_items, _, max_item = \
            read_interactions(spark, interactions_path)
        _check_items(spark, items_path, model, inter, interactions_path)
    if not fs.exists(man_path):
        _write_manifest(spark, fs, man_path, manifest, key)
    if 'neighbors' not in reused:
        work = f"{out_path}/_walks_tmp_{key}"
        try:
            compute_neighbors(spark, inter, max_item, num_items, nb_path, fs,
                              work, num_neighbors, num_walks, walk_length,
                              restart_prob, seed, num_groups)
        finally:
            if fs.exists(work):
                fs.delete(work)
        log.info('neighbors: %.1fs', time.perf_counter() - t0)

    items, neighbors, num_items, num_edges = read_inputs(
        spark, items_path, nb_path, model)
    emb_path = f"{out_path}/embeddings"
    if fs.exists(emb_path):
        reused.append('embeddings')
    else:
        gather_used = choose_gather(gather, num_items,
                                    int(model.hidden_channels))
        groups = num_groups or default_num_groups(spark, num_edges,
                                                  gather_used)

        def on_layer(k, was_reused):
            if was_reused:
                reused.append(f'layer_{k}')
            log.info('layer %d: %.1fs', k, time.perf_counter() - t0)

        state = run_layers(spark, items, neighbors, model, payload,
                           lambda k: f"{out_path}/layers/layer_{k}", fs,
                           groups, int(torch_threads), reuse=True,
                           on_layer=on_layer, gather=gather_used)
        write_heads(spark, state, model, payload, fs, emb_path,
                    int(torch_threads))

    shards_path, num_shards = f"{out_path}/index_shards", None
    if index_shards > 1:
        if fs.exists(shards_path):
            reused.append('index')
            num_shards = spark.read.parquet(shards_path).select(
                'shard').distinct().count()
        else:
            num_shards = build_index_shards(spark, emb_path, shards_path, fs,
                                            key, int(index_shards),
                                            index_kind, index_params)
    elif index_dir.exists():
        reused.append('index')
    else:
        local = emb_path
        if _has_scheme(emb_path) and not emb_path.startswith('file:'):
            local = None
        if local is None:  # copy a remote output next to the index
            tmp = index_dir.with_name(f'.{index_dir.name}.emb.{key}')
            spark.read.parquet(emb_path).write.mode('overwrite').parquet(
                f"file://{tmp}")
            local = str(tmp)
        try:
            ids, item_emb, query_emb = read_embeddings(
                local.split(':', 1)[-1] if local.startswith('file:')
                else local)
        finally:
            if local != emb_path and Path(local).exists():
                shutil.rmtree(local)
        _write_index(index_dir, ids, item_emb, query_emb, model.asymmetric,
                     index_kind, index_params)
    seconds = time.perf_counter() - t0
    log.info('pipeline done in %.1fs (reused: %s)', seconds,
             ', '.join(reused) or 'nothing')
    sharded = {} if index_shards == 1 else {'index_shards': shards_path,
                                            'num_shards': num_shards}
    return {'out_path': out_path,
            'index_dir': None if index_dir is None else str(index_dir),
            **sharded, 'num_items': num_items, 'num_interactions': num_interactions,
            'num_edges': num_edges, 'num_layers': model.num_layers,
            'reused': reused, 'seconds': seconds,
            'items_per_second': num_items / seconds}


def _check_items(spark, items_path: str, model, interactions,
                 interactions_path: str) -> None:
    r"""The ``items`` input against the model (the checks of
    :func:`read_inputs` with no neighbours yet) and against the items of
    the interactions."""
    from pyspark.sql import functions as F
    items = _read_input(spark, items_path, 'items')
    _check_columns(items, items_path, 'items',
                   {'item_id': 'integer', 'features': 'vector'})
    items = items.select(F.col('item_id').cast('long'),
                         F.col('features').cast('array<float>'))
    none = spark.createDataFrame([], 'target long, neighbor long, '
                                     'weight double')
    _validate(items, none, items_path, '(none yet)',
              int(model.encoder.in_channels), False)
    unknown = interactions.select('item_id').distinct().join(
        items.select('item_id'), 'item_id', 'left_anti').agg(
        F.count(F.lit(1)).alias('n'), F.min('item_id').alias('lo'),
        F.max('item_id').alias('hi')).first()
    if unknown['n']:
        raise DataError(
            f"interactions '{interactions_path}': {unknown['n']} item ids are"
            f" not in items '{items_path}' (smallest {unknown['lo']}, "
            f"largest {unknown['hi']}); every interacted item needs "
            f"features.")
