"""The steps of one run, and many runs in this process or in worker processes.

Parallel runs go to a :class:`concurrent.futures.ProcessPoolExecutor` started with ``spawn`` (a fresh
interpreter: no inherited FFT plans, threads or GPU context), one FFT thread per worker unless the recipe
sets ``threads``.  Each worker receives the Problem and the validated steps once; every run is seeded from
its own index, never from the worker that happens to run it, so a run gives the same bits in a worker as
in this process (with a deterministic FFT engine, e.g. ``fft: scipy``, and the same thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from cdi_plugins.core.state import Context, Problem, State
from cdi_plugins.errors import CDIError

__all__ = ["Step", "RunTask", "RunOutcome", "run_steps", "run_tasks", "resolve_workers", "available_cores",
           "AUTO_MIN_WORK"]

log = logging.getLogger("cdi_plugins")

AUTO_MIN_WORK = 64 ** 3 * 200
"""``workers: auto`` runs in parallel only when one run does at least this many voxel-iterations (about
0.5 s of one core): below it starting the worker processes costs more than it saves."""

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                "NUMEXPR_NUM_THREADS")


@dataclasses.dataclass
class RunTask:
    """One run to do: its number (0-based, as reported), what seeds its generator, and where it starts.

    *start* is None for a random start, else a State with host (NumPy) arrays.
    """
    index: int
    seed: Any
    start: State | None = None


@dataclasses.dataclass
class RunOutcome:
    """One finished run: the task's number, its final State and the seconds each step took."""
    index: int
    state: State
    timings: list


def available_cores() -> int:
    """CPU cores this process may use (the backend's count: CPU affinity and container limits respected)."""
    from cdi_plugins.compute.backend import default_threads
    return default_threads()


def _inside_a_worker() -> bool:
    """Whether this run is one task of a batch (a daemonic process, a Dask worker, a thread other than the
    main one): the batch already spreads its scans over the cores."""
    import threading
    if multiprocessing.current_process().daemon or threading.current_thread() is not threading.main_thread():
        return True
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker
            get_worker()
            return True
        except (ImportError, ValueError):
            pass
    return False


