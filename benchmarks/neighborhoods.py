"""How informative are the importance neighbourhoods on their own?

    python benchmarks/neighborhoods.py --data movielens_100k movielens_1m \
        --windows none 1 2 3 5 10 20 --write benchmarks/results/neighborhoods.md

Builds the importance graph of every item (train interactions only) with
whole-history walks (`none`, the paper's board walk) and time-local walks
(`sampler.window=w`), and scores each user's candidates by the importance
weight of the candidate in the neighbourhood of the user's last train item:
HR@10 on the leave-last-out protocol of the main table. No model is
trained: this measures the signal the graph hands to PinSageConv.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from hydra import compose, initialize_config_module

from pinsage_pyg.sampler.walks import BipartiteCSR, importance_graph
from pinsage_pyg.evaluation.protocols import (evaluate_leave_last_out,
                                              evaluation_splits)
from pinsage_pyg.training.pipeline import load_dataset


def hit_rate(graph, split, num_items: int, k: int = 10) -> float:
    r"""HR@k of the main table's protocol (the same evaluator, exclusions
    and seeded tie-breaking) with the importance weight of a candidate in
    the query item's neighbourhood as its score."""
    scores = torch.zeros(num_items, num_items)
    scores[graph.edge_index[1], graph.edge_index[0]] = graph.edge_weight
    return evaluate_leave_last_out(lambda q: scores[q], split.query_item,
                                   split.target_item, split.exclude_ptr,
                                   split.exclude_item, k=k)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--data', nargs='+', default=['movielens_100k'])
    p.add_argument('--windows', nargs='+',
                   default=['none', '1', '2', '3', '5', '10', '20'])
    p.add_argument('--walks', type=int, default=200)
    p.add_argument('--num-neighbors', type=int, default=50)
    p.add_argument('--write', default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    lines = ['# Importance neighbourhoods as a recommender (no training)', '',
             f"Command: `python benchmarks/neighborhoods.py --data "
             f"{' '.join(args.data)} --windows {' '.join(args.windows)}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; "
             f"T={args.num_neighbors}, {args.walks} walks of length 2 per "
             f"item, seed 0. Score of a candidate = its importance weight "
             f"in the neighbourhood of the user's last train item; HR@10 on "
             f"the leave-last-out protocol.", '',
             '| data | window | val HR@10 | test HR@10 | graph (s) |',
             '|---|---|---|---|---|']
    with initialize_config_module(config_module='pinsage_pyg.configs',
                                  version_base='1.3'):
        for name in args.data:
            cfg = compose('train', overrides=[f'data={name}'])
            ds = load_dataset(cfg.data)
            csr = BipartiteCSR.from_hetero(ds.hetero_data())
            lloo, _ = evaluation_splits(ds)
            for w in args.windows:
                window = None if w == 'none' else int(w)
                t = time.time()
                g = importance_graph(csr, None, args.num_neighbors,
                                     args.walks, 2, seed=0, window=window)
                sec = time.time() - t
                val = hit_rate(g, lloo['val'], ds.num_items)
                test = hit_rate(g, lloo['test'], ds.num_items)
                lines.append(f"| {name} | {w} | {val:.4f} | {test:.4f} | "
                             f"{sec:.1f} |")
                print(lines[-1], flush=True)
    if args.write:
        Path(args.write).write_text('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
