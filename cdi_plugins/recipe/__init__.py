"""YAML recipes: load, locate, override, validate, expand.

A recipe is checked completely before any computation.  Every error names
where it is: the file, the line, and the key path (``demo.yaml:14: steps[2].beta``).

Shape of a recipe (every key but ``steps`` optional)::

    name: demo
    data:                       # either a file ...
      path: crystal.tif         #   relative to the recipe file
      dataset: /entry_1/data_1/data   # HDF5 only
      mask: mask.npy            #   True/non-zero = not measured
      free_fraction: 0.0        #   held-out pixels for an unbiased chi2_free
      prepare: {threshold: 2, centre: max, shape: auto}   # see cdi_plugins.prepare
    # data: {simulate: {shape: 64, seed: 1}}     ... or a simulated crystal
    backend: auto               # auto | numpy | cupy
    fft: auto                   # auto | pyfftw | scipy | cupy
    threads: null               # CPU FFT threads (null: all cores)
    seed: 0                     # random start; same seed -> same result
    runs: 1                     # independent random starts; the lowest final chi2 is kept
    average: 1                  # average the k best runs (aligned to the best) instead of keeping one
    params:                     # defaults per algorithm for every step below
      hio: {beta: 0.9}
    steps: "3*(20*ER+180*HIO)+20*ER"   # cohere's sequence string, or a list:
    # steps:
    #   - {algorithm: hio, iterations: 200, beta: 0.9}
    #   - {repeat: 3, steps: [{algorithm: er, iterations: 20}, {sequence: "180*HIO"}]}
    geometry: {hkl: [1, 1, 1], lattice_constant: 4.078, energy: 9.0, voxel_size: 10}  # see postprocess
    postprocess: {remove_ramp: true, unwrap: true}
    output: {path: result.cxi, overwrite: false, png: result.png, vti: result.vti}
    # output.cohere_dir: results in cohere's results_phasing layout (image.npy, support.npy, errors)
    datasets:                   # several datasets, each with its own overrides
      - {name: a, data: {path: a.tif}}
      - {name: b, data: {path: b.tif}, set: {"params.hio.beta": 0.7}}
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from typing import Any

import yaml

from cdi_plugins.compute.backend import BACKENDS, FFT_ENGINES
from cdi_plugins.errors import CDIError
from cdi_plugins.core.params import Param, suggest
from cdi_plugins.physics.postprocess import POSTPROCESS, validate_geometry
from cdi_plugins.physics.prepare import PREPARE_KEYS, validate_prepare
from cdi_plugins.physics.simulate import SIMULATE
from cdi_plugins.core.registry import AlgorithmSpec, Registry, get_registry
from cdi_plugins.core.sequence import parse_sequence

__all__ = ["Recipe", "Step", "DatasetPlan", "load_recipe", "parse_sequence", "apply_set", "parse_set"]

TOP_KEYS = ("name", "description", "data", "backend", "fft", "threads", "seed", "runs", "average", "params",
            "steps",
            "geometry", "postprocess", "output", "datasets")
DATA_KEYS = ("path", "dataset", "mask", "mask_dataset", "simulate", "free_fraction", "prepare")
OUTPUT_KEYS = ("path", "overwrite", "png", "vti", "cohere_dir")
DATASET_KEYS = ("name", "data", "backend", "fft", "threads", "seed", "runs", "average", "params", "steps",
                "geometry",
                "postprocess", "output", "set")


# --------------------------------------------------------------------------------------------
# YAML with line numbers


class _LocDict(dict):
    """dict that remembers the line of each key (1-based)."""
    lines: dict


class _LocList(list):
    lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = _LocDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise CDIError("a mapping key must be a plain value",
                           f"{getattr(loader, 'cdi_source', '<recipe>')}:{key_node.start_mark.line + 1}")
        if key in out:
            raise CDIError(f"duplicate key '{key}'",
                           f"{getattr(loader, 'cdi_source', '<recipe>')}:{key_node.start_mark.line + 1}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader, node, deep=False):
    out = _LocList(loader.construct_object(child, deep=True) for child in node.value)
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


# YAML 1.1 reads 1e8 and 1.0e8 as strings (it wants 1.0e+8); scientists write 1e8.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _yaml_load(text: str, source: str):
    loader = _Loader(text)
    loader.cdi_source = source  # so that constructor errors can name the file
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise CDIError(f"YAML syntax error: {e.problem or e}", f"{source}{line}") from None
    except yaml.YAMLError as e:
        raise CDIError(f"YAML error: {e}", source) from None
    finally:
        loader.dispose()


def _key_parts(key: str) -> tuple:
    """'steps[0].beta' and 'steps.0.beta' -> ('steps', '0', 'beta')."""
    return tuple(p for p in re.split(r"\.|\[(\d+)\]", str(key)) if p)


class _Where:
    """Location text builder: file, line, key path.

    *overridden* maps key paths (tuples of parts) to the place their value
    really came from (``--set KEY``, ``recipe.yaml:12: datasets[1].set.KEY``):
    an error in such a value points there, not at the recipe line it replaced.
    """

    def __init__(self, source: str, path: str = "", node: Any = None, key: Any = None,
                 own_line: int | None = None, overridden: dict | None = None):
        self.source, self.path, self.node, self.key = source, path, node, key
        self.own_line = own_line
        self.overridden = overridden or {}

    def child(self, key, node=None) -> "_Where":
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else str(key)
        return _Where(self.source, path, node if node is not None else self.node_value(key), key,
                      own_line=self.line(key), overridden=self.overridden)

    def node_value(self, key):
        try:
            return self.node[key]
        except Exception:
            return None

    def line(self, key=None) -> int | None:
        lines = getattr(self.node, "lines", None)
        if lines is None:
            return None
        try:
            return lines[key] if key is not None else None
        except (KeyError, IndexError, TypeError):
            return None

    def text(self, key=None) -> str:
        """'file:line: path.key' for *key* in this node (or the node itself)."""
        line = self.line(key) if key is not None else self.own_line
        path = self.path
        if key is not None:
            path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        if self.overridden and path:
            head, _, tail = path.partition(" ")  # "steps (HIO)": a step of a sequence string
            parts = _key_parts(head)
            for n in range(len(parts), 0, -1):
                label = self.overridden.get(parts[:n])
                if label is not None:
                    return (f"{label} {tail}" if tail else label) if n == len(parts) else f"{label}: {path}"
        src = f"{self.source}:{line}" if line else self.source
        return f"{src}: {path}" if path else src


# --------------------------------------------------------------------------------------------
# overrides: --set KEY=VALUE and datasets[*].set


def parse_set(item: str) -> tuple[str, Any]:
    """'steps.1.beta=0.8' -> ('steps.1.beta', 0.8) (the value is parsed as YAML)."""
    if "=" not in item:
        raise CDIError(f"--set expects KEY=VALUE, got {item!r}")
    key, _, val = item.partition("=")
    key = key.strip()
    if not key:
        raise CDIError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = _plain(yaml.load(val, Loader=_Loader)) if val.strip() else None
    except yaml.YAMLError as e:
        raise CDIError(f"--set {key}: value {val!r} is not valid YAML: {e}") from None
    return key, value


def apply_set(doc: dict, key: str, value: Any, source: str = "--set") -> None:
    """Set the dotted path *key* (list items by index) in *doc* in place."""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", key) if p]
    if not parts:
        raise CDIError(f"empty key {key!r}", source)
    node = doc
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise CDIError(f"'{'.'.join(parts[:n])}' is a list: use an index, not {part!r}", f"{source} {key}")
            idx = int(part)
            if not -len(node) <= idx < len(node):
                raise CDIError(f"index {idx} is out of range (the list has {len(node)} items)", f"{source} {key}")
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise CDIError(f"cannot set '{part}' inside a {type(node).__name__} value "
                           f"(is '{'.'.join(parts[:n])}' a sequence string?)", f"{source} {key}")


# --------------------------------------------------------------------------------------------
# the validated recipe


@dataclasses.dataclass
class Step:
    """One expanded step: a registered algorithm and its validated parameters."""
    algorithm: AlgorithmSpec
    params: dict
    where: str

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def iterations(self) -> int:
        key = self.algorithm.iterations_param
        return int(self.params[key]) if key else 0


@dataclasses.dataclass
class DatasetPlan:
    """One dataset of a recipe: where its data comes from and what runs on it."""
    name: str
    data: dict
    backend: str
    fft: str
    threads: int | None
    seed: int | None
    runs: int
    steps: list
    output: dict
    doc: dict  # the effective recipe for this dataset (after merges and overrides)
    base_dir: str
    source: str
    average: int = 1  # average the k best runs
    geometry: dict | None = None  # validated Bragg geometry (cdi_plugins.postprocess.validate_geometry)
    postprocess: dict = dataclasses.field(default_factory=dict)
    prepare_where: dict = dataclasses.field(default_factory=dict)  # recipe location of each data.prepare key

    @property
    def iterations(self) -> int:
        """Iterations of one run."""
        return sum(s.iterations for s in self.steps)

    def data_path(self, key: str = "path") -> str | None:
        p = self.data.get(key)
        if p is None:
            return None
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(self.base_dir, p))


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


def _plain(obj):
    """Strip line-tracking subclasses (for dumping and deep copies).

    NumPy scalars (``np.int64(20)`` from a loop in a Python-API dict) become
    Python numbers, so that they validate and dump like the YAML they stand for.
    """
    if isinstance(obj, dict):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        return obj.item()
    return obj


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k in ("data", "steps"):  # a dataset's data and steps replace the base's entirely
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _typename(node) -> str:
    for t, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
                    (int, "an integer"), (float, "a number")):
        if isinstance(node, t):
            return name
    return "null" if node is None else type(node).__name__


def _check_keys(node, allowed, where: _Where, what: str):
    if not isinstance(node, dict):
        raise CDIError(f"{what} must be a mapping, got {_typename(node)}", where.text())
    for k in node:
        if k not in allowed:
            raise CDIError(f"unknown key '{k}'{suggest(str(k), allowed)}; allowed: {', '.join(allowed)}",
                           where.text(k))


def _choice(value, choices, where_text, what):
    if value not in choices:
        raise CDIError(f"{what} must be one of {', '.join(choices)}; got {value!r}{suggest(str(value), choices)}",
                       where_text)
    return value


def _int_or_none(value, where_text, what, low):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CDIError(f"{what} must be an integer >= {low} or null, got {value!r}", where_text)
    return value


def load_recipe(recipe, *, overrides: list[tuple[str, Any]] = (), registry: Registry | None = None,
                check_backend: bool = True, data: str | None = None) -> Recipe:
    """Load and fully validate a recipe.

    Parameters
    ----------
    recipe : str, os.PathLike or dict
        A path to a YAML file, a YAML string, or an already-parsed mapping.
    overrides : list of (key, value)
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
    registry = registry or get_registry()
    if isinstance(recipe, dict):
        doc = _plain(recipe)
        text, source, base_dir = yaml.safe_dump(doc, sort_keys=False), "<recipe>", os.getcwd()
    else:
        s = os.fspath(recipe)
        looks_like_path = "\n" not in s and (s.endswith((".yaml", ".yml")) or os.path.exists(s))
        if looks_like_path:
            if not os.path.exists(s):
                raise CDIError("recipe file not found", s)
            if os.path.isdir(s):
                raise CDIError("is a directory, not a recipe file", s)
            try:
                with open(s, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as e:
                raise CDIError(f"cannot read recipe: {e}", s) from None
            source, base_dir = s, os.path.dirname(os.path.abspath(s))
        else:
            text, source, base_dir = s, "<recipe>", os.getcwd()
        doc = _yaml_load(text, source)
        if source == "<recipe>" and isinstance(doc, str) and "\n" not in s.strip():
            # one word that is not a file: a mistyped path, not a recipe text
            raise CDIError("recipe file not found", s)
    if doc is None:
        raise CDIError("the recipe is empty", source)
    if data is not None and data != "<array>" and not os.path.exists(data):
        raise CDIError("data file not found", data)
    where = _Where(source, "", doc)
    _check_keys(doc, TOP_KEYS, where, "a recipe")
    for key, value in overrides:
        top = re.split(r"[.\[]", key)[0]
        if top not in TOP_KEYS:
            raise CDIError(f"unknown key '{top}'{suggest(top, TOP_KEYS)}", f"--set {key}")
    datasets_node = doc.get("datasets")
    if datasets_node is None:
        entries = [(None, {})]
    else:
        dw = where.child("datasets")
        if not isinstance(datasets_node, list) or not datasets_node:
            raise CDIError("datasets must be a non-empty list", where.text("datasets"))
        entries = []
        names = set()
        for i, ds in enumerate(datasets_node):
            w = dw.child(i, ds)
            _check_keys(ds, DATASET_KEYS, w, "a dataset entry")
            name = ds.get("name")
            if not isinstance(name, str) or not name:
                raise CDIError("every dataset needs a name", w.text())
            if name in names:
                raise CDIError(f"duplicate dataset name '{name}'", w.text("name"))
            names.add(name)
            entries.append((w, ds))
    base = {k: v for k, v in doc.items() if k != "datasets"}
    plans = []
    for w, ds in entries:
        name = ds.get("name") or str(doc.get("name") or "default")
        overridden = {_key_parts(key): f"--set {key}" for key, _ in overrides}
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
                d["path"] = data
                eff["data"] = d
        plans.append(_validate_dataset(eff, ewhere, name, source, base_dir, registry, check_backend))
    return Recipe(text=text, source=source, datasets=plans)


class _Overlay(dict):
    """Line lookups for a dataset: its own keys first, then the base recipe's."""

    def __init__(self, base, ds):
        super().__init__()
        self.base, self.ds = base, ds
        self.lines = {**getattr(base, "lines", {}), **getattr(ds, "lines", {})}

    def __getitem__(self, key):
        return self.ds[key] if key in self.ds else self.base[key]


def _validate_dataset(doc, where, name, source, base_dir, registry, check_backend) -> DatasetPlan:
    _check_keys(doc, TOP_KEYS, where, "a recipe")
    # data
    data = doc.get("data")
    dwhere = where.child("data")
    if data is None:
        raise CDIError("no data: give data.path (or data.simulate), or pass --data", where.text())
    _check_keys(data, DATA_KEYS, dwhere, "data")
    if ("path" in data) == ("simulate" in data):
        raise CDIError("give exactly one of data.path or data.simulate", where.text("data"))
    for key in ("path", "dataset", "mask", "mask_dataset"):
        if key in data and data[key] is not None and not isinstance(data[key], str):
            raise CDIError(f"data.{key} must be a string, got {data[key]!r}", dwhere.text(key))
    data = dict(data)
    if "path" in data and data["path"] != "<array>":
        p = data["path"] if os.path.isabs(data["path"]) else os.path.join(base_dir, data["path"])
        if not os.path.exists(p):
            raise CDIError(f"data file not found: {p}", dwhere.text("path"))
    if data.get("mask"):
        p = data["mask"] if os.path.isabs(data["mask"]) else os.path.join(base_dir, data["mask"])
        if not os.path.exists(p):
            raise CDIError(f"mask file not found: {p}", dwhere.text("mask"))
    if "simulate" in data:
        sim = data["simulate"] if data["simulate"] is not None else {}
        swhere = dwhere.child("simulate")
        if not isinstance(sim, dict):
            raise CDIError("data.simulate must be a mapping", dwhere.text("simulate"))
        data["simulate"] = SIMULATE.validate(dict(sim), lambda key=None: swhere.text(key))
    prepare_where: dict = {}
    if data.get("prepare") is not None:
        pw = dwhere.child("prepare", data["prepare"])
        data["prepare"] = validate_prepare(data["prepare"], lambda key=None: pw.text(key) if key else pw.text())
        prepare_where = {k: pw.text(k) for k in PREPARE_KEYS}
        prepare_where[None] = pw.text()
    ff = data.get("free_fraction", 0.0)
    data["free_fraction"] = Param("free_fraction", "float", 0.0, low=0, high=0.5, high_open=True).check(
        ff, dwhere.text("free_fraction"))
    # execution
    backend = _choice(doc.get("backend", "auto"), BACKENDS, where.text("backend"), "backend")
    fft = _choice(doc.get("fft", "auto"), FFT_ENGINES, where.text("fft"), "fft")
    threads = _int_or_none(doc.get("threads"), where.text("threads"), "threads", 1)
    seed = _int_or_none(doc.get("seed", 0), where.text("seed"), "seed", 0)
    runs = _int_or_none(doc.get("runs", 1), where.text("runs"), "runs", 1) or 1
    average = _int_or_none(doc.get("average", 1), where.text("average"), "average", 1) or 1
    if average > runs:
        raise CDIError(f"average = {average} needs at least as many runs (runs = {runs})", where.text("average"))
    resolved_backend = None
    if check_backend:
        from cdi_plugins.compute.backend import get_backend
        try:
            resolved_backend = get_backend(backend, fft=fft, threads=threads).name
        except CDIError as e:
            raise e.at(where.text("backend" if "backend" in doc else "fft")) from None
    # output
    output = doc.get("output") or {}
    _check_keys(output, OUTPUT_KEYS, where.child("output"), "output")
    if "path" in output and not isinstance(output["path"], str):
        raise CDIError("output.path must be a string", where.child("output").text("path"))
    if not isinstance(output.get("overwrite", False), bool):
        raise CDIError("output.overwrite must be true or false", where.child("output").text("overwrite"))
    for key, ext in (("png", ".png"), ("vti", ".vti")):
        if output.get(key) is not None and (not isinstance(output[key], str)
                                            or not output[key].lower().endswith(ext)):
            raise CDIError(f"output.{key} must be a file name ending in {ext}, got {output[key]!r}",
                           where.child("output").text(key))
    if output.get("cohere_dir") is not None and (not isinstance(output["cohere_dir"], str) or not output["cohere_dir"]):
        raise CDIError(f"output.cohere_dir must be a folder name, got {output['cohere_dir']!r}",
                       where.child("output").text("cohere_dir"))
    # Bragg geometry and post-processing (used for the pictures and the VTK file)
    gwhere = where.child("geometry")
    geometry = validate_geometry(doc.get("geometry"), lambda key=None: gwhere.text(key) if key else gwhere.text())
    post = doc.get("postprocess") or {}
    ppwhere = where.child("postprocess")
    if not isinstance(post, dict):
        raise CDIError("postprocess must be a mapping (remove_ramp: true, unwrap: true, ...)",
                       where.text("postprocess"))
    post = POSTPROCESS.validate(dict(post), lambda key=None: ppwhere.text(key) if key else ppwhere.text())
    # per-algorithm defaults
    defaults = doc.get("params") or {}
    pwhere = where.child("params")
    if not isinstance(defaults, dict):
        raise CDIError("params must be a mapping of algorithm name -> parameters", where.text("params"))
    for alg, vals in defaults.items():
        spec = registry.get(alg, pwhere.text(alg))
        if not isinstance(vals, dict):
            raise CDIError(f"params.{alg} must be a mapping of parameter -> value", pwhere.text(alg))
        vwhere = pwhere.child(alg)
        spec.params.validate(dict(vals), lambda key=None, vw=vwhere: vw.text(key))
    # steps
    if "steps" not in doc or doc["steps"] in (None, [], ""):
        raise CDIError("no steps: give a list of steps or a sequence such as \"3*(20*ER+180*HIO)+20*ER\"",
                       where.text("steps") if "steps" in doc else where.text())
    steps: list[Step] = []
    _expand(doc["steps"], where, "steps", defaults, registry, steps, resolved_backend, depth=0)
    return DatasetPlan(name=name, data=data, backend=backend, fft=fft, threads=threads, seed=seed, runs=runs,
                       steps=steps, output=dict(output), doc=_plain(doc), base_dir=base_dir, source=source,
                       average=average, geometry=geometry, postprocess=post, prepare_where=prepare_where)


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
            for _ in range(n):
                _expand(item["steps"], iw, "steps", defaults, registry, out, backend, depth + 1)
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
