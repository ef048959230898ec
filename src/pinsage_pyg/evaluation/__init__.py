r"""Evaluation: ranking protocols, metrics and non-learned baselines.

- :mod:`~pinsage_pyg.evaluation.protocols`: leave-last-out HR@k and the
  paper's hit-rate / scaled MRR on held-out pairs, with seeded tie-breaking.
- :mod:`~pinsage_pyg.evaluation.metrics`: :class:`HitRate` and
  :class:`ScaledMRR` (torchmetrics).
- :mod:`~pinsage_pyg.evaluation.baselines`: popularity, co-occurrence,
  transition counts, random and embedding scorers.
"""
from pinsage_pyg.evaluation.baselines import (EmbeddingScorer, Scorer,
                                              cooccurrence_scorer,
                                              embedding_scorer,
                                              popularity_scorer,
                                              random_scorer,
                                              transition_scorer)
from pinsage_pyg.evaluation.metrics import HitRate, ScaledMRR
from pinsage_pyg.evaluation.protocols import (LeaveLastOutSplit, PairSplit,
                                              baseline_scorers,
                                              evaluate_leave_last_out,
                                              evaluate_pairs,
                                              evaluate_scorers,
                                              evaluation_splits)

__all__ = [
    'EmbeddingScorer', 'Scorer', 'cooccurrence_scorer', 'embedding_scorer',
    'popularity_scorer', 'random_scorer', 'transition_scorer', 'HitRate',
    'ScaledMRR', 'LeaveLastOutSplit', 'PairSplit', 'baseline_scorers',
    'evaluate_leave_last_out', 'evaluate_pairs', 'evaluate_scorers',
    'evaluation_splits',
]
