"""Submit tasks to an executor, collect their records into the manifest, skip what is done, stop cleanly."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
import sys

from cdi_plugins.batch.manifest import Manifest
from cdi_plugins.batch.tasks import Task
from cdi_plugins.batch.worker import PROGRESS_TOPIC, plan_task, reason, run_task, set_listener
from cdi_plugins.errors import CDIError

__all__ = ["BatchReport", "prepare", "run_batch", "manifest_path"]


@dataclasses.dataclass
class BatchReport:
    """What a batch did; ``records`` in the order the scans finished."""
    manifest: Manifest
    records: list
    skipped: list
    cancelled: list = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> list:
        return [r for r in self.records if r["status"] != "done"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.cancelled


def manifest_path(tasks: list[Task], given: str | None) -> str:
    """*given*, else ``<recipe stem>_manifest.json`` in the folder of the first scan's result."""
    if given:
        return os.path.abspath(given)
    stem = os.path.splitext(os.path.basename(tasks[0].recipe))[0] if tasks else "batch"
    folder = os.getcwd()
    if tasks:
        try:
            job = plan_task(tasks[0])
            if job.outputs:
                folder = os.path.dirname(os.path.abspath(job.outputs[0]))
        except CDIError:
            pass
    return os.path.join(folder, f"{stem}_manifest.json")


def _absolute(task: Task, job) -> Task:
    """*task* with every output an absolute path (workers may start elsewhere) and its overwrite decided."""
    over = [(k, v) for k, v in task.overrides if not str(k).startswith("output.")]
    over += [(f"output.{k}", os.path.abspath(p)) for k, p in job.reports.items()]
    if job.cohere_dir:
        over.append(("output.cohere_dir", os.path.abspath(job.cohere_dir)))
    return dataclasses.replace(task, out=os.path.abspath(job.cxi) if job.cxi else None, overrides=tuple(over))


def prepare(tasks: list[Task], manifest: Manifest, *, force: bool = False):
    """``(to_run, skipped, failed_records)``: plans every task in this process (recipe, data, outputs), before
    anything runs.  A scan whose data is missing or whose plan fails is a failed record; a scan the manifest
    says is complete (outputs present) is skipped unless *force*.  Outputs a previous attempt of this batch
    left (the scan is in the manifest) may be replaced; any other existing file is refused (exit 2)."""
    from cdi_plugins.pipeline import check_outputs
    to_run, skipped, failed, jobs = [], [], [], []
    for task in tasks:
        if task.data and not os.path.exists(task.data):
            failed.append(_failed(task, f"{task.data}: data file not found"))
            continue
        try:
            job = plan_task(task)
        except CDIError as e:
            failed.append(_failed(task, str(e)))
            continue
        outputs = [os.path.abspath(p) for p in job.outputs]
        if not force and manifest.complete(task.scan, outputs):
            skipped.append(task.scan)
            continue
        task = _absolute(dataclasses.replace(task, overwrite=force or manifest.known(task.scan) or task.overwrite),
                         job)
        job.overwrite = task.overwrite
        to_run.append(task)
        jobs.append(job)
    paths = [os.path.abspath(p) for j in jobs for p in j.outputs]
    if len(set(paths)) != len(paths):
        raise CDIError("several scans would write the same output file; put {dataset} or {scan} in --out "
                       "(and in output.png, output.vti, output.html)")
    for folder in {os.path.dirname(p) for p in paths}:   # results/{scan}/...: folders a batch's template names
        os.makedirs(folder, exist_ok=True)
    check_outputs(jobs)
    return to_run, skipped, failed


def _failed(task: Task, error: str) -> dict:
    return {"scan": task.scan, "data": task.data, "status": "failed", "chi2": None, "support_fraction": None,
            "seconds": 0.0, "outputs": [], "error": error}


class _Running:
    """The running scans' last step and chi2, shown after the overall bar."""

    def __init__(self, bar):
        self.bar, self.state = bar, {}

    def __call__(self, event):
        if isinstance(event, tuple):   # distributed: (timestamp, message)
            event = event[-1]
        scan = event.get("scan")
        if scan is None:
            return
        chi = "" if event.get("chi2") is None else f" chi2={event['chi2']:.2e}"
        self.state[scan] = f"{scan}:{event.get('step')}:{event.get('algorithm')} {event.get('iteration')}/" \
                           f"{event.get('total')}{chi}"
        self.show()

    def finished(self, scan):
        self.state.pop(scan, None)
        self.show()

    def show(self):
        if self.bar is not None:
            self.bar.set_postfix_str(" | ".join(list(self.state.values())[:4]), refresh=True)


def run_batch(tasks: list[Task], executor, manifest: Manifest, *, force: bool = False, progress: bool = True,
              stream: bool | None = None, on_record=None) -> BatchReport:
    """Run *tasks* on *executor* (a :class:`concurrent.futures.Executor`); the manifest is written after each.

    *executor* may also be a function returning one: it is then called only when a scan needs running (after
    every check), and shut down here, also on Ctrl-C (its futures cancelled).

    *stream* (default: stderr is a terminal) shows the running scans' step and chi2, streamed from the
    workers.  Ctrl-C cancels what has not finished, writes the manifest (those scans ``cancelled``) and
    raises KeyboardInterrupt; the caller shuts the executor down.
    """
    to_run, skipped, failed = prepare(tasks, manifest, force=force)
    records = []
    for rec in failed:
        manifest.update(rec, write=False)
        records.append(rec)
    for task in to_run:
        manifest.update({"scan": task.scan, "data": task.data, "status": "pending", "error": None}, write=False)
    manifest.write()
    owned = not isinstance(executor, cf.Executor) and callable(executor)
    if owned:
        if not to_run:
            return BatchReport(manifest=manifest, records=records, skipped=skipped)
        executor = executor()
    interrupted = False
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(to_run), desc="scans", unit="scan", file=sys.stderr, dynamic_ncols=True,
                   disable=None)
    stream = sys.stderr.isatty() if stream is None else stream
    running = _Running(bar if stream else None)
    client = getattr(executor, "client", None)
    if stream:
        if client is not None:
            client.subscribe_topic(PROGRESS_TOPIC, running)
        else:
            set_listener(running)
    futures = {}
    try:
        for task in to_run:
            futures[executor.submit(run_task, task)] = task
        for fut in cf.as_completed(futures):
            task = futures.pop(fut)
            try:
                rec = fut.result()
            except Exception as exc:   # the worker died, the scheduler went away: this scan failed
                rec = _failed(task, reason(exc))
            manifest.update(rec)
            records.append(rec)
            running.finished(task.scan)
            if on_record is not None:
                on_record(rec)
            if bar is not None:
                bad = sum(r["status"] != "done" for r in records)
                bar.set_description(f"scans ({bad} failed)" if bad else "scans")
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
        for fut in futures:
            fut.cancel()
        cancelled = list(futures.values())
        for task in cancelled:
            manifest.update({"scan": task.scan, "status": "cancelled", "error": "interrupted (Ctrl-C)"}, write=False)
        manifest.write()
        raise
    finally:
        set_listener(None)
        if stream and client is not None:
            try:
                client.unsubscribe_topic(PROGRESS_TOPIC)
            except Exception:   # the client may already be closing
                pass
        if bar is not None:
            bar.close()
        if owned:
            executor.shutdown(wait=not interrupted, cancel_futures=interrupted)
    return BatchReport(manifest=manifest, records=records, skipped=skipped)
