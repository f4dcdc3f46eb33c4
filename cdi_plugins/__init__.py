"""cdi-plugins: phase retrieval for Bragg coherent diffraction imaging as interchangeable plugins.

Public API (stable)::

    import cdi_plugins
    result = cdi_plugins.run("configs/demo.yaml")          # or a YAML string, or a dict
    result.obj, result.support, result.history, result.timings
    cdi_plugins.save(result, "out.cxi")
    result = cdi_plugins.load("out.cxi")

Plugin authors need :func:`hookimpl`, :class:`AlgorithmSpec`, :class:`Param`,
:class:`State` and :class:`CDIError` (see ``cdi_plugins.hookspecs``).
"""

from __future__ import annotations

import os

from cdi_plugins._version import __version__

from cdi_plugins.errors import CDIError
from cdi_plugins.core.hookspecs import hookimpl
from cdi_plugins.core.params import Param, ParamModel
from cdi_plugins.core.registry import AlgorithmSpec, Registry, get_registry
from cdi_plugins.core.result import Result
from cdi_plugins.core.state import Context, Problem, State


def __getattr__(name):
    # the pipeline (recipes, readers, preparation) loads on first use: `import cdi_plugins` stays cheap
    # for plugins, and `cdi algorithms` answers without importing what only a run needs
    if name in ("run", "run_all"):
        from cdi_plugins import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module 'cdi_plugins' has no attribute {name!r}")

__all__ = ["run", "run_all", "save", "load", "Result", "CDIError", "hookimpl", "AlgorithmSpec", "Param",
           "ParamModel", "Problem", "State", "Context", "Registry", "get_registry", "__version__"]


def save(result: Result, path, *, overwrite: bool = False) -> None:
    """Write *result* as a CXI (HDF5) file, atomically.

    Refuses to overwrite an existing file unless *overwrite*, and never
    overwrites the file the data was read from.
    """
    from cdi_plugins.io import write_cxi
    source = (result.metadata or {}).get("source")
    protect = (source,) if source and os.path.exists(str(source)) else ()
    write_cxi(result, path, overwrite=overwrite, protect=protect)


def load(path) -> Result:
    """Read a result written by :func:`save` (or ``cdi run``)."""
    from cdi_plugins.io import load_cxi
    return load_cxi(path)
