"""What runs on a worker: one task, start to finish, returning a small record (never raising for a scan's
own failure: a bad file or a diverging run is that scan's record, and the other scans go on)."""

from __future__ import annotations

import os
import sys
import time

from cdi_plugins.batch.tasks import Task
from cdi_plugins.errors import CDIError

__all__ = ["run_task", "plan_task", "set_listener", "PROGRESS_TOPIC", "reason"]

PROGRESS_TOPIC = "cdi-progress"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_listener = None   # in-process executors (threads): progress events go straight to this callable


def set_listener(fn) -> None:
    """Send progress events of tasks run in this process to *fn(event)* (None: stop)."""
    global _listener
    _listener = fn


def reason(exc: BaseException) -> str:
    """A failure as one line: a CDIError's message (it names the file or recipe place), else class: message."""
    if isinstance(exc, CDIError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def plan_task(task: Task):
    """The :class:`~cdi_plugins.pipeline.Job` of *task*: its validated plan and the files it writes."""
    from cdi_plugins.pipeline import DEFAULT_OUT, plan_jobs
    from cdi_plugins.recipe import load_recipe
    rec = load_recipe(task.recipe, overrides=list(task.overrides), data=task.data)
    jobs = plan_jobs({task.data: rec}, out=task.out, overwrite=task.overwrite, default_out=DEFAULT_OUT)
    return jobs[0]


def _limit_threads(n: int | None) -> None:
    if not n:
        return
    for var in _THREAD_VARS:   # read by torch and BLAS when they are first imported in this process
        os.environ.setdefault(var, str(n))
    _pin_gpu()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(n))


def _pin_gpu() -> None:
    """On a GPU job (``CDI_GPUS_PER_JOB`` set by the slurm/pbs executors), worker k of the job sees GPU k only."""
    gpus = os.environ.get("CDI_GPUS_PER_JOB")
    if not gpus or "CUDA_VISIBLE_DEVICES" in os.environ or "distributed" not in sys.modules:
        return
    try:
        from distributed import get_worker
        name = str(get_worker().name)
    except ValueError:
        return
    tail = name.rsplit("-", 1)[-1]
    os.environ["CUDA_VISIBLE_DEVICES"] = str(int(tail) % int(gpus) if tail.isdigit() else 0)


def _emitter(scan: str, every: float = 0.5):
    """A progress callback sending at most one event per *every* seconds (and every step change)."""
    sink = _listener
    if sink is None and "distributed" in sys.modules:
        try:
            from distributed import get_worker
            worker = get_worker()
            sink = lambda event: worker.log_event(PROGRESS_TOPIC, event)  # noqa: E731
        except ValueError:   # not inside a Dask worker
            sink = None
    if sink is None:
        return None
    last = {"t": 0.0, "step": None}

    def progress(step=0, algorithm="", iteration=0, total=0, chi2=None, **_):
        now = time.monotonic()
        if now - last["t"] < every and step == last["step"] and iteration != total:
            return
        last.update(t=now, step=step)
        sink({"scan": scan, "step": step, "algorithm": algorithm, "iteration": iteration, "total": total,
              "chi2": None if chi2 is None else float(chi2)})
    return progress


def run_task(task: Task) -> dict:
    """Run one scan and write its outputs; returns its manifest record.

    ``status`` is ``"done"`` (with ``chi2``, ``support_fraction``, ``outputs``) or ``"failed"`` (with
    ``error``, one line); ``seconds`` is the wall time on the worker.
    """
    from cdi_plugins.io.atomic import input_scope
    t0 = time.perf_counter()
    record = {"scan": task.scan, "data": task.data, "status": "failed", "chi2": None, "support_fraction": None,
              "seconds": None, "outputs": [], "error": None, "host": _host()}
    _limit_threads(task.threads)
    try:
        from cdi_plugins.pipeline import build_problem, check_outputs, run_plan, write_outputs
        with input_scope():
            job = plan_task(task)
            check_outputs([job])
            problem = build_problem(job.plan, job.data)
            result = run_plan(job.plan, problem, progress=_emitter(task.scan))
            written = write_outputs(result, job)
        record.update(status="done", chi2=result.chi2, outputs=written, iterations=result.iterations,
                      support_fraction=float(result.support.mean()))
    except Exception as exc:   # this scan's failure, reported; KeyboardInterrupt and SystemExit go up
        record["error"] = reason(exc)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _host() -> str:
    import socket
    return socket.gethostname()
