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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m pinsage_pyg.inference.spark',
        description="Layer-wise PinSage embedding of every item on Apache "
                    "Spark (see docs/spark.md).")
    p.add_argument('--items', required=True,
                   help="Parquet: item_id (integer), features (array)")
    p.add_argument('--neighbors', required=True,
                   help="Parquet: target, neighbor (integer), weight")
    p.add_argument('--model', required=True,
                   help="save_model(...) file or pinsage-train checkpoint")
    p.add_argument('--out', required=True, help="output directory")
    p.add_argument('--master', default=None,
                   help="Spark master (local[2], yarn, k8s://..., "
                        "spark://...); omit under spark-submit")
    p.add_argument('--overwrite', action='store_true',
                   help="replace an existing output")
    p.add_argument('--partitions', type=int, default=None,
                   help="repartition the items into this many partitions")
    p.add_argument('--shuffle-partitions', type=int, default=None,
                   help="spark.sql.shuffle.partitions")
    p.add_argument('--torch-threads', type=int, default=1,
                   help="torch threads per Python worker (0: torch default)")
    p.add_argument('--keep-layers', action='store_true',
                   help="keep the per-layer Parquet in <out>_layers")
    p.add_argument('--conf', action='append', default=[], metavar='KEY=VALUE',
                   help="extra Spark configuration (repeatable)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    r"""``python -m pinsage_pyg.inference.spark``: runs
    :func:`spark_layerwise_embed` and prints a throughput line."""
    args = _parser().parse_args(argv)
    conf = {}
    for item in args.conf:
        if '=' not in item:
            _parser().error(f"--conf expects KEY=VALUE (got {item!r})")
        k, v = item.split('=', 1)
        conf[k] = v
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        spark = spark_session(args.master,
                              shuffle_partitions=args.shuffle_partitions,
                              conf=conf)
        summary = spark_layerwise_embed(
            spark, args.items, args.neighbors, args.model, args.out,
            overwrite=args.overwrite, num_partitions=args.partitions,
            torch_threads=args.torch_threads, keep_layers=args.keep_layers)
    except (DataError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"embedded {summary['num_items']} items ({summary['num_edges']} "
          f"neighbour edges, {summary['num_layers']} layers) in "
          f"{summary['seconds']:.1f}s: {summary['items_per_second']:.1f} "
          f"items/s; output in {summary['out_path']}")
    return summary
