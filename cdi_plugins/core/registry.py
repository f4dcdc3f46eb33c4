"""The pluggy registry of algorithms.

Plugins are found through the ``cdi_plugins`` entry-point group (the built-in
algorithms too) or registered in-process with :meth:`Registry.register_plugin`.
Each plugin is imported and asked for its algorithms on its own: one that fails
to import, has a malformed hook, raises while registering, or registers a name
already taken is recorded in :attr:`Registry.plugins` (``cdi plugins`` shows it)
and never takes the others down.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import re
import threading
from typing import Any, Callable, Sequence

import pluggy

from cdi_plugins.core import hookspecs
from cdi_plugins.core.beamline import BEAMLINE_NAME, BeamlineSpec
from cdi_plugins.core.commands import COMMAND_NAME, CommandSpec
from cdi_plugins.core.executors import SPEC_NAME, ExecutorSpec, FrameSourceSpec
from cdi_plugins.errors import CDIError
from cdi_plugins.core.params import ParamModel, suggest

__all__ = ["AlgorithmSpec", "CommandSpec", "ExecutorSpec", "FrameSourceSpec", "PluginInfo", "Registry", "get_registry", "reset_registry", "KINDS"]

log = logging.getLogger("cdi_plugins.registry")

KINDS = ("iterative", "predictor", "refiner", "external")
ENTRY_POINT_GROUP = "cdi_plugins"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class AlgorithmSpec:
    """What a plugin registers for one algorithm.

    Parameters
    ----------
    name : str
        Lower-case identifier used in recipes (``hio``).  Cohere-style sequence
        strings match it case-insensitively (``HIO``).
    kind : {"iterative", "predictor", "refiner", "external"}
    summary : str
        One line for ``cdi algorithms``.
    params : list of Param or ParamModel
        The parameter model; recipes are validated against it.
    run : callable
        ``run(problem, state, params, ctx) -> State``.  *state* is None for a
        first step; *params* is the validated dict; *ctx* a :class:`Context`.
    backends : tuple of str
        Array backends the algorithm runs on (``numpy``, ``cupy``).
    unavailable : str or None
        Why the algorithm cannot run here (e.g. an optional dependency is
        missing, with the install hint); listed but refused by validation.
    check : callable, optional
        ``check(params) -> None`` for rules between parameters; raise
        :class:`CDIError` (the recipe location is added for you).
    preload : tuple of str
        Modules the step imports, which the pipeline loads before the first step of a
        recipe (``("torch",)``): a library loaded by an earlier step must not take over
        their symbols (Intel MKL, loaded by the FFT engine above 64^3, exports the MKL
        functions torch carries inside and would replace them, changing torch's last bits).
    """

    name: str
    kind: str
    summary: str
    params: Any
    run: Callable
    backends: Sequence[str] = ("numpy", "cupy")
    unavailable: str | None = None
    check: Callable[[dict], None] | None = None
    preload: Sequence[str] = ()
    plugin: str = ""  # filled in by the registry: which plugin provided it

    def __post_init__(self):
        if not isinstance(self.params, ParamModel):
            self.params = ParamModel(self.params)

    @property
    def iterations_param(self) -> str | None:
        """The parameter holding the iteration count, if the algorithm has one."""
        return "iterations" if "iterations" in self.params else None


@dataclasses.dataclass
class PluginInfo:
    """One plugin as ``cdi plugins`` shows it."""

    name: str
    source: str
    status: str = "ok"  # "ok" or "error"
    error: str = ""
    algorithms: list = dataclasses.field(default_factory=list)
    version: str = ""
    commands: list = dataclasses.field(default_factory=list)
    executors: list = dataclasses.field(default_factory=list)
    frame_sources: list = dataclasses.field(default_factory=list)
    beamlines: list = dataclasses.field(default_factory=list)


class Registry:
    """Algorithms by name, with per-plugin error isolation.

    Parameters
    ----------
    entry_points : bool
        Load plugins from the ``cdi_plugins`` entry-point group.
    """

    def __init__(self, entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.algorithms: dict[str, AlgorithmSpec] = {}
        self.commands: dict[str, CommandSpec] = {}
        self.executors: dict[str, ExecutorSpec] = {}
        self.frame_sources: dict[str, FrameSourceSpec] = {}
        self.beamlines: dict[str, BeamlineSpec] = {}
        self.plugins: list[PluginInfo] = []
        if entry_points:
            self.load_entry_points()

    # ---- loading -------------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        eps = importlib.metadata.entry_points(group=group)
        seen = set()
        # the built-ins first, so a third party cannot shadow "hio" by loading earlier
        ordered = sorted(eps, key=lambda ep: (0 if ep.value.startswith("cdi_plugins.") else 1, ep.name))
        for ep in ordered:
            if (ep.name, ep.value) in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            version = f"{dist.name} {dist.version}" if dist is not None else ""
            try:
                obj = ep.load()
            except BaseException as exc:  # anything at all, sys.exit() too: a broken plugin must not break the host
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self.plugins.append(PluginInfo(ep.name, ep.value, "error",
                                               f"failed to import: {exc.__class__.__name__}: {exc}", version=version))
                log.warning("plugin %s (%s) failed to import: %s", ep.name, ep.value, exc)
                continue
            self.register_plugin(obj, name=ep.name, source=ep.value, version=version)

    def register_plugin(self, plugin: Any, name: str | None = None, source: str = "", version: str = "") -> PluginInfo:
        """Register a module or object carrying ``@hookimpl`` functions and collect its algorithms."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        info = PluginInfo(name, source or getattr(plugin, "__name__", repr(plugin)), version=version)
        self.plugins.append(info)
        if self.pm.is_registered(plugin):
            info.status, info.error = "error", "already registered"
            return info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy.PluginValidationError, duplicate names, ...
            info.status, info.error = "error", f"invalid plugin: {exc}"
            return info
        for hook, add in ((self.pm.hook.cdi_register_algorithms, self._add),
                          (self.pm.hook.cdi_register_commands, self._add_command),
                          (self.pm.hook.cdi_register_executors, self._add_executor),
                          (self.pm.hook.cdi_register_frame_sources, self._add_frame_source),
                          (self.pm.hook.cdi_register_beamlines, self._add_beamline)):
            for impl in [i for i in hook.get_hookimpls() if i.plugin is plugin]:
                def register(spec, _info=info, _add=add):
                    _add(spec, _info)
                try:
                    impl.function(register=register)
                except BaseException as exc:  # sys.exit() in a hook must not take the host down either
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    self._fail(info, f"{hook.name} raised {exc.__class__.__name__}: {exc}")
        return info

    @staticmethod
    def _fail(info: PluginInfo, msg: str) -> None:
        info.status = "error"
        info.error = (info.error + "; " if info.error else "") + msg
        log.warning("plugin %s: %s", info.name, msg)

    def _add_command(self, spec: CommandSpec, info: PluginInfo) -> None:
        if not isinstance(spec, CommandSpec):
            raise TypeError(f"register() expects a CommandSpec, got {type(spec).__name__}")
        if not COMMAND_NAME.match(spec.name):
            raise ValueError(f"command name {spec.name!r} must be lower-case letters, digits and -")
        if not callable(spec.run) or not callable(spec.arguments):
            raise TypeError(f"command {spec.name!r}: run and arguments must be callable")
        self._claim(self.commands, info.commands, "command", spec, info)

    def _add_executor(self, spec: ExecutorSpec, info: PluginInfo) -> None:
        self._add_named(spec, ExecutorSpec, "executor", self.executors, info.executors, info)

    def _add_frame_source(self, spec: FrameSourceSpec, info: PluginInfo) -> None:
        self._add_named(spec, FrameSourceSpec, "frame source", self.frame_sources, info.frame_sources, info)

    def _add_named(self, spec, cls, what: str, table: dict, listed: list, info: PluginInfo) -> None:
        if not isinstance(spec, cls):
            raise TypeError(f"register() expects an {cls.__name__}, got {type(spec).__name__}")
        if not SPEC_NAME.match(spec.name):
            raise ValueError(f"{what} name {spec.name!r} must be lower-case letters, digits, _ and -")
        if not callable(spec.make):
            raise TypeError(f"{what} {spec.name!r}: make is not callable")
        self._claim(table, listed, what, spec, info)

    def _add_beamline(self, spec: BeamlineSpec, info: PluginInfo) -> None:
        if not isinstance(spec, BeamlineSpec):
            raise TypeError(f"register() expects a BeamlineSpec, got {type(spec).__name__}")
        if not BEAMLINE_NAME.match(spec.name):
            raise ValueError(f"beamline name {spec.name!r} must be lower-case letters, digits and _")
        if not callable(spec.read_metadata):
            raise TypeError(f"beamline {spec.name!r}: read_metadata is not callable")
        self._claim(self.beamlines, info.beamlines, "beamline", spec, info)

    def beamline(self, name: str, where: str | None = None) -> BeamlineSpec:
        """The beamline called *name*, or CDIError naming the registered ones."""
        spec = self.beamlines.get(str(name))
        if spec is None:
            known = ", ".join(sorted(self.beamlines)) or "none"
            raise CDIError(f"unknown beamline '{name}'{suggest(str(name), self.beamlines)}; registered: {known} "
                           "(or describe the diffractometer in data.diffractometer with beamline: generic)", where)
        return spec

    def _add(self, spec: AlgorithmSpec, info: PluginInfo) -> None:
        if not isinstance(spec, AlgorithmSpec):
            raise TypeError(f"register() expects an AlgorithmSpec, got {type(spec).__name__}")
        if not _NAME_RE.match(spec.name):
            raise ValueError(f"algorithm name {spec.name!r} must be lower-case letters, digits and _")
        if spec.kind not in KINDS:
            raise ValueError(f"algorithm {spec.name!r}: kind {spec.kind!r} is not one of {', '.join(KINDS)}")
        if not callable(spec.run):
            raise TypeError(f"algorithm {spec.name!r}: run is not callable")
        self._claim(self.algorithms, info.algorithms, "algorithm", spec, info)

    def _claim(self, table: dict, listed: list, what: str, spec, info: PluginInfo) -> None:
        """Enter *spec* under its name, unless another plugin has it (first come, first served; both named)."""
        if spec.name in table:
            other = table[spec.name].plugin
            self._fail(info, f"{what} '{spec.name}' already registered by plugin '{other}'; this one is ignored")
            return
        spec.plugin = info.name
        table[spec.name] = spec
        listed.append(spec.name)

    def refuse_command(self, name: str, reason: str) -> None:
        """Drop the plugin command *name* (the host cannot offer it) and report *reason* on its plugin."""
        spec = self.commands.pop(name, None)
        if spec is None:
            return
        for info in self.plugins:
            if info.name == spec.plugin and name in info.commands:
                info.commands.remove(name)
                self._fail(info, f"command '{name}' {reason}; this one is ignored")

    # ---- lookup --------------------------------------------------------------------------
    def get(self, name: str, where: str | None = None) -> AlgorithmSpec:
        """The algorithm called *name* (case-insensitive), or CDIError with suggestions."""
        spec = self.algorithms.get(str(name).lower())
        if spec is None:
            known = ", ".join(sorted(self.algorithms)) or "none (no plugin loaded: is cdi-plugins installed?)"
            raise CDIError(f"unknown algorithm '{name}'{suggest(str(name).lower(), self.algorithms)}; "
                           f"registered: {known}", where)
        return spec

    def executor(self, name: str, where: str | None = "--executor") -> ExecutorSpec:
        """The executor called *name*, or CDIError listing the registered ones."""
        return self._lookup(self.executors, "executor", name, where)

    def frame_source(self, name: str, where: str | None = "--source") -> FrameSourceSpec:
        """The frame source called *name*, or CDIError listing the registered ones."""
        return self._lookup(self.frame_sources, "frame source", name, where)

    @staticmethod
    def _lookup(table: dict, what: str, name: str, where: str | None):
        spec = table.get(str(name))
        if spec is None:
            raise CDIError(f"unknown {what} '{name}'{suggest(str(name), table)}; registered: "
                           f"{', '.join(sorted(table)) or 'none'}", where)
        return spec

    def names(self) -> list[str]:
        return sorted(self.algorithms)


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded from entry points on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry()
        return _registry


def reset_registry(registry: Registry | None = None) -> None:
    """Replace the process-wide registry (``None``: reload from entry points on next use)."""
    global _registry
    with _lock:
        _registry = registry

