"""``nn``: the 3D-CDI-NN neural predictor as a plugin: the step (``plugin``), the network, its loss, figures
and weights (``network``), the mapping between the data's grid and the network's (``mapping``), training
and evaluation (``training``), adaptation to measured patterns without truth (``adapt``), and the commands it
adds to ``cdi`` (``commands``: simulate-set, train, nn-eval, nn-bench, adapt).
Registering it imports no torch: the network loads when a step or command needs it.
"""

from cdi_plugins.algorithms.nn.plugin import cdi_register_algorithms, cdi_register_commands

__all__ = ["cdi_register_algorithms", "cdi_register_commands"]
