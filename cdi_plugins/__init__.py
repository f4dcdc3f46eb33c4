"""cdi-plugins: phase retrieval for Bragg coherent diffraction imaging as interchangeable plugins.

Public API (stable)::

    import cdi_plugins
    result = cdi_plugins.run("configs/demo.yaml")          # or a YAML string, or a dict; writes its output:
    result.obj, result.support, result.history, result.timings
    cdi_plugins.save(result, "out.cxi")
    result = cdi_plugins.load("out.cxi")
    table = cdi_plugins.compare(["a.yaml", "b.yaml"], data="pattern.tif")   # several recipes, same data

Plugin authors need :func:`hookimpl`, :class:`AlgorithmSpec`, :class:`Param`, :class:`State` and
:class:`CDIError`, all from :mod:`cdi_plugins.core` (the plugin face; re-exported here).
"""

from __future__ import annotations

from cdi_plugins._version import __version__
from cdi_plugins.core import (AlgorithmSpec, CommandSpec, Context, Param, ParamModel, Problem, Registry, Result,
                              State, get_registry, hookimpl)
from cdi_plugins.errors import CDIError

_PIPELINE = ("run", "run_all", "problems", "compare", "save", "load")


def __getattr__(name):
    # the pipeline (recipes, readers, preparation) loads on first use: `import cdi_plugins` stays cheap
    # for plugins, and `cdi algorithms` answers without importing what only a run needs
    if name in _PIPELINE:
        from cdi_plugins import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'cdi_plugins' has no attribute {name!r}")


__all__ = [*_PIPELINE, "Result", "CDIError", "hookimpl", "AlgorithmSpec", "CommandSpec", "Param", "ParamModel",
           "Problem", "State", "Context", "Registry", "get_registry", "__version__"]
