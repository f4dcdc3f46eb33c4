"""Run a validated recipe: build the Problem, run the steps in order over one State, write what ``output:`` asks.

The API functions (:func:`run`, :func:`run_all`, :func:`compare`) and ``cdi run`` / ``cdi compare`` share
this module: a recipe's ``output:`` section is honoured the same way by both (:class:`Job`), every output is
checked before anything is computed, and no output replaces a file the run reads."""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import yaml

from cdi_plugins.compute.backend import get_backend
from cdi_plugins.errors import CDIError
from cdi_plugins.compute.fourier import oversampling
from cdi_plugins.physics.prepare import is_noop, prepare
from cdi_plugins.recipe import DatasetPlan, Recipe, load_recipe
from cdi_plugins.recipe.overrides import override_pairs
from cdi_plugins.core.result import Result
from cdi_plugins.core.state import Problem

__all__ = ["run", "run_all", "problems", "compare", "Comparison", "Job", "plan_jobs", "check_outputs", "write_outputs",
           "build_problem", "run_plan", "run_timed", "preload_steps", "versions", "save", "load", "DEFAULT_OUT"]

DEFAULT_OUT = "{recipe}_{dataset}.cxi"   # where `cdi run` and `cdi batch` write a result the recipe does not place

log = logging.getLogger("cdi_plugins")

_VERSION_OF = ("cdi-plugins", "numpy", "scipy", "h5py", "pluggy", "pyyaml", "pyfftw", "cupy-cuda12x",
               "cupy-cuda11x", "cupy", "torch", "tifffile")


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (without importing them)."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    # read once per process: scanning the installed packages' metadata costs ~25 ms of every run
    out = []
    for name in _VERSION_OF:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            pass
    return tuple(out)


def build_problem(plan: DatasetPlan, data: Any = None) -> Problem:
    """Read (or simulate) the data of *plan*, prepare it and validate it into a :class:`Problem`.

    *data* (a path or an array) overrides the recipe's data source; the recipe's
    mask, preparation (``data.prepare``) and free-pixel settings still apply.
    The input (file or array) is never modified.

    ``Problem.metadata`` gets ``oversampling_estimate`` (per axis, from the
    intensity autocorrelation), ``preparation`` (what ``data.prepare`` did)
    when the data was prepared, and ``geometry`` when the recipe has one.
    """
    from cdi_plugins.io import read_array, read_intensity
    d = plan.data
    truth = None
    metadata: dict = {}
    scan_geom = scan_mask = None
    if d.scan is not None and (data is None or isinstance(data, (str, os.PathLike))):
        from cdi_plugins.core.registry import get_registry
        from cdi_plugins.physics.scan import load_scan
        intensity, scan_mask, scan_geom, metadata["scan"] = load_scan(
            d.scan, get_registry(), lambda p: read_intensity(p, dataset=d.dataset), read_array)
        source = d.scan["frames"]
    elif data is not None and not isinstance(data, (str, os.PathLike)):
        intensity, source = np.asarray(data), "<array>"
    elif data is not None:
        source = os.fspath(data)
        intensity = read_intensity(source, dataset=d.dataset)
    elif d.simulate is not None:
        from cdi_plugins.physics.simulate import simulate_crystal
        sim = simulate_crystal(**d.simulate)
        intensity, truth, source = sim["intensity"], sim["truth"], "simulated crystal"
        metadata = dict(sim.get("metadata") or {})
    else:
        source = d.resolved("path")
        intensity = read_intensity(source, dataset=d.dataset)
    mask = None
    if d.mask:
        mpath = d.resolved("mask")
        mask = read_array(mpath, dataset=d.mask_dataset)
        if mask.shape != np.shape(intensity):
            raise CDIError(f"mask shape {mask.shape} does not match the data shape {np.shape(intensity)}", mpath)
        if mask.all():
            raise CDIError("the mask covers every pixel; nothing is measured", mpath)
        if np.issubdtype(mask.dtype, np.floating) and not np.isfinite(mask).all():
            raise CDIError("the mask holds NaN or infinite values", mpath)
        mask = mask != 0
    if scan_mask is not None:
        mask = scan_mask if mask is None else (mask | scan_mask)
    options = d.prepare
    if not is_noop(options):
        if truth is not None:
            raise CDIError("data.prepare works on measured data; a simulated crystal is already prepared "
                           "(its truth would no longer match)", plan.prepare_where.get(None, plan.source))
        intensity, mask, report = prepare(intensity, mask, options, where=plan.prepare_where, source=source)
        metadata["preparation"] = report
    if plan.geometry is not None:
        metadata["geometry"] = dict(plan.geometry)
    if scan_geom is not None:
        from cdi_plugins.physics.scan import array_geometry
        raw_peak = np.unravel_index(int(np.argmax(np.where(mask, 0, intensity) if mask is not None else intensity)),
                                    np.shape(intensity))
        metadata["scan_geometry"] = array_geometry(scan_geom, metadata.get("preparation"), np.shape(intensity),
                                                   raw_peak=raw_peak)
        metadata["scan_geometry"]["lab"] = dict(d.scan["lab"])
    problem = Problem.from_array(intensity, mask, metadata=metadata, truth=truth,
                                 free_fraction=d.free_fraction, seed=plan.seed, source=source)
    problem.metadata["oversampling_estimate"] = list(oversampling(problem.intensity, problem.mask, preset="blob"))
    return problem


