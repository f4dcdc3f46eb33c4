"""What a recipe may hold: its keys, and the checks of its data, output and run settings.

Scalar settings are :class:`~cdi_plugins.core.params.ParamModel` s (their texts
are the ones recipes always reported); structure (allowed keys, mappings,
one-of rules, files that must exist, datasets) is checked here by hand.  The
models of sections owned by other code live with that code:
:data:`~cdi_plugins.physics.simulate.SIMULATE` (``data.simulate``),
:data:`~cdi_plugins.physics.prepare.PREPARE` (``data.prepare``),
:data:`~cdi_plugins.physics.postprocess.POSTPROCESS` and
:func:`~cdi_plugins.physics.postprocess.validate_geometry`.

The checks run in the order recipes always used, so that a recipe with
several mistakes reports the same first one.
"""

from __future__ import annotations

import os
import re

from cdi_plugins.compute.backend import BACKENDS, FFT_ENGINES
from cdi_plugins.core.limits import MAX_WORKERS
from cdi_plugins.core.params import Param, ParamModel, check_mapping_keys, suggest
from cdi_plugins.errors import CDIError
from cdi_plugins.physics.postprocess import POSTPROCESS, validate_geometry
from cdi_plugins.physics.prepare import PREPARE_KEYS, validate_prepare
from cdi_plugins.physics.scan import SCAN_KEYS, validate_scan
from cdi_plugins.physics.simulate import SIMULATE
from cdi_plugins.recipe.location import _Where
from cdi_plugins.runs import SELECT

__all__ = ["TOP_KEYS", "DATA_KEYS", "OUTPUT_KEYS", "DATASET_KEYS", "SETTINGS", "DATA", "OUTPUT",
           "check_keys", "check_top", "dataset_entries", "validate_data", "validate_settings",
           "validate_output", "validate_postprocess", "validate_defaults"]

TOP_KEYS = ("name", "description", "data", "backend", "fft", "threads", "seed", "runs", "average", "select",
            "workers", "ga", "params", "steps",
            "geometry", "postprocess", "output", "datasets",
            "cluster")  # cluster: read by cdi batch (cdi_plugins.batch.cluster), not by a run
DATA_KEYS = ("path", "dataset", "mask", "mask_dataset", "simulate", "free_fraction", "prepare") + SCAN_KEYS
OUTPUT_KEYS = ("path", "overwrite", "png", "vti", "html", "cohere_dir")
DATASET_KEYS = ("name", "data", "backend", "fft", "threads", "seed", "runs", "average", "select", "workers", "ga",
                "params", "steps",
                "geometry",
                "postprocess", "output", "set")


def _choice(name: str, choices, doc: str) -> Param:
    return Param(name, "str", "auto", doc, choices=choices,
                 message=f"{name} must be one of {', '.join(choices)}; got {{value!r}}{{suggest}}")


def _count(name: str, default, low: int, doc: str) -> Param:
    return Param(name, "int", default, doc, low=low, nullable=True, strict=True,
                 message=f"{name} must be an integer >= {low} or null, got {{value!r}}")


SETTINGS = ParamModel([
    _choice("backend", BACKENDS, "array library: numpy, cupy (CUDA) or auto (cupy when a CUDA device works)"),
    _choice("fft", FFT_ENGINES, "FFT engine (auto: the fastest one the backend has)"),
    _count("threads", None, 1, "CPU FFT threads (null: all cores)"),
    _count("seed", 0, 0, "random start; same seed -> same result"),
    _count("runs", 1, 1, "independent random starts; the best by `select` is kept (null: 1)"),
    _count("average", 1, 1, "average the k best runs (aligned to the best) instead of keeping one (null: 1)"),
    Param("select", "str", "auto", "what ranks runs: chi2, chi2_free, llk_free (free Poisson log-likelihood); "
          "auto: chi2_free with free pixels, else chi2", choices=SELECT,
          message=f"select must be one of {', '.join(SELECT)}; got {{value!r}}{{suggest}}"),
])
"""Top-level run settings of a recipe (or of one of its datasets)."""


def _data_file(name: str, doc: str) -> Param:
    return Param(name, "str", None, doc, nullable=True, message=f"data.{name} must be a string, got {{value!r}}")


DATA = ParamModel([
    _data_file("path", "the data file, relative to the recipe file"),
    _data_file("dataset", "the HDF5 dataset of the data (HDF5 only)"),
    _data_file("mask", "a mask file (true/non-zero: not measured), relative to the recipe file"),
    _data_file("mask_dataset", "the HDF5 dataset of the mask (HDF5 only)"),
    Param("free_fraction", "float", 0.0, "held-out pixels for an unbiased chi2_free", low=0, high=0.5,
          high_open=True),
])
"""The scalar keys of ``data`` (``simulate`` and ``prepare`` have their own models)."""
_FILE_KEYS = ("path", "dataset", "mask", "mask_dataset")


