"""The built-in executors: a Dask LocalCluster, an existing Dask scheduler, Slurm and PBS (dask-jobqueue),
and the recipe's ``cluster:`` section that configures the last two.

Nothing here imports Dask until an executor is made."""

from __future__ import annotations

import concurrent.futures as cf
import os

from cdi_plugins.errors import CDIError

__all__ = ["CLUSTER_KEYS", "read_cluster", "DaskExecutor", "make_local", "make_dask", "make_jobqueue",
           "job_script"]

# key: (type, default, help)
CLUSTER_KEYS = {
    "queue": (str, None, "partition (Slurm) or queue (PBS)"),
    "account": (str, None, "project to charge"),
    "walltime": (str, "01:00:00", "per job, HH:MM:SS"),
    "cores": (int, 1, "cores per job"),
    "memory": (str, "4GB", "memory per job (e.g. 64GB)"),
    "processes": (int, None, "workers per job (default: one per GPU, else 1)"),
    "gpus": (int, 0, "GPUs per job: one reconstruction per GPU, each worker pinned to one"),
    "jobs": (int, 1, "jobs to start (the workers are jobs x processes)"),
    "job_extra_directives": (list, [], "extra #SBATCH / #PBS lines (without the prefix)"),
    "job_script_prologue": (list, [], "shell lines run before the worker starts (module load ...)"),
    "interface": (str, None, "network interface the workers and scheduler use (e.g. ib0)"),
    "local_directory": (str, None, "worker scratch folder on the node"),
    "log_directory": (str, None, "where job logs go"),
    "python": (str, None, "the Python on the nodes (default: this one)"),
}


def read_cluster(recipe: str) -> dict:
    """The recipe's ``cluster:`` section, checked (one-line errors with the recipe line), defaults filled."""
    from cdi_plugins.core.params import suggest
    from cdi_plugins.recipe.loader import read_recipe
    from cdi_plugins.recipe.location import _Where
    doc, _, source, _ = read_recipe(recipe)
    node = doc.get("cluster") if isinstance(doc, dict) else None
    where = _Where(source, "", doc)
    out = {k: (list(v[1]) if isinstance(v[1], list) else v[1]) for k, v in CLUSTER_KEYS.items()}
    if node is None:
        return out
    if not isinstance(node, dict):
        raise CDIError("cluster must be a mapping (queue:, account:, walltime:, cores:, memory:, gpus: ...)",
                       where.text("cluster"))
    cw = where.child("cluster", node)
    for key, value in node.items():
        if key not in CLUSTER_KEYS:
            raise CDIError(f"unknown key '{key}'{suggest(str(key), CLUSTER_KEYS)}; allowed: "
                           f"{', '.join(CLUSTER_KEYS)}", cw.text(key))
        kind, _, _ = CLUSTER_KEYS[key]
        if value is None:
            continue
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpus" else 1):
                raise CDIError(f"cluster.{key} must be an integer >= {0 if key == 'gpus' else 1}, got {value!r}",
                               cw.text(key))
        elif kind is list:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise CDIError(f"cluster.{key} must be a list of strings", cw.text(key))
        elif kind is str:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key in ("memory", "walltime"):
                raise CDIError(f"cluster.{key} must be a string such as "
                               f"{'64GB' if key == 'memory' else '02:00:00'}, got {value!r}", cw.text(key))
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise CDIError(f"cluster.{key} must be a string, got {value!r}", cw.text(key))
            value = str(value)
        out[key] = value
    return out


