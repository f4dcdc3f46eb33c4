"""``ad``: refinement by automatic differentiation (PyTorch) as a plugin."""

from cdi_plugins.algorithms.ad.plugin import cdi_register_algorithms

__all__ = ["cdi_register_algorithms"]
