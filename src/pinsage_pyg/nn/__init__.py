r"""PinSage layers, model and losses."""
from pinsage_pyg.nn.conv import PinSageConv
from pinsage_pyg.nn.loss import max_margin_loss, sampled_softmax_loss
from pinsage_pyg.nn.model import PinSage, PinSageHead

__all__ = [
    'PinSageConv',
    'PinSage',
    'PinSageHead',
    'max_margin_loss',
    'sampled_softmax_loss',
]
