"""Run a validated recipe: build the Problem, run the steps in order over one State."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from typing import Any, Callable

import numpy as np
import yaml

from cdi_plugins.compute.backend import get_backend
from cdi_plugins.errors import CDIError
from cdi_plugins.physics.prepare import is_noop, oversampling_estimate, prepare
from cdi_plugins.recipe import DatasetPlan, Recipe, load_recipe
from cdi_plugins.core.result import Result
from cdi_plugins.core.state import Context, Problem, State

__all__ = ["run", "run_all", "build_problem", "run_plan", "versions"]

log = logging.getLogger("cdi_plugins")

_VERSION_OF = ("cdi-plugins", "numpy", "scipy", "h5py", "pluggy", "pyyaml", "pyfftw", "cupy-cuda12x",
               "cupy-cuda11x", "cupy", "torch", "tifffile")


def versions() -> dict[str, str]:
    """Versions of the packages a result depends on (without importing them)."""
    out = {}
    for name in _VERSION_OF:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


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
    if data is not None and not isinstance(data, (str, os.PathLike)):
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
    options = d.prepare
    if not is_noop(options):
        if truth is not None:
            raise CDIError("data.prepare works on measured data; a simulated crystal is already prepared "
                           "(its truth would no longer match)", plan.prepare_where.get(None, plan.source))
        intensity, mask, report = prepare(intensity, mask, options, where=plan.prepare_where, source=source)
        metadata["preparation"] = report
    if plan.geometry is not None:
        metadata["geometry"] = dict(plan.geometry)
    problem = Problem.from_array(intensity, mask, metadata=metadata, truth=truth,
                                 free_fraction=d.free_fraction, seed=plan.seed, source=source)
    problem.metadata["oversampling_estimate"] = list(oversampling_estimate(problem.intensity, problem.mask))
    return problem


def _check_state(state, spec, problem, backend) -> None:
    who = f"algorithm '{spec.name}' (plugin '{spec.plugin}')"
    if not isinstance(state, State):
        raise CDIError(f"{who} returned {type(state).__name__}, not a State")
    if tuple(state.obj.shape) != problem.shape or tuple(state.support.shape) != problem.shape:
        raise CDIError(f"{who} returned an object of shape {tuple(state.obj.shape)}, expected {problem.shape}")
    if state.obj.dtype != backend.xp.complex64:
        raise CDIError(f"{who} returned dtype {state.obj.dtype}, expected complex64")


def _final_score(state) -> float:
    """What selects the best of several runs: chi2_free when free pixels are used, else chi2."""
    if not state.history:
        return float("inf")
    last = state.history[-1]
    return float(last.get("chi2_free", last.get("chi2", float("inf"))))


def _average(kept: list, k: int) -> tuple[np.ndarray, list]:
    """Mean of the *k* lowest-scoring objects, each aligned to the best (translation, phase, twin)."""
    from cdi_plugins.compute.metrics import compare_to_truth
    kept = sorted(kept, key=lambda t: t[0])[:k]
    ref = kept[0][2]
    total = ref.astype(np.complex128)
    for _, _, obj in kept[1:]:
        total += compare_to_truth(obj, ref)["aligned"]
    return (total / len(kept)).astype(np.complex64), [r + 1 for _, r, _ in kept]


def _run_once(plan: DatasetPlan, problem: Problem, ctx: Context, timings: list) -> State:
    state = None
    for i, step in enumerate(plan.steps, start=1):
        ctx.step = i
        t0 = time.perf_counter()
        try:
            state = step.algorithm.run(problem, state, dict(step.params), ctx)
        except CDIError as e:
            raise e if e.location else e.at(step.where)
        except Exception as exc:  # a plugin's bug: one line naming the step and who wrote it
            spec = step.algorithm
            raise CDIError(f"algorithm '{spec.name}' (plugin '{spec.plugin}') failed: "
                           f"{exc.__class__.__name__}: {exc} (cdi --debug shows the traceback)",
                           step.where) from exc
        ctx.backend.synchronize()
        dt = time.perf_counter() - t0
        _check_state(state, step.algorithm, problem, ctx.backend)
        timings[i - 1] += dt
        state = state.replace(provenance=list(state.provenance) + [
            {"step": i, "algorithm": step.name, "plugin": step.algorithm.plugin, "seconds": dt}])
        log.info("step %d %s: %.3f s", i, step.name, dt)
    return state


def run_plan(plan: DatasetPlan, problem: Problem, *, recipe_text: str = "",
             progress: Callable[..., None] | None = None) -> Result:
    """Run the steps of one dataset plan on *problem* (``plan.runs`` times, keeping the best).

    With ``plan.average = k > 1`` the result's object is the mean of the *k*
    best runs, each aligned to the best one (translation, global phase and
    twin), which averages out what the data does not determine; its support and
    history are the best run's, and ``metadata["average_chi2"]`` is the chi^2 of
    the mean.
    """
    backend = get_backend(plan.backend, fft=plan.fft, threads=plan.threads)
    for step in plan.steps:
        if backend.name not in step.algorithm.backends:
            raise CDIError(f"algorithm '{step.name}' does not run on the {backend.name} backend", step.where)
    report = progress or (lambda **event: None)
    timings = [0.0] * len(plan.steps)
    best, best_score, scores, kept = None, float("inf"), [], []
    for r in range(plan.runs):
        # run 0 is exactly the single-run result for this seed; later runs get their own streams
        rng = np.random.default_rng(plan.seed if r == 0 else [plan.seed or 0, r])
        ctx = Context(backend=backend, rng=rng, logger=log,
                      progress=(lambda _r=r, **event: report(run=_r + 1, runs=plan.runs, **event)))
        state = _run_once(plan, problem, ctx, timings)
        score = _final_score(state)
        scores.append(score)
        if best is None or score < best_score:
            best, best_score = state, score
        if plan.average > 1:
            kept.append((score, r, backend.to_numpy(state.obj).astype(np.complex64, copy=False)))
    steps = [{"step": i, "algorithm": st.name, "plugin": st.algorithm.plugin, "params": dict(st.params),
              "seconds": timings[i - 1]} for i, st in enumerate(plan.steps, start=1)]
    obj = backend.to_numpy(best.obj).astype(np.complex64, copy=False)
    support = backend.to_numpy(best.support).astype(bool, copy=False)
    metadata = {**problem.metadata, "source": problem.source, "backend": backend.name,
                "fft": backend.fft_engine, "threads": backend.threads_for(problem.intensity.size),
                "seed": plan.seed, "runs": plan.runs, "postprocess": dict(plan.postprocess)}
    if plan.runs > 1:
        metadata["run_scores"] = scores
        metadata["best_run"] = int(np.argmin(scores)) + 1
    if plan.average > 1:
        obj, metadata["averaged_runs"] = _average(kept, plan.average)
        from cdi_plugins.compute.metrics import chi2
        metadata["average_chi2"] = chi2(obj, problem.intensity, problem.unconstrained)
    return Result(obj=obj, support=support, history=list(best.history), timings=timings, steps=steps,
                  intensity=np.array(problem.intensity), mask=np.array(problem.mask), metadata=metadata,
                  truth=None if problem.truth is None else np.array(problem.truth),
                  recipe=recipe_text or yaml.safe_dump(plan.doc, sort_keys=False),
                  dataset=plan.name, versions=versions())


def run(recipe, data: Any = None, *, dataset: str | None = None, overrides=(),
        progress: Callable[..., None] | None = None) -> Result:
    """Run a recipe on one dataset and return the :class:`Result`.

    Parameters
    ----------
    recipe : str, path or dict
        A recipe file, a YAML string, or a mapping.
    data : str, path or ndarray, optional
        Overrides the recipe's data source (the intensity; mask settings still apply).
    dataset : str, optional
        Which dataset of a multi-dataset recipe to run.
    overrides : list of (key, value)
        Dotted-path overrides, as ``cdi run --set``.
    progress : callable, optional
        Receives ``progress(step=, algorithm=, iteration=, total=, chi2=)`` events.

    Returns
    -------
    Result

    Raises
    ------
    CDIError
        For anything wrong with the recipe or the data, before computing.
    """
    data_path = None
    if data is not None:
        data_path = os.path.abspath(os.fspath(data)) if isinstance(data, (str, os.PathLike)) else "<array>"
    rec: Recipe = load_recipe(recipe, overrides=list(overrides), data=data_path)
    plan = rec.dataset(dataset)
    problem = build_problem(plan, data)
    return run_plan(plan, problem, recipe_text=yaml.safe_dump(plan.doc, sort_keys=False), progress=progress)


def run_all(recipe, *, overrides=(), progress=None) -> dict[str, Result]:
    """Run every dataset of a recipe; returns ``{dataset name: Result}``."""
    rec = load_recipe(recipe, overrides=list(overrides))
    out = {}
    for plan in rec.datasets:
        problem = build_problem(plan)
        out[plan.name] = run_plan(plan, problem, recipe_text=yaml.safe_dump(plan.doc, sort_keys=False),
                                  progress=progress)
    return out
