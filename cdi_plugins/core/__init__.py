"""What a plugin author touches: the contract between the framework and every algorithm.

``AlgorithmSpec`` and ``Param``/``ParamModel`` describe an algorithm, ``Problem``/``State``/``Context`` are
what its ``run`` receives and returns, ``Result`` is what a run produces, ``hookimpl`` marks the hooks
(``cdi_register_algorithms``, ``cdi_register_commands``), the registry finds plugins, and
``parse_sequence`` reads cohere-style step strings.  Built-in plugins import from here (and from
``cdi_plugins.compute`` for shared numerics) exactly as a third party's would.
"""

from cdi_plugins.core.commands import CommandSpec
from cdi_plugins.core.hookspecs import hookimpl
from cdi_plugins.core.params import Param, ParamModel, suggest
from cdi_plugins.core.registry import AlgorithmSpec, Registry, get_registry
from cdi_plugins.core.result import Result
from cdi_plugins.core.sequence import parse_sequence
from cdi_plugins.core.state import Context, Problem, State
from cdi_plugins.errors import CDIError

__all__ = ["AlgorithmSpec", "CommandSpec", "Param", "ParamModel", "Problem", "State", "Context", "Result", "CDIError",
           "hookimpl", "Registry", "get_registry", "parse_sequence", "suggest"]