def resolve_workers(workers, *, tasks: int, backend: str, threads: int | None, work: int) -> int:
    """How many worker processes to use for *tasks* runs (1: run them here, one after the other).

    ``auto`` is parallel only on the CPU (one GPU is shared better by one process), outside a batch's
    workers (a daemonic process cannot start children; a Dask worker or a thread already shares the cores
    with other scans), when one run is large enough (:data:`AUTO_MIN_WORK`
    voxel-iterations in *work*) and when there are cores to spare: cores // (threads or 1) workers at
    most, never more than *tasks*.  A number is taken as given (at most *tasks*).
    """
    if tasks <= 1:
        return 1
    if workers != "auto":
        return max(1, min(int(workers), tasks))
    if backend != "numpy" or work < AUTO_MIN_WORK or _inside_a_worker():
        return 1
    return max(1, min(tasks, available_cores() // max(1, threads or 1)))


def _check_state(state, spec, problem, backend) -> None:
    who = f"algorithm '{spec.name}' (plugin '{spec.plugin}')"
    if not isinstance(state, State):
        raise CDIError(f"{who} returned {type(state).__name__}, not a State")
    if tuple(state.obj.shape) != problem.shape or tuple(state.support.shape) != problem.shape:
        raise CDIError(f"{who} returned an object of shape {tuple(state.obj.shape)}, expected {problem.shape}")
    if state.obj.dtype != backend.xp.complex64:
        raise CDIError(f"{who} returned dtype {state.obj.dtype}, expected complex64")


def _with_free_llk(state: State, before: int, problem: Problem, backend) -> State:
    """*state* with ``llk_free`` added to the last history record of the step just run (when it added any)."""
    if problem.free is None or len(state.history) <= before:
        return state
    from cdi_plugins.runs.score import free_llk
    value = free_llk(backend.to_numpy(state.obj), problem.intensity, problem.free,
                     threads=backend.threads_for(problem.intensity.size))
    history = list(state.history)
    history[-1] = {**history[-1], "llk_free": value}
    return state.replace(history=history)


def run_steps(steps, problem: Problem, ctx: Context, timings: list, start: State | None = None) -> State:
    """Run *steps* (objects with ``algorithm``, ``params``, ``where``, ``name``) in order from *start*.

    Adds each step's seconds to ``timings[i]``, a provenance record per step and, with free pixels, the
    free log-likelihood of the step's result to its last history record.  A plugin's exception becomes
    one CDIError naming the step.
    """
    state = start
    for i, step in enumerate(steps, start=1):
        ctx.step = i
        before = len(state.history) if state is not None else 0
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
        state = _with_free_llk(state, before, problem, ctx.backend)
        state = state.replace(provenance=list(state.provenance) + [
            {"step": i, "algorithm": step.name, "plugin": step.algorithm.plugin, "seconds": dt}])
        log.info("step %d %s: %.3f s", i, step.name, dt)
    return state


def _one(task: RunTask, steps, problem, backend, progress) -> RunOutcome:
    rng = np.random.default_rng(task.seed)
    ctx = Context(backend=backend, rng=rng, logger=log, progress=progress)
    timings = [0.0] * len(steps)
    state = run_steps(steps, problem, ctx, timings, task.start)
    return RunOutcome(index=task.index, state=state, timings=timings)


# ------------------------------------------------------------------------------------------ worker processes

_WORKER: dict = {}


@dataclasses.dataclass(frozen=True)
class _StepRef:
    """What a worker needs to rebuild a validated step: the algorithm's name and plugin, its parameters."""
    name: str
    plugin: str
    params: dict
    where: str


@dataclasses.dataclass
class Step:
    """One expanded step of a recipe: a registered algorithm and its validated parameters
    (``cdi_plugins.recipe.Step``; defined here so that a worker process rebuilds the same thing)."""
    algorithm: Any
    params: dict
    where: str

    @property
    def name(self) -> str:
        return self.algorithm.name

    @property
    def iterations(self) -> int:
        key = self.algorithm.iterations_param
        return int(self.params[key]) if key else 0


def load_preloads(steps) -> None:
    """Import the modules *steps* name in ``AlgorithmSpec.preload`` (torch for nn and ad) before any of them
    runs: a library an earlier step loads (Intel MKL, the FFT engine above 64^3) would otherwise replace the
    MKL functions torch carries inside (compute.backend.preload)."""
    from cdi_plugins.compute.backend import preload
    preload(m for step in steps for m in step.algorithm.preload)


def _init_worker(problem, refs, backend_args, threads) -> None:
    for var in _THREAD_VARS:   # before numerical libraries that read them are imported here
        os.environ[var] = str(threads)
    from cdi_plugins.compute.backend import get_backend
    from cdi_plugins.core.registry import get_registry
    registry = get_registry()
    steps = []
    for ref in refs:
        spec = registry.get(ref.name, ref.where)
        if spec.plugin != ref.plugin:
            raise CDIError(f"algorithm '{ref.name}' comes from plugin '{spec.plugin}' in a worker process, not "
                           f"'{ref.plugin}' (registered at run time?); use workers: 1", ref.where)
        steps.append(Step(spec, dict(ref.params), ref.where))
    load_preloads(steps)   # torch before MKL here too, as in this process
    _WORKER.update(problem=problem, steps=steps, backend=get_backend(**backend_args))


def _work(task: RunTask) -> RunOutcome:
    be = _WORKER["backend"]
    out = _one(task, _WORKER["steps"], _WORKER["problem"], be, lambda **event: None)
    s = out.state   # host arrays travel back
    out.state = s.replace(obj=be.to_numpy(s.obj).astype(np.complex64, copy=False),
                          support=be.to_numpy(s.support).astype(bool, copy=False))
    return out


def _report_finished(outcome: RunOutcome, steps, report) -> None:
    """A run finished in a worker: its progress, one event per step (its last iteration)."""
    last = {}
    for rec in outcome.state.history:
        last[rec.get("step")] = rec
    for i, step in enumerate(steps, start=1):
        rec = last.get(i)
        if rec is not None:
            report(run=outcome.index, step=i, algorithm=step.name, iteration=rec.get("iteration", 0),
                   total=rec.get("iteration", 0), chi2=rec.get("chi2"))


@contextlib.contextmanager
def _main_not_reimported():
    """While worker processes start, hide the caller's script from ``spawn``.

    ``spawn`` re-runs the parent's ``__main__`` in every child, which needs the ``if __name__ ==
    "__main__":`` guard in the user's script (without it, each child would start the recipe again).  The
    workers run only functions of this module, so the script is not needed there: they start without it.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for k in saved:
            if k == "__spec__":
                main.__spec__ = None
            else:
                del main.__dict__[k]
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def run_tasks(tasks: list, *, steps, problem: Problem, backend, workers: int,
              progress: Callable[..., None] | None = None) -> list:
    """Run every task; returns their :class:`RunOutcome` in the order of *tasks*.

    *backend* is this process's backend (used as it is when *workers* is 1); workers build one with the
    same array library and FFT engine and ``backend.threads`` FFT threads only when the recipe set
    ``threads``, else one.  *progress* receives the steps' events with ``run=`` (the task's index) added;
    from workers, one event per step when a run finishes.
    """
    report = progress or (lambda **event: None)
    if workers <= 1 or len(tasks) <= 1:
        return [_one(t, steps, problem, backend, (lambda _r=t.index, **event: report(run=_r, **event)))
                for t in tasks]
    from concurrent.futures import ProcessPoolExecutor, as_completed
    threads = backend.threads if getattr(backend, "_threads_explicit", False) else 1
    refs = [_StepRef(s.name, s.algorithm.plugin, dict(s.params), s.where) for s in steps]
    args = {"name": backend.name, "fft": getattr(backend, "fft_requested", backend.fft_engine), "threads": threads}
    if hasattr(backend, "planner_effort"):
        args["planner_effort"] = backend.planner_effort
    ctx = multiprocessing.get_context("spawn")
    out = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                             initargs=(problem, refs, args, threads)) as pool:
        with _main_not_reimported():   # workers start while tasks are submitted
            futures = {pool.submit(_work, t): t for t in tasks}
        try:
            for fut in as_completed(futures):
                res = fut.result()
                out[res.index] = res
                _report_finished(res, steps, report)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return [out[t.index] for t in tasks]
