r"""The command line of the Spark jobs: ``python -m
pinsage_pyg.inference.spark [embed|neighbors|pipeline] ...`` (``embed``
is the default, so the options alone run the layer-wise embedding)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Dict, Optional, Sequence

from pinsage_pyg.config import ConfigError
from pinsage_pyg.data.interactions import DataError
from pinsage_pyg.inference.spark.job import (spark_layerwise_embed,
                                             spark_session)

COMMANDS = ('embed', 'neighbors', 'pipeline')
PROG = 'python -m pinsage_pyg.inference.spark'


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument('--out', required=True, help="output directory")
    p.add_argument('--master', default=None,
                   help="Spark master (local[2], yarn, k8s://..., "
                        "spark://...); omit under spark-submit")
    p.add_argument('--shuffle-partitions', type=int, default=None,
                   help="spark.sql.shuffle.partitions")
    p.add_argument('--conf', action='append', default=[], metavar='KEY=VALUE',
                   help="extra Spark configuration (repeatable)")


def _walk_options(p: argparse.ArgumentParser) -> None:
    p.add_argument('--interactions', required=True,
                   help="Parquet: user_id, item_id (integers >= 0), "
                        "timestamp (optional)")
    p.add_argument('--num-neighbors', type=int, default=50,
                   help="T, neighbours kept per item (default 50)")
    p.add_argument('--num-walks', type=int, default=100,
                   help="walks per item (default 100)")
    p.add_argument('--walk-length', type=int, default=2,
                   help="item-to-item steps per walk (default 2)")
    p.add_argument('--restart-prob', type=float, default=0.0,
                   help="restart probability per step (default 0)")
    p.add_argument('--seed', type=int, default=0,
                   help="seed of the walks (default 0)")
    p.add_argument('--groups', type=int, default=None,
                   help="hash groups (tasks per stage; default: per core)")


def _gather_option(p: argparse.ArgumentParser) -> None:
    p.add_argument('--gather', default='auto',
                   choices=('auto', 'broadcast', 'shuffle'),
                   help="how a layer's messages reach their targets: "
                        "broadcast them (no shuffle), shuffle them, or "
                        "auto: broadcast up to 512 MiB (default)")


def _parser(command: str) -> argparse.ArgumentParser:
    if command == 'neighbors':
        p = argparse.ArgumentParser(
            prog=f'{PROG} neighbors',
            description="Importance neighbourhoods (random walks and top-T "
                        "counting) of every item on Apache Spark (see "
                        "docs/spark.md).")
        _walk_options(p)
        p.add_argument('--overwrite', action='store_true',
                       help="replace an existing output")
        _common(p)
        return p
    if command == 'pipeline':
        p = argparse.ArgumentParser(
            prog=f'{PROG} pipeline',
            description="Interactions -> neighbourhoods -> K layers -> "
                        "embeddings -> faiss index on Apache Spark, "
                        "resumable stage by stage (see docs/spark.md).")
        _walk_options(p)
        p.add_argument('--items', required=True,
                       help="Parquet: item_id (integer), features (array)")
        p.add_argument('--model', required=True,
                       help="save_model(...) file or pinsage-train "
                            "checkpoint")
        p.add_argument('--index-dir', default=None,
                       help="local directory of the faiss index (default "
                            "<out>/index)")
        p.add_argument('--index-kind', default='flat',
                       choices=('flat', 'ivf', 'ivfpq', 'hnsw'))
        p.add_argument('--index-shards', type=int, default=1,
                       help="build the index in this many shards on the "
                            "workers, into <out>/index_shards (default 1: "
                            "one index on the driver, in --index-dir)")
        p.add_argument('--no-resume', action='store_true',
                       help="recompute every stage")
        p.add_argument('--torch-threads', type=int, default=1,
                       help="torch threads per Python worker")
        _gather_option(p)
        _common(p)
        return p
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Layer-wise PinSage embedding of every item on Apache "
                    "Spark (see docs/spark.md). Also: "
                    f"'{PROG} neighbors --help', '{PROG} pipeline --help'.")
    p.add_argument('--items', required=True,
                   help="Parquet: item_id (integer), features (array)")
    p.add_argument('--neighbors', required=True,
                   help="Parquet: target, neighbor (integer), weight")
    p.add_argument('--model', required=True,
                   help="save_model(...) file or pinsage-train checkpoint")
    p.add_argument('--overwrite', action='store_true',
                   help="replace an existing output")
    p.add_argument('--partitions', type=int, default=None,
                   help="repartition the items into this many partitions")
    p.add_argument('--torch-threads', type=int, default=1,
                   help="torch threads per Python worker (0: torch default)")
    p.add_argument('--keep-layers', action='store_true',
                   help="keep the per-layer Parquet in <out>_layers")
    _gather_option(p)
    _common(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    r"""``python -m pinsage_pyg.inference.spark [embed|neighbors|pipeline]
    ...``: runs :func:`spark_layerwise_embed`,
    :func:`~pinsage_pyg.inference.spark.walks.spark_importance_neighbors`
    or :func:`~pinsage_pyg.inference.spark.pipeline.spark_pipeline` and
    prints a throughput line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else 'embed'
    parser = _parser(command)
    args = parser.parse_args(argv)
    conf = {}
    for item in args.conf:
        if '=' not in item:
            parser.error(f"--conf expects KEY=VALUE (got {item!r})")
        k, v = item.split('=', 1)
        conf[k] = v
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        spark = spark_session(args.master,
                              shuffle_partitions=args.shuffle_partitions,
                              conf=conf)
        summary = _run(command, spark, args)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return summary