def _file_name(name: str, doc: str, ext: str) -> Param:
    return Param(name, "str", None, doc, nullable=True, accept=lambda v: v.lower().endswith(ext),
                 message=f"output.{name} must be a file name ending in {ext}, got {{value!r}}")


OUTPUT = ParamModel([
    Param("path", "str", None, "the result file (.cxi); {dataset} and {recipe} are replaced",
          message="output.path must be a string"),
    Param("overwrite", "bool", False, "replace existing output files", message="output.overwrite must be true or false"),
    _file_name("png", "a picture of the result (central slices, chi2 history)", ".png"),
    _file_name("vti", "a ParaView file of the result", ".vti"),
    _file_name("html", "a self-contained web page: the crystal in 3-D, slices, chi2 history", ".html"),
    Param("cohere_dir", "str", None, "also write the result in cohere's results_phasing layout",
          nullable=True, accept=bool, message="output.cohere_dir must be a folder name, got {value!r}"),
])
"""The ``output`` section."""


def _in_order(model: ParamModel, node: dict) -> dict:
    """The values of *node* in the model's order: the first error is the one recipes always reported."""
    return {name: node[name] for name in model.params if name in node}


def _typename(node) -> str:
    for t, name in ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"),
                    (int, "an integer"), (float, "a number")):
        if isinstance(node, t):
            return name
    return "null" if node is None else type(node).__name__


def check_keys(node, allowed, where: _Where, what: str) -> None:
    """Raise unless *node* is a mapping whose keys are all in *allowed*."""
    check_mapping_keys(node, allowed, lambda k: where.text() if k is None else where.text(k),
                       f"{what} must be a mapping, got {_typename(node)}")


def check_top(doc, where: _Where, overrides) -> None:
    """The recipe's own keys, and the first key of every override."""
    check_keys(doc, TOP_KEYS, where, "a recipe")
    for key, value in overrides:
        top = re.split(r"[.\[]", key)[0]
        if top not in TOP_KEYS:
            raise CDIError(f"unknown key '{top}'{suggest(top, TOP_KEYS)}", f"--set {key}")


def dataset_entries(doc: dict, where: _Where) -> list:
    """``[(where, entry), ...]`` of ``datasets`` (``[(None, {})]`` without one), each checked and named."""
    datasets_node = doc.get("datasets")
    if datasets_node is None:
        return [(None, {})]
    dw = where.child("datasets")
    if not isinstance(datasets_node, list) or not datasets_node:
        raise CDIError("datasets must be a non-empty list", where.text("datasets"))
    entries = []
    names = set()
    for i, ds in enumerate(datasets_node):
        w = dw.child(i, ds)
        check_keys(ds, DATASET_KEYS, w, "a dataset entry")
        name = ds.get("name")
        if not isinstance(name, str) or not name:
            raise CDIError("every dataset needs a name", w.text())
        if name in names:
            raise CDIError(f"duplicate dataset name '{name}'", w.text("name"))
        names.add(name)
        entries.append((w, ds))
    return entries


def validate_data(doc: dict, where: _Where, base_dir: str) -> tuple[dict, dict]:
    """The ``data`` section: ``(values, prepare_where)``.

    *values* has every key of :data:`DATA` plus ``simulate`` and ``prepare``
    (validated, or None); *prepare_where* the recipe location of each
    ``data.prepare`` key (``None``: the section itself).
    """
    data = doc.get("data")
    dwhere = where.child("data")
    if data is None:
        raise CDIError("no data: give data.path (or data.simulate), or pass --data", where.text())
    check_keys(data, DATA_KEYS, dwhere, "data")
    if "frames" in data:
        if "path" in data or "simulate" in data:
            raise CDIError("give one of data.path, data.frames or data.simulate", where.text("data"))
    elif ("path" in data) == ("simulate" in data):
        raise CDIError("give exactly one of data.path or data.simulate", where.text("data"))
    # the file names first; free_fraction (in the same model) after the files exist and the sections pass
    values = DATA.validate({k: data[k] for k in _FILE_KEYS if k in data}, lambda key=None: dwhere.text(key))
    if "path" in data and not data["path"]:
        raise CDIError("data.path must name the data file (or give data.simulate)", dwhere.text("path"))
    if "path" in data and data["path"] != "<array>":
        p = data["path"] if os.path.isabs(data["path"]) else os.path.join(base_dir, data["path"])
        if not os.path.exists(p):
            raise CDIError(f"data file not found: {p}", dwhere.text("path"))
    if data.get("mask"):
        p = data["mask"] if os.path.isabs(data["mask"]) else os.path.join(base_dir, data["mask"])
        if not os.path.exists(p):
            raise CDIError(f"mask file not found: {p}", dwhere.text("mask"))
    values["simulate"] = None
    if "simulate" in data:
        sim = data["simulate"] if data["simulate"] is not None else {}
        swhere = dwhere.child("simulate")
        if not isinstance(sim, dict):
            raise CDIError("data.simulate must be a mapping", dwhere.text("simulate"))
        values["simulate"] = SIMULATE.validate(dict(sim), lambda key=None: swhere.text(key))
    values["prepare"] = None
    prepare_where: dict = {}
    if data.get("prepare") is not None:
        pw = dwhere.child("prepare", data["prepare"])
        values["prepare"] = validate_prepare(data["prepare"], lambda key=None: pw.text(key) if key else pw.text())
        prepare_where = {k: pw.text(k) for k in PREPARE_KEYS}
        prepare_where[None] = pw.text()
    values["scan"] = _validate_scan(data, dwhere, base_dir)
    values["free_fraction"] = DATA.params["free_fraction"].check(data.get("free_fraction", 0.0),
                                                                 dwhere.text("free_fraction"))
    return values, prepare_where