def _average(kept: list, k: int) -> tuple[np.ndarray, list]:
    """Mean of the *k* lowest-scoring objects, each aligned to the best (translation, phase, twin)."""
    from cdi_plugins.compute.metrics import compare_to_truth
    kept = sorted(kept, key=lambda t: t[0])[:k]
    ref = kept[0][2]
    total = ref.astype(np.complex128)
    for _, _, obj in kept[1:]:
        total += compare_to_truth(obj, ref)["aligned"]
    return (total / len(kept)).astype(np.complex64), [r + 1 for _, r, _ in kept]


def _first_tasks(plan: DatasetPlan) -> list:
    """The independent random starts: run 0 is exactly the single-run result for this seed, later runs get
    their own streams."""
    from cdi_plugins.runs import RunTask
    return [RunTask(index=r, seed=plan.seed if r == 0 else [plan.seed or 0, r]) for r in range(plan.runs)]


def run_plan(plan: DatasetPlan, problem: Problem, *, recipe_text: str = "",
             progress: Callable[..., None] | None = None) -> Result:
    """Run the steps of one dataset plan on *problem* (``plan.runs`` times, keeping the best).

    Runs are ranked by ``plan.select`` (``auto``: chi2_free when free pixels are used, else chi2; or
    ``llk_free``, the free Poisson log-likelihood).  They run side by side in ``plan.workers`` processes
    (:func:`cdi_plugins.runs.resolve_workers`), each seeded by its run number, so the result does not
    depend on how many.  With ``plan.ga`` the runs are bred over generations
    (:mod:`cdi_plugins.runs.ga`) and the best object of all generations is kept.

    With ``plan.average = k > 1`` the result's object is the mean of the *k*
    best runs (of the last generation, with ``ga``), each aligned to the best one (translation, global
    phase and twin), which averages out what the data does not determine; its support and
    history are the best run's, and ``metadata["average_chi2"]`` is the chi^2 of
    the mean.
    """
    from cdi_plugins.runs import resolve_workers, run_score, run_tasks
    from cdi_plugins.runs.ga import evolve
    backend = get_backend(plan.backend, fft=plan.fft, threads=plan.threads)
    for step in plan.steps:
        if backend.name not in step.algorithm.backends:
            raise CDIError(f"algorithm '{step.name}' does not run on the {backend.name} backend", step.where)
    preload_steps([plan])
    report = progress or (lambda **event: None)
    timings = [0.0] * len(plan.steps)
    workers = resolve_workers(plan.workers, tasks=plan.runs, backend=backend.name, threads=plan.threads,
                              work=problem.intensity.size * plan.iterations)
    n_runs = plan.runs

    def run_generation(tasks, g):
        outs = run_tasks(tasks, steps=plan.steps, problem=problem, backend=backend, workers=workers,
                         progress=lambda run, **event: report(run=g * n_runs + run + 1, runs=n_runs * generations,
                                                              **event))
        for o in outs:
            for i, t in enumerate(o.timings):
                timings[i] += t
        return outs

    def score(history):
        return run_score(history, plan.select)

    generations = plan.ga["generations"] if plan.ga else 1
    ga_trace = None
    if plan.ga:
        spec = dict(plan.ga, metric=plan.ga["metric"] or plan.select)
        last, alpha, ga_trace = evolve(spec, _first_tasks(plan), run_generation,
                                       lambda h: run_score(h, spec["metric"]), backend.to_numpy, plan.seed)
        outcomes = last + ([] if any(o is alpha for o in last) else [alpha])
    else:
        outcomes = run_generation(_first_tasks(plan), 0)
    scores = [score(o.state.history) for o in outcomes]
    # the first of equal scores; a NaN score never wins unless every score is NaN
    best_i = int(np.argmin([sc if sc == sc else np.inf for sc in scores]))
    best = outcomes[best_i].state
    kept = [(sc, o.index, backend.to_numpy(o.state.obj).astype(np.complex64, copy=False))
            for sc, o in zip(scores, outcomes)] if plan.average > 1 else []
    steps = [{"step": i, "algorithm": st.name, "plugin": st.algorithm.plugin, "params": dict(st.params),
              "seconds": timings[i - 1]} for i, st in enumerate(plan.steps, start=1)]
    obj = backend.to_numpy(best.obj).astype(np.complex64, copy=False)
    support = backend.to_numpy(best.support).astype(bool, copy=False)
    metadata = {**problem.metadata, "source": problem.source, "backend": backend.name,
                "fft": backend.loop_engine(problem.intensity.size), "threads": backend.threads_for(problem.intensity.size),
                "seed": plan.seed, "runs": plan.runs, "postprocess": dict(plan.postprocess)}
    if workers > 1:
        metadata["workers"] = workers
    if plan.select != "auto":
        metadata["select"] = plan.select
    if plan.runs > 1:
        metadata["run_scores"] = scores
        metadata["best_run"] = outcomes[best_i].index + 1
    if ga_trace is not None:
        metadata["ga"] = {**ga_trace, "generations": generations, "metric": spec["metric"]}
    if plan.average > 1:
        obj, metadata["averaged_runs"] = _average(kept, plan.average)
        from cdi_plugins.compute.metrics import chi2
        metadata["average_chi2"] = chi2(obj, problem.intensity, problem.unconstrained)
    return Result(obj=obj, support=support, history=list(best.history), timings=timings, steps=steps,
                  intensity=np.array(problem.intensity), mask=np.array(problem.mask), metadata=metadata,
                  truth=None if problem.truth is None else np.array(problem.truth),
                  recipe=recipe_text or yaml.safe_dump(plan.doc, sort_keys=False),
                  dataset=plan.name, versions=versions())


