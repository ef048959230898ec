r"""Interaction logs -> PinSage datasets (split, features, item-user graph)."""
from pinsage_pyg.data.dataset import (PinSageDataset, build_dataset,
                                      chronological_split)
from pinsage_pyg.data.features import FeatureSpec, build_item_features
from pinsage_pyg.data.interactions import (DataError, read_table,
                                           validate_interactions,
                                           validate_item_table)
from pinsage_pyg.data.synthetic import synthetic_interactions

__all__ = [
    'PinSageDataset',
    'build_dataset',
    'chronological_split',
    'FeatureSpec',
    'build_item_features',
    'DataError',
    'read_table',
    'validate_interactions',
    'validate_item_table',
    'synthetic_interactions',
]