def _run(command: str, spark, args) -> Dict[str, Any]:
    walks = {} if command == 'embed' else dict(
        num_neighbors=args.num_neighbors, num_walks=args.num_walks,
        walk_length=args.walk_length, restart_prob=args.restart_prob,
        seed=args.seed, num_groups=args.groups)
    if command == 'neighbors':
        from pinsage_pyg.inference.spark.walks import \
            spark_importance_neighbors
        s = spark_importance_neighbors(spark, args.interactions, args.out,
                                       overwrite=args.overwrite, **walks)
        print(f"neighbourhoods of {s['num_items']} items ({s['num_edges']} "
              f"edges from {s['num_interactions']} interactions) in "
              f"{s['seconds']:.1f}s: {s['items_per_second']:.1f} items/s; "
              f"output in {s['out_path']}")
        return s
    if command == 'pipeline':
        from pinsage_pyg.inference.spark.pipeline import spark_pipeline
        s = spark_pipeline(spark, args.interactions, args.items, args.model,
                           args.out, index_dir=args.index_dir,
                           index_kind=args.index_kind,
                           resume=not args.no_resume,
                           torch_threads=args.torch_threads,
                           gather=args.gather,
                           index_shards=args.index_shards, **walks)
        where = (f"faiss index in {s['index_dir']}" if s['index_dir'] else
                 f"faiss index in {s['num_shards']} shards in "
                 f"{s['index_shards']}")
        print(f"pipeline: {s['num_items']} items, {s['num_edges']} "
              f"neighbour edges, {s['num_layers']} layers in "
              f"{s['seconds']:.1f}s ({s['items_per_second']:.1f} items/s; "
              f"reused: {', '.join(s['reused']) or 'nothing'}); "
              f"embeddings in {s['out_path']}/embeddings, {where}")
        return s
    s = spark_layerwise_embed(
        spark, args.items, args.neighbors, args.model, args.out,
        overwrite=args.overwrite, num_partitions=args.partitions,
        torch_threads=args.torch_threads, keep_layers=args.keep_layers,
        gather=args.gather)
    print(f"embedded {s['num_items']} items ({s['num_edges']} "
          f"neighbour edges, {s['num_layers']} layers) in "
          f"{s['seconds']:.1f}s: {s['items_per_second']:.1f} "
          f"items/s; output in {s['out_path']}")
    return s
