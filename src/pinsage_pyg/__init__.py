r"""PinSage (Ying et al., KDD 2018) as a PyTorch Geometric extension."""
__version__ = '0.1.0'