# ------------------------------------------------------------------------------------------ outputs


@dataclasses.dataclass
class Job:
    """One dataset run and the files it writes.

    Attributes
    ----------
    plan : DatasetPlan
    data : str or None
        A data file replacing the recipe's (``cdi run --data``), or None.
    cxi : str or None
        The result file, or None when none is asked for.
    reports : dict
        ``{"png" | "vti" | "html": path}`` of the pictures and pages asked for.
    cohere_dir : str or None
        A cohere ``results_phasing`` folder to write, or None.
    overwrite : bool
    """

    plan: DatasetPlan
    data: str | None
    cxi: str | None
    reports: dict
    cohere_dir: str | None
    overwrite: bool

    @property
    def outputs(self) -> list[str]:
        return [p for p in (self.cxi, *self.reports.values()) if p]

    @property
    def inputs(self) -> list[str]:
        """Every file this run reads that exists now: data, mask, the recipe, files named by step parameters
        that read files (weights, results folders)."""
        plan = self.plan
        found = [self.data, plan.data.resolved("path"), plan.data.resolved("mask")]
        if plan.data.scan is not None:   # a raw scan: its frames, fields and metadata file
            found += [plan.data.scan[k] for k in ("frames", "dark", "white", "spec")]
        if plan.source != "<recipe>":
            found.append(plan.source)
        for step in plan.steps:
            for param in step.algorithm.params.params.values():
                value = step.params.get(param.name)
                if getattr(param, "reads_file", False) and isinstance(value, str):
                    found.append(os.path.expanduser(value))
        return [p for p in found if p and p != "<array>" and os.path.exists(p)]


