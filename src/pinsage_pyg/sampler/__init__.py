r"""Random walks, importance neighbourhoods and the PinSage sampler."""
from pinsage_pyg.sampler.hard_negatives import (HardNegativeMiner, band_ranks,
                                                personalized_pagerank,
                                                ppr_topk)
from pinsage_pyg.sampler.pinsage_sampler import (PinSageLinkLoader,
                                                 PinSageSampler)
from pinsage_pyg.sampler.walk_backends import (WALK_BACKENDS,
                                               available_walk_backends,
                                               resolve_walk_backend)
from pinsage_pyg.sampler.walks import (BipartiteCSR, importance_graph,
                                       importance_neighbors, random_walk,
                                       walk_key)

__all__ = [
    'BipartiteCSR',
    'random_walk',
    'walk_key',
    'importance_neighbors',
    'importance_graph',
    'WALK_BACKENDS',
    'available_walk_backends',
    'resolve_walk_backend',
    'PinSageSampler',
    'PinSageLinkLoader',
    'band_ranks',
    'personalized_pagerank',
    'ppr_topk',
    'HardNegativeMiner',
]
