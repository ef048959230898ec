r"""Full-graph embedding, embedding export, retrieval and recommendation."""
from pinsage_pyg.inference.layerwise import (LayerwiseResult,
                                             WorkDirMismatch,
                                             layerwise_embed,
                                             load_neighborhoods)

__all__ = [
    'layerwise_embed',
    'load_neighborhoods',
    'LayerwiseResult',
    'WorkDirMismatch',
]
