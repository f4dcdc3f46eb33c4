"""The validated recipe: datasets, their data and output, and the expanded list of steps."""

from __future__ import annotations

import re

import dataclasses
import os
from typing import Any

from cdi_plugins.core.params import suggest
from cdi_plugins.core.registry import Registry, get_registry
from cdi_plugins.core.sequence import parse_sequence
from cdi_plugins.core.limits import MAX_ITERATIONS, MAX_RUNS, MAX_STEPS
from cdi_plugins.runs import validate_ga
from cdi_plugins.runs.execute import Step
from cdi_plugins.errors import CDIError
from cdi_plugins.recipe.loader import _plain, read_recipe
from cdi_plugins.recipe.location import _key_parts, _Overlay, _Where
from cdi_plugins.recipe.overrides import _merge, apply_set, override_pairs
from cdi_plugins.physics.scan import SCAN_KEYS
from cdi_plugins.recipe.schema import (TOP_KEYS, check_keys, check_top, dataset_entries, validate_data,
                                       validate_defaults, validate_output, validate_postprocess,
                                       validate_settings)

__all__ = ["Step", "DataSpec", "OutputSpec", "DatasetPlan", "Recipe", "load_recipe"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where a dataset's data comes from: the validated ``data`` section.

    Exactly one of *path* and *simulate* is set.

    Attributes
    ----------
    base_dir : str
        Where relative paths start (the recipe file's folder, else the working directory).
    path : str or None
        The data file as the recipe wrote it (``"<array>"``: the caller passes an array).
    dataset, mask_dataset : str or None
        HDF5 datasets of the data and the mask.
    mask : str or None
        The mask file as the recipe wrote it (true/non-zero: not measured).
    simulate : dict or None
        :func:`~cdi_plugins.physics.simulate.simulate_crystal` arguments, defaults filled.
    free_fraction : float
        Held-out pixels for chi2_free.
    prepare : dict or None
        :func:`~cdi_plugins.physics.prepare.prepare` options, validated.
    """
    base_dir: str
    path: str | None = None
    dataset: str | None = None
    mask: str | None = None
    mask_dataset: str | None = None
    simulate: dict | None = None
    free_fraction: float = 0.0
    prepare: dict | None = None
    scan: dict | None = None   # a raw rocking scan (data.frames, beamline, spec, ...), validated

    def resolved(self, key: str = "path") -> str | None:
        """The file named by *key* (``"path"`` or ``"mask"``) relative to :attr:`base_dir`, or None."""
        p = getattr(self, key)
        if p is None:
            return None
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(self.base_dir, p))


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """Where a dataset's results go: the validated ``output`` section.

    *path*, *png*, *vti*, *html* and *cohere_dir* are templates (``{dataset}``,
    ``{recipe}``) as the recipe wrote them, or None when not asked for.
    """
    path: str | None = None
    overwrite: bool = False
    png: str | None = None
    vti: str | None = None
    html: str | None = None
    cohere_dir: str | None = None

    def reports(self) -> dict[str, str]:
        """``{"png": template, ...}`` of the report files asked for (file kind -> template)."""
        return {kind: t for kind, t in (("png", self.png), ("vti", self.vti), ("html", self.html)) if t}

    @property
    def wanted(self) -> bool:
        """Whether the recipe asks for any output at all."""
        return bool(self.path or self.cohere_dir or self.reports())


@dataclasses.dataclass
class DatasetPlan:
    """One dataset of a recipe: where its data comes from and what runs on it."""
    name: str
    data: DataSpec
    backend: str
    fft: str
    threads: int | None
    seed: int | None
    runs: int
    steps: list
    output: OutputSpec
    doc: dict  # the effective recipe for this dataset (after merges and overrides)
    base_dir: str
    source: str
    average: int = 1  # average the k best runs
    select: str = "auto"  # what ranks runs (cdi_plugins.runs.SELECT)
    workers: int | str = "auto"  # processes running runs side by side (cdi_plugins.runs.resolve_workers)
    ga: dict | None = None  # the genetic algorithm over the runs (cdi_plugins.runs.validate_ga), or None
    geometry: dict | None = None  # validated Bragg geometry (cdi_plugins.physics.postprocess.validate_geometry)
    postprocess: dict = dataclasses.field(default_factory=dict)
    prepare_where: dict = dataclasses.field(default_factory=dict)  # recipe location of each data.prepare key

    @property
    def iterations(self) -> int:
        """Iterations of one run."""
        return sum(s.iterations for s in self.steps)

    @property
    def total_runs(self) -> int:
        """Runs of the steps, all generations of ``ga`` together (``runs`` without one)."""
        if not self.ga:
            return self.runs
        n, total = self.runs, self.runs
        for cull in self.ga["cull"]:
            n -= cull
            total += n
        return total


@dataclasses.dataclass
class Recipe:
    text: str
    source: str
    datasets: list

    def dataset(self, name: str | None = None) -> DatasetPlan:
        if name is None:
            if len(self.datasets) != 1:
                names = ", ".join(d.name for d in self.datasets)
                raise CDIError(f"the recipe lists {len(self.datasets)} datasets ({names}); choose one", self.source)
            return self.datasets[0]
        for d in self.datasets:
            if d.name == name:
                return d
        raise CDIError(f"no dataset named '{name}'{suggest(name, [d.name for d in self.datasets])}", self.source)


def load_recipe(recipe, *, overrides: list[tuple[str, Any]] = (), registry: Registry | None = None,
                check_backend: bool = True, data: str | None = None) -> Recipe:
    """Load and fully validate a recipe.

    Parameters
    ----------
    recipe : str, os.PathLike or dict
        A path to a YAML file, a YAML string, or an already-parsed mapping.
    overrides : mapping or list of (key, value)
        Dotted-path overrides applied to every dataset (``--set``).
    registry : Registry, optional
        Where algorithm names are looked up (default: the process registry).
    check_backend : bool
        Also check that the requested backend can run here.
    data : str, optional
        A data file that replaces every dataset's ``data.path`` / ``data.simulate``
        (``cdi run --data``); the recipe's mask and free-pixel settings still apply.
        ``"<array>"`` means the caller passes an array.
    """
    overrides = override_pairs(overrides)
    registry = registry or get_registry()
    doc, text, source, base_dir = read_recipe(recipe)
    if data is not None and data != "<array>" and not os.path.exists(data):
        raise CDIError("data file not found", data)
    where = _Where(source, "", doc)
    check_top(doc, where, overrides)
    entries = dataset_entries(doc, where)
    overrides, per_dataset = _split_dataset_overrides(overrides, entries)
    base = {k: v for k, v in doc.items() if k != "datasets"}
    plans = []
    for i, (w, ds) in enumerate(entries):
        name = ds.get("name") or str(doc.get("name") or "default")
        overridden = {_key_parts(key): f"--set {key}" for key, _ in overrides}
        for full, key, _ in per_dataset.get(i, ()):
            overridden[_key_parts(key)] = f"--set {full}"
        if w is None:
            eff, ewhere = base, _Where(source, "", doc, overridden=overridden)
        else:
            over = {k: v for k, v in ds.items() if k not in ("name", "set")}
            eff = _merge(base, over)
            sets = ds.get("set") or {}
            if not isinstance(sets, dict):
                raise CDIError("set must be a mapping of KEY: VALUE (e.g. params.hio.beta: 0.7)", w.text("set"))
            sw = w.child("set", sets)
            for key, value in sets.items():
                apply_set(eff, str(key), value, sw.text())
            # --set wins over datasets[i].set, which wins over the recipe
            overridden = {**{_key_parts(str(k)): sw.text(k) for k in sets}, **overridden}
            # errors in keys the dataset provides point at the dataset entry, others at the base
            ewhere = _Where(source, "", _Overlay(doc, ds), overridden=overridden)
        if overrides or data is not None:
            eff = _merge(eff, {})
            for key, value in overrides:
                apply_set(eff, key, value)
            if data is not None:
                d = dict(eff.get("data") or {})
                d.pop("simulate", None)
                if "frames" in d and data != "<array>":
                    d["frames"] = data              # --data replaces the folder of frames
                else:
                    for key in SCAN_KEYS:           # an array in hand: no raw scan
                        d.pop(key, None)
                    d["path"] = data
                eff["data"] = d
        for full, key, value in per_dataset.get(i, ()):   # --set datasets.<i>.KEY: the most specific wins
            apply_set(eff, key, value, f"--set {full}")
        plans.append(_validate_dataset(eff, ewhere, name, source, base_dir, registry, check_backend))
    return Recipe(text=text, source=source, datasets=plans)


def _split_dataset_overrides(overrides, entries) -> tuple[list, dict]:
    """``--set datasets.<i>.KEY=VALUE`` apply to dataset *i* only: ``(other overrides, {i: [(full key, KEY,
    value)]})``.  Without this they would land in every dataset as an unused key and be ignored."""
    rest, per = [], {}
    for key, value in overrides:
        if not key.startswith("datasets"):
            rest.append((key, value))
            continue
        if entries == [(None, {})]:
            raise CDIError("the recipe has no datasets list", f"--set {key}")
        m = re.match(r"^datasets(?:\.|\[)(-?\d+)\]?\.(.+)$", key)
        if m is None:
            raise CDIError("use datasets.<index>.KEY=VALUE (the recipe's datasets list, counted from 0)",
                           f"--set {key}")
        idx = int(m.group(1))
        if not -len(entries) <= idx < len(entries):
            raise CDIError(f"index {idx} is out of range (the recipe lists {len(entries)} datasets)", f"--set {key}")
        per.setdefault(idx % len(entries), []).append((key, m.group(2), value))
    return rest, per


def _validate_dataset(doc, where, name, source, base_dir, registry, check_backend) -> DatasetPlan:
    check_keys(doc, TOP_KEYS, where, "a recipe")
    data, prepare_where = validate_data(doc, where, base_dir)
    settings, resolved_backend = validate_settings(doc, where, check_backend)
    output = validate_output(doc, where)
    geometry, post = validate_postprocess(doc, where)
    defaults = validate_defaults(doc, where, registry)
    if "steps" not in doc or doc["steps"] in (None, [], ""):
        raise CDIError("no steps: give a list of steps or a sequence such as \"3*(20*ER+180*HIO)+20*ER\"",
                       where.text("steps") if "steps" in doc else where.text())
    steps: list[Step] = []
    _expand(doc["steps"], where, "steps", defaults, registry, steps, resolved_backend, depth=0)
    _check_size(steps, [], 0, where.text("steps"))          # lists and sequences together
    if settings["runs"] > MAX_RUNS:
        raise CDIError(f"runs = {settings['runs']:,} is more than the limit of {MAX_RUNS:,}", where.text("runs"))
    gw = where.child("ga")
    ga = validate_ga(doc.get("ga"), lambda key=None: gw.text(key) if key else where.text("ga"),
                     runs=settings["runs"], average=settings["average"], free=bool(data["free_fraction"]))
    if ga is not None and settings["runs"] * ga["generations"] > MAX_RUNS:
        raise CDIError(f"runs x ga.generations = {settings['runs'] * ga['generations']:,} runs of the steps, more "
                       f"than the limit of {MAX_RUNS:,}", where.text("ga"))
    return DatasetPlan(name=name, data=DataSpec(base_dir=base_dir, **data), steps=steps,
                       output=OutputSpec(**output), doc=_plain(doc), base_dir=base_dir, source=source,
                       geometry=geometry, postprocess=post, prepare_where=prepare_where, ga=ga, **settings)


def _make_step(alg_name, values: dict, defaults: dict, registry, where_fn, where_alg: str,
               backend: str | None) -> Step:
    spec = registry.get(alg_name, where_alg)
    if spec.unavailable:
        raise CDIError(f"algorithm '{spec.name}' is not available: {spec.unavailable}", where_alg)
    if backend is not None and backend not in spec.backends:
        raise CDIError(f"algorithm '{spec.name}' does not run on the {backend} backend "
                       f"(it supports: {', '.join(spec.backends)})", where_alg)
    merged = dict(defaults.get(spec.name) or {})
    merged.update(values)
    params = spec.params.validate(merged, where_fn)
    if spec.check is not None:
        try:
            spec.check(params)
        except CDIError as e:
            raise e.at(where_fn(None)) from None
    return Step(spec, params, where_fn(None))


def _check_size(out: list, block: list, times: int, where: str) -> None:
    """Refuse, before building it, a plan that *times* more copies of *block* would take past the limits."""
    steps = len(out) + len(block) * times
    iterations = sum(st.iterations for st in out) + sum(st.iterations for st in block) * times
    if steps > MAX_STEPS:
        raise CDIError(f"the steps expand to {steps:,} steps, more than the limit of {MAX_STEPS:,}", where)
    if iterations > MAX_ITERATIONS:
        raise CDIError(f"the steps ask for {iterations:,} iterations, more than the limit of {MAX_ITERATIONS:,} "
                       "per run", where)


def _expand(node, parent: _Where, key, defaults, registry, out: list, backend, depth: int) -> None:
    if depth > 20:
        raise CDIError("steps are nested too deeply", parent.text(key))
    here = parent.child(key, node)
    if isinstance(node, str):
        try:
            seq = parse_sequence(node)
        except CDIError as e:
            raise e.at(parent.text(key)) from None
        for alg, count in seq:
            vals = {} if count is None else {"iterations": count}
            spec = registry.get(alg, f"{parent.text(key)} ({alg})")
            if count is not None and spec.iterations_param is None:
                raise CDIError(f"algorithm '{spec.name}' takes no iteration count; write it without 'N*'",
                               parent.text(key))
            out.append(_make_step(alg, vals, defaults, registry,
                                  lambda k=None, a=alg: f"{parent.text(key)} ({a})" + (f": {k}" if k else ""),
                                  f"{parent.text(key)} ({alg})", backend))
        return
    if not isinstance(node, list):
        raise CDIError("steps must be a list or a sequence string", parent.text(key))
    for i, item in enumerate(node):
        iw = here.child(i, item)
        if isinstance(item, str):
            _expand(item, here, i, defaults, registry, out, backend, depth + 1)
            continue
        if not isinstance(item, dict):
            raise CDIError("a step must be a mapping (algorithm: ...) or a sequence string", here.text(i))
        if "repeat" in item:
            extra = set(item) - {"repeat", "steps"}
            if extra:
                raise CDIError(f"a repeat block takes only 'repeat' and 'steps', not {sorted(extra)}", iw.text())
            n = item["repeat"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise CDIError(f"repeat must be an integer >= 1, got {n!r}", iw.text("repeat"))
            if "steps" not in item:
                raise CDIError("a repeat block needs 'steps'", iw.text())
            block: list[Step] = []
            _expand(item["steps"], iw, "steps", defaults, registry, block, backend, depth + 1)
            _check_size(out, block, n, iw.text("repeat"))   # before the block is repeated
            out.extend(block * n)
            continue
        if "sequence" in item:
            extra = set(item) - {"sequence", "params"}
            if extra:
                raise CDIError(f"a sequence step takes only 'sequence' and 'params', not {sorted(extra)}",
                               iw.text())
            local = dict(defaults)
            p = item.get("params") or {}
            if not isinstance(p, dict):
                raise CDIError("params must be a mapping of algorithm name -> parameters", iw.text("params"))
            for alg, vals in p.items():
                spec = registry.get(alg, iw.child("params").text(alg))
                if not isinstance(vals, dict):
                    raise CDIError("must be a mapping of parameter -> value", iw.child("params").text(alg))
                local[spec.name] = {**(defaults.get(spec.name) or {}), **vals}
            _expand(item["sequence"], iw, "sequence", local, registry, out, backend, depth + 1)
            continue
        if "algorithm" not in item:
            raise CDIError("a step needs 'algorithm' (or 'repeat', or 'sequence')", iw.text())
        alg = item["algorithm"]
        if not isinstance(alg, str):
            raise CDIError(f"algorithm must be a name, got {alg!r}", iw.text("algorithm"))
        values = {k: v for k, v in item.items() if k != "algorithm"}
        out.append(_make_step(alg, values, defaults, registry, lambda k=None, w=iw: w.text(k),
                              iw.text("algorithm"), backend))