class DaskExecutor(cf.Executor):
    """A :class:`concurrent.futures.Executor` over a ``distributed.Client``; ``shutdown`` closes the client
    and the cluster it started.  ``client`` lets the runner stream the workers' progress."""

    def __init__(self, client, cluster=None):
        self.client, self.cluster = client, cluster
        self._ex = client.get_executor(pure=False)

    def submit(self, fn, /, *args, **kwargs):
        return self._ex.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        try:
            self._ex.shutdown(wait=wait and not cancel_futures)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def _quiet_dask():
    import logging
    for name in ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler",
                 "distributed.core", "distributed.http.proxy"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_local(options: dict) -> DaskExecutor:
    """A Dask LocalCluster on this machine: one single-threaded worker process per reconstruction."""
    from distributed import Client, LocalCluster
    _quiet_dask()
    workers = options.get("workers") or max(1, min(os.cpu_count() or 1, options.get("tasks") or 1))
    threads = str(options.get("threads") or 1)
    env = {v: threads for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           env=env)
    return DaskExecutor(Client(cluster), cluster)


def make_dask(options: dict) -> DaskExecutor:
    """The workers of an existing Dask scheduler (``--scheduler tcp://host:8786``)."""
    from distributed import Client
    address = options.get("scheduler")
    if not address:
        raise CDIError("--executor dask needs --scheduler ADDRESS (tcp://host:8786, or a scheduler file .json)",
                       "--scheduler")
    _quiet_dask()
    try:
        if str(address).endswith(".json"):
            client = Client(scheduler_file=address, timeout="10s")
        else:
            client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise CDIError(f"cannot reach the Dask scheduler: {exc.__class__.__name__}: {exc}", "--scheduler") from None
    return DaskExecutor(client)


def _cluster_kwargs(kind: str, c: dict) -> dict:
    gpus = c.get("gpus") or 0
    processes = c.get("processes") or (gpus if gpus else 1)
    extra = list(c.get("job_extra_directives") or [])
    prologue = list(c.get("job_script_prologue") or [])
    if gpus:
        prologue.append(f"export CDI_GPUS_PER_JOB={gpus}")   # worker k of a job uses GPU k (cdi_plugins.batch.worker)
    # one reconstruction at a time per worker: the job asks for all its cores (Slurm job_cpu, PBS select),
    # each worker runs one task thread
    kw = {"cores": processes, "memory": c["memory"], "processes": processes,
          "walltime": c["walltime"],
          "job_extra_directives": extra, "job_script_prologue": prologue}
    if kind == "slurm":
        kw["job_cpu"] = c["cores"]
        if gpus:
            extra.append(f"--gres=gpu:{gpus}")
    elif kind == "pbs":
        spec = f"select=1:ncpus={c['cores']}:mem={c['memory']}"
        if gpus:
            spec = f"select=1:ncpus={c['cores']}:ngpus={gpus}:mem={c['memory']}"
        kw["resource_spec"] = spec
    for key in ("queue", "account", "interface", "local_directory", "log_directory", "python"):
        if c.get(key):
            kw[key] = c[key]
    return kw


def _jobqueue_class(kind: str):
    try:
        import dask_jobqueue
    except ImportError:
        raise CDIError("the slurm and pbs executors need dask-jobqueue: pip install dask-jobqueue",
                       "--executor") from None
    return dask_jobqueue.SLURMCluster if kind == "slurm" else dask_jobqueue.PBSCluster


def _jobqueue_cluster(kind: str, options: dict):
    _quiet_dask()
    cluster_cls = _jobqueue_class(kind)
    c = options.get("cluster") or {}
    return cluster_cls(**_cluster_kwargs(kind, c)), c


def job_script(kind: str, options: dict) -> str:
    """The job script ``kind`` (``slurm`` or ``pbs``) would submit: no scheduler needed to see it."""
    cluster, _ = _jobqueue_cluster(kind, options)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


def make_jobqueue(kind: str, options: dict) -> DaskExecutor:
    """Workers started as Slurm or PBS jobs, as the recipe's ``cluster:`` section says."""
    from distributed import Client
    cluster, c = _jobqueue_cluster(kind, options)
    cluster.scale(jobs=c.get("jobs") or 1)
    return DaskExecutor(Client(cluster), cluster)
