"""The built-in executors and frame sources, registered through the same hooks a third party uses."""

from __future__ import annotations

import os

from cdi_plugins.core.executors import ExecutorSpec, FrameSourceSpec
from cdi_plugins.core.hookspecs import hookimpl


def _local(options):
    from cdi_plugins.batch.cluster import make_local
    return make_local(options)


def _dask(options):
    from cdi_plugins.batch.cluster import make_dask
    return make_dask(options)


def _jobqueue(kind):
    def make(options):
        from cdi_plugins.batch.cluster import make_jobqueue
        return make_jobqueue(kind, options)

    def script(options):
        from cdi_plugins.batch.cluster import job_script
        return job_script(kind, options)
    return make, script


@hookimpl
def cdi_register_executors(register):
    register(ExecutorSpec("local", "Dask LocalCluster on this machine: one single-threaded worker process per "
                          "reconstruction (--workers N, default: the cores)", _local))
    register(ExecutorSpec("dask", "the workers of a running Dask scheduler (--scheduler tcp://host:8786)", _dask))
    make, script = _jobqueue("slurm")
    register(ExecutorSpec("slurm", "Slurm jobs from the recipe's cluster: section (dask-jobqueue)", make, script))
    make, script = _jobqueue("pbs")
    register(ExecutorSpec("pbs", "PBS jobs (e.g. ALCF Polaris) from the recipe's cluster: section (dask-jobqueue)",
                          make, script))


def _folder(path, options):
    from cdi_plugins.batch.frames import FolderSource
    return FolderSource(path, poll=bool(options.get("poll")), settle=options.get("settle", 1.0),
                        interval=options.get("interval", 0.25))


def _hdf5(path, options):
    from cdi_plugins.batch.frames import HDF5Source
    return HDF5Source(path, dataset=options.get("dataset") or "entry/data/data", settle=options.get("settle", 1.0),
                      interval=options.get("interval", 0.25))


@hookimpl
def cdi_register_frame_sources(register):
    register(FrameSourceSpec("folder", "a folder of one 2-D TIFF per frame (watchdog; --poll on network "
                             "filesystems)", _folder, accepts=os.path.isdir))
    register(FrameSourceSpec("hdf5", "a growing HDF5 file, frames along entry/data/data (h5py SWMR)", _hdf5,
                             accepts=lambda p: str(p).lower().endswith((".h5", ".hdf5", ".nxs"))))