def plan_jobs(rec: Recipe | dict, *, dataset: str | None = None, out: str | None = None,
              overwrite: bool = False, default_out: str | None = None) -> list[Job]:
    """The jobs of a loaded recipe (``{data path or None: Recipe}`` for several data files), output paths expanded.

    ``{dataset}`` and ``{recipe}`` in a template are replaced; several runs sharing a template without
    ``{dataset}`` get the dataset name appended.  *out* replaces ``output.path``; *default_out* is used when
    neither is given (``cdi run`` writes ``{recipe}_{dataset}.cxi``; the API writes nothing then).
    """
    recs = rec if isinstance(rec, dict) else {None: rec}
    pairs = [(plan, d) for d, r in recs.items() for plan in r.datasets if not dataset or plan.name == dataset]
    if dataset and not pairs:
        from cdi_plugins.core.params import suggest
        names = [p.name for r in recs.values() for p in r.datasets]
        raise CDIError(f"no dataset named '{dataset}'{suggest(dataset, names)}", "--dataset")
    multiple = len(pairs) > 1

    def expand(template, name, stem, ext):
        path = template.replace("{dataset}", name).replace("{recipe}", stem)
        if multiple and "{dataset}" not in template:
            root, e = os.path.splitext(path)
            path = f"{root}_{name}{e or ext}"
        return path

    jobs = []
    for plan, d in pairs:
        name = plan.name if d is None else (
            os.path.splitext(os.path.basename(d))[0] + ("" if len(recs[d].datasets) == 1 else f"_{plan.name}"))
        stem = os.path.splitext(os.path.basename(plan.source))[0] if plan.source != "<recipe>" else "recipe"
        template = out or plan.output.path or default_out
        cdir = plan.output.cohere_dir
        if cdir:
            cdir = cdir.replace("{dataset}", name)
            if multiple and "{dataset}" not in plan.output.cohere_dir:
                cdir = f"{cdir.rstrip('/')}_{name}"
        jobs.append(Job(plan=plan, data=d, cxi=expand(template, name, stem, ".cxi") if template else None,
                        reports={k: expand(t, name, stem, f".{k}") for k, t in plan.output.reports().items()},
                        cohere_dir=cdir, overwrite=overwrite or plan.output.overwrite))
    paths = [p for j in jobs for p in j.outputs]
    if len(set(paths)) != len(paths):
        raise CDIError("several runs would write the same output file; put {dataset} in --out or output.path "
                       "(and output.png, output.vti, output.html)")
    return jobs


def check_outputs(jobs: list[Job]) -> None:
    """Every check on every output, before anything is computed or written: writable, not existing unless
    overwriting, and never a file any of the runs reads."""
    from cdi_plugins.io.atomic import check_writable
    reads = [p for j in jobs for p in j.inputs]
    for job in jobs:
        for path in job.outputs:
            check_writable(path, overwrite=job.overwrite, protect=reads)
        if job.cohere_dir:
            if os.path.lexists(job.cohere_dir) and not job.overwrite:
                raise CDIError("exists; pass --overwrite to replace it", job.cohere_dir)
            for p in reads:
                if os.path.isdir(p) and os.path.realpath(p) == os.path.realpath(job.cohere_dir):
                    raise CDIError(f"refusing to write into the input folder {p}; choose another output.cohere_dir",
                                   job.cohere_dir)


def write_outputs(result: Result, job: Job) -> list[str]:
    """Write what *job* asks for; returns the paths written (folders end with ``/``)."""
    written = []
    protect = job.inputs
    if job.cxi:
        save(result, job.cxi, overwrite=job.overwrite, protect=protect)
        written.append(job.cxi)
    if job.reports:
        from cdi_plugins.report import report
        report(result, png=job.reports.get("png"), vti=job.reports.get("vti"), html=job.reports.get("html"),
               overwrite=job.overwrite, protect=protect)
        written += list(job.reports.values())
    if job.cohere_dir:
        from cdi_plugins.io.cohere import write_cohere_results
        write_cohere_results(result, job.cohere_dir, overwrite=job.overwrite)
        written.append(job.cohere_dir.rstrip("/") + "/")
    return written


def save(result: Result, path, *, overwrite: bool = False, protect=()) -> None:
    """Write *result* as a CXI (HDF5) file, atomically.

    Refuses to overwrite an existing file unless *overwrite*, and never overwrites the file the data was
    read from (nor any of *protect*).
    """
    from cdi_plugins.io import write_cxi
    source = (result.metadata or {}).get("source")
    keep = [*protect, *((source,) if source and os.path.exists(str(source)) else ())]
    write_cxi(result, path, overwrite=overwrite, protect=keep)


def load(path) -> Result:
    """Read a result written by :func:`save` (or ``cdi run``)."""
    from cdi_plugins.io import load_cxi
    return load_cxi(path)


