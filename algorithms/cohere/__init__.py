"""``cohere``: APS's cohere-core as a step, and the import of cohere experiments."""

from cdi_plugins.algorithms.cohere.plugin import cdi_register_algorithms, cdi_register_commands

__all__ = ["cdi_register_algorithms", "cdi_register_commands"]
