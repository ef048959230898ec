r"""Lightning training (datamodule, module, pipeline)."""
from pinsage_pyg.training.datamodule import PinSageDataModule, SamplerConfig
from pinsage_pyg.training.module import PinSageModule

__all__ = ['PinSageDataModule', 'SamplerConfig', 'PinSageModule']