def _validate_scan(data: dict, dwhere: _Where, base_dir: str) -> dict | None:
    """A raw rocking scan (``data.frames``, ``beamline``, ``spec``, ...): :func:`~cdi_plugins.physics.scan.validate_scan`."""
    if not any(k in data for k in SCAN_KEYS):
        return None
    from cdi_plugins.core.registry import get_registry

    def where(key=None):
        if key is None:
            return dwhere.text()
        *parents, last = str(key).split(".")
        w = dwhere
        for part in parents:
            w = w.child(part)
        return w.text(last)
    return validate_scan(data, where, base_dir, get_registry())


_WORKERS = Param("workers", "int", 1, "", low=1, high=MAX_WORKERS, strict=True,
                 message=f"workers must be auto or an integer in [1, {MAX_WORKERS:,}], got {{value!r}}")


def _workers(value, where: str):
    """``workers``: ``auto`` (null means the same) or a number of processes."""
    if value is None or value == "auto":
        return "auto"
    return _WORKERS.check(value, where)


def validate_settings(doc: dict, where: _Where, check_backend: bool) -> tuple[dict, str | None]:
    """Backend, FFT, threads, seed, runs, average, select, workers: ``(settings, backend name or None)``.

    With *check_backend* the backend is also created (it must run here), and its
    name returned.
    """
    settings = SETTINGS.validate(_in_order(SETTINGS, doc), lambda key=None: where.text(key))
    settings["runs"] = settings["runs"] or 1
    settings["workers"] = _workers(doc.get("workers", "auto"), where.text("workers"))
    if settings["select"] in ("chi2_free", "llk_free") and not (doc.get("data") or {}).get("free_fraction"):
        raise CDIError(f"select: {settings['select']} needs free pixels: set data.free_fraction (e.g. 0.05)",
                       where.text("select"))
    settings["average"] = settings["average"] or 1
    if settings["average"] > settings["runs"]:
        raise CDIError(f"average = {settings['average']} needs at least as many runs (runs = {settings['runs']})",
                       where.text("average"))
    resolved = None
    if check_backend:
        from cdi_plugins.compute.backend import get_backend
        try:
            resolved = get_backend(settings["backend"], fft=settings["fft"], threads=settings["threads"]).name
        except CDIError as e:
            raise e.at(where.text("backend" if "backend" in doc else "fft")) from None
    return settings, resolved


def validate_output(doc: dict, where: _Where) -> dict:
    """The ``output`` section, with defaults filled."""
    output = doc.get("output") or {}
    owhere = where.child("output")
    check_keys(output, OUTPUT_KEYS, owhere, "output")
    return OUTPUT.validate(_in_order(OUTPUT, output), lambda key=None: owhere.text(key))


def validate_postprocess(doc: dict, where: _Where) -> tuple[dict | None, dict]:
    """Bragg geometry and post-processing (for the pictures and the VTK file): ``(geometry, options)``."""
    gwhere = where.child("geometry")
    geometry = validate_geometry(doc.get("geometry"), lambda key=None: gwhere.text(key) if key else gwhere.text())
    post = doc.get("postprocess") or {}
    ppwhere = where.child("postprocess")
    if not isinstance(post, dict):
        raise CDIError("postprocess must be a mapping (remove_ramp: true, unwrap: true, ...)",
                       where.text("postprocess"))
    post = POSTPROCESS.validate(dict(post), lambda key=None: ppwhere.text(key) if key else ppwhere.text())
    return geometry, post


def validate_defaults(doc: dict, where: _Where, registry) -> dict:
    """``params``: per-algorithm defaults, each checked against its algorithm's model."""
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
    return defaults
