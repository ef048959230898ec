r"""Lightning training, evaluation metrics and baselines."""
from pinsage_pyg.training.datamodule import PinSageDataModule, SamplerConfig
from pinsage_pyg.training.module import PinSageModule

__all__ = ['PinSageDataModule', 'SamplerConfig', 'PinSageModule']