def check_plan(plan: DatasetPlan, data: str | None = None) -> list[str]:
    """Everything about one dataset that can be checked without computing (what ``cdi validate`` adds to the
    recipe's own validation): the data file's header (3-D, real numbers), the mask's shape, the preparation's
    regions against the data's shape, and the outputs the recipe asks for against every file the run reads.
    Reads headers only, writes nothing.  Returns lines describing the data; raises CDIError naming the file or
    the recipe location.
    """
    from types import SimpleNamespace

    from cdi_plugins.io import read_header
    from cdi_plugins.io.atomic import same_file
    from cdi_plugins.physics.prepare import check_regions
    notes = []
    path = data or plan.data.resolved("path")
    if plan.data.scan is not None:
        path = plan.data.scan["frames"]
        notes.append(f"scan: beamline {plan.data.scan['beamline']}"
                     + (f", {plan.data.scan['spec']} scan {plan.data.scan['scan']}" if plan.data.scan["spec"] else ""))
    if path and path != "<array>":
        shape, dtype = read_header(path, dataset=plan.data.dataset)
        if len(shape) != 3:
            raise CDIError(f"expected a 3-D intensity array, got {len(shape)}-D with shape {tuple(shape)}", path)
        if dtype.kind not in "iuf":
            raise CDIError(f"intensity must be real numbers, got dtype {dtype} with shape {tuple(shape)}", path)
        size = f", {os.path.getsize(path) / 1e6:.1f} MB" if os.path.isfile(path) else ""
        notes.append(f"data: {'x'.join(map(str, shape))} {dtype}{size}")
        mask = plan.data.resolved("mask")
        if mask:
            mshape, _ = read_header(mask, dataset=plan.data.mask_dataset)
            if tuple(mshape) != tuple(shape):
                raise CDIError(f"mask shape {tuple(mshape)} does not match the data shape {tuple(shape)}", mask)
        if plan.data.prepare:
            check_regions(plan.data.prepare, shape, plan.prepare_where, plan.source)
    elif plan.data.simulate:
        n = plan.data.simulate["shape"]
        notes.append(f"data: a simulated crystal, {n}x{n}x{n}")
    job = plan_jobs({data: SimpleNamespace(datasets=[plan])}, default_out=None)[0]
    for out in job.outputs:
        for read in job.inputs:
            if same_file(os.path.abspath(out), os.path.abspath(read)):
                raise CDIError(f"the run reads this file; an output must not replace it ({read})", out)
    written = job.outputs + ([job.cohere_dir.rstrip("/") + "/"] if job.cohere_dir else [])
    if written:
        notes.append("writes: " + ", ".join(written))
    return notes


def run_timed(plan: DatasetPlan, problem: Problem, progress=None) -> tuple[Result, float]:
    """:func:`run_plan` and its wall-clock seconds; *progress* is closed afterwards when it has ``close()``
    (a progress bar), even when the run fails."""
    t0 = time.perf_counter()
    try:
        result = run_plan(plan, problem, progress=progress)
    finally:
        if progress is not None and hasattr(progress, "close"):
            progress.close()
    return result, time.perf_counter() - t0


# ------------------------------------------------------------------------------------------ the API


def run(recipe, data: Any = None, *, dataset: str | None = None, overrides=(),
        progress: Callable[..., None] | None = None, write: bool = True) -> Result:
    """Run a recipe on one dataset and return the :class:`Result`.

    Parameters
    ----------
    recipe : str, path or dict
        A recipe file, a YAML string, or a mapping.
    data : str, path or ndarray, optional
        Overrides the recipe's data source (the intensity; mask settings still apply).
    dataset : str, optional
        Which dataset of a multi-dataset recipe to run.
    overrides : mapping or list of (key, value)
        Dotted-path overrides, as ``cdi run --set``: ``{"runs": 8, "params.hio.beta": 0.8}``.
    progress : callable, optional
        Receives ``progress(step=, algorithm=, iteration=, total=, chi2=)`` events.
    write : bool, default True
        Write what the recipe's ``output:`` section asks for (result file, pictures, web page, cohere
        folder), exactly as ``cdi run`` does; checked before anything is computed.

    Returns
    -------
    Result

    Raises
    ------
    CDIError
        For anything wrong with the recipe, the data or the outputs, before computing.
    """
    from cdi_plugins.io.atomic import input_scope
    data_path = None
    if data is not None:
        data_path = os.path.abspath(os.fspath(data)) if isinstance(data, (str, os.PathLike)) else "<array>"
    with input_scope():
        rec: Recipe = load_recipe(recipe, overrides=overrides, data=data_path)
        plan = rec.dataset(dataset)
        job = plan_jobs(rec, dataset=plan.name)[0] if write and plan.output.wanted else None
        if job is not None:
            check_outputs([job])
        problem = build_problem(plan, data)
        result = run_plan(plan, problem, progress=progress)
        if job is not None:
            write_outputs(result, job)
    return result


