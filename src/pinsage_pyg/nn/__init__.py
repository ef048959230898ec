r"""PinSage layers, model and losses."""
from pinsage_pyg.nn.conv import ADJ_LAYOUTS, PinSageConv, to_adj_t
from pinsage_pyg.nn.loss import (full_softmax_loss, max_margin_loss,
                                 sampled_softmax_loss)
from pinsage_pyg.nn.model import (PinSage, PinSageHead, ResidualQueryHead,
                                  upgrade_model_kwargs)

__all__ = [
    'ADJ_LAYOUTS',
    'to_adj_t',
    'PinSageConv',
    'PinSage',
    'PinSageHead',
    'ResidualQueryHead',
    'upgrade_model_kwargs',
    'max_margin_loss',
    'full_softmax_loss',
    'sampled_softmax_loss',
]