def run_all(recipe, *, overrides=(), progress=None, write: bool = True) -> dict[str, Result]:
    """Run every dataset of a recipe; returns ``{dataset name: Result}``.  With *write*, each dataset's
    ``output:`` is written as :func:`run` does (all outputs are checked before the first dataset runs)."""
    from cdi_plugins.io.atomic import input_scope
    with input_scope():
        rec = load_recipe(recipe, overrides=overrides)
        jobs = {j.plan.name: j for j in plan_jobs(rec)} if write else {}
        jobs = {name: j for name, j in jobs.items() if j.plan.output.wanted}
        check_outputs(list(jobs.values()))
        preload_steps(rec.datasets)
        out = {}
        for plan in rec.datasets:
            problem = build_problem(plan)
            out[plan.name] = run_plan(plan, problem, progress=progress)
            if plan.name in jobs:
                write_outputs(out[plan.name], jobs[plan.name])
    return out


def problems(recipe, *, overrides=()) -> dict[str, Problem]:
    """The data of every dataset of a recipe, read, masked and prepared exactly as ``cdi run`` would before
    its first step; returns ``{dataset name: Problem}``.  For plugin commands that work on a recipe's
    data (``cdi adapt``) without running its steps.  The files read are noted as inputs
    (:func:`cdi_plugins.io.atomic.note_input`) in the caller's input scope."""
    rec = load_recipe(recipe, overrides=overrides)
    return {plan.name: build_problem(plan) for plan in rec.datasets}


@dataclasses.dataclass
class Comparison:
    """Several recipes run on the same data (:func:`compare`).

    Attributes
    ----------
    problem : Problem
        The data every recipe ran on.
    results : dict
        ``{label: Result}`` in the order given; ``result.metadata["wall_seconds"]`` is each run's wall time.
    """

    problem: Problem
    results: dict

    @property
    def has_truth(self) -> bool:
        return self.problem.truth is not None


def preload_steps(plans) -> None:
    """Import the modules the steps of *plans* name in ``AlgorithmSpec.preload`` (torch for nn and ad)
    before any of them starts a native library: a process that runs several plans (a multi-dataset recipe,
    ``compare``) calls this with all of them first, so that a later plan's torch is not imported after an
    earlier plan's MKL (its results would then differ in the last bits from a run of that plan alone)."""
    from cdi_plugins.runs import load_preloads
    load_preloads(step for plan in plans for step in plan.steps)


def compare(recipes, *, data: Any = None, overrides=(), progress_for: Callable[[str, DatasetPlan], Any] | None = None
            ) -> Comparison:
    """Run several recipes (one dataset each) on the same data, for a side-by-side comparison.

    Parameters
    ----------
    recipes : list of str or path
        Recipe files; their labels are the file stems (the path when two stems collide).
    data : str or path, optional
        The data every recipe runs on; without it every recipe must describe the same measurement.
    overrides : mapping or list of (key, value)
        Applied to every recipe, as ``cdi compare --set``.
    progress_for : callable, optional
        ``progress_for(label, plan)`` returns a progress callback (and may have a ``close()``) per run.

    Raises
    ------
    CDIError
        Naming the recipe, when one has several datasets or (without *data*) describes other data.
    """
    data = os.path.abspath(os.fspath(data)) if data is not None else None
    overrides = override_pairs(overrides)     # once: an iterator would be used up by the first recipe
    plans = []
    for path in recipes:
        rec = load_recipe(path, overrides=overrides, data=data)
        if len(rec.datasets) != 1:
            raise CDIError("compare runs recipes with one dataset; pass --data to choose the data", path)
        plans.append((path, rec.datasets[0]))
    if data is None:  # without --data every recipe must describe the same measurement
        ref = plans[0][1]
        for path, plan in plans[1:]:
            if plan.data.simulate != ref.data.simulate or plan.data.resolved("path") != ref.data.resolved("path"):
                raise CDIError(f"this recipe's data differs from {plans[0][0]}'s; pass --data PATH "
                               "to run every recipe on the same data", path)
    preload_steps(plan for _, plan in plans)
    problem = build_problem(plans[0][1], data)
    results = {}
    for path, plan in plans:
        label = os.path.splitext(os.path.basename(os.fspath(path)))[0]
        if label in results:
            label = os.fspath(path)
        res, wall = run_timed(plan, problem, progress_for(label, plan) if progress_for else None)
        res.metadata["wall_seconds"] = wall
        results[label] = res
    return Comparison(problem=problem, results=results)
