"""What a plugin registers to run many scans (``cdi batch``) or to follow one being written (``cdi watch``).

An executor is anything shaped like :class:`concurrent.futures.Executor` (``submit`` and ``shutdown``):
Dask, dask-jobqueue, a thread pool, Globus Compute, Parsl's ``ParslPoolExecutor`` or ``mpi4py.futures``.
A frame source hands out the frames of a rocking scan as they are written (a folder of TIFFs, a growing
HDF5 file, later an EPICS stream)::

    @hookimpl
    def cdi_register_executors(register):
        register(ExecutorSpec(name="threads", help="a thread pool in this process",
                              make=lambda options: ThreadPoolExecutor(options.get("workers") or 2)))
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

__all__ = ["ExecutorSpec", "FrameSourceSpec", "SPEC_NAME"]

SPEC_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclasses.dataclass
class ExecutorSpec:
    """One way of running tasks.

    Parameters
    ----------
    name : str
        What ``cdi batch --executor NAME`` selects.
    help : str
        One line for ``cdi batch --help`` and ``cdi plugins``.
    make : callable
        ``make(options) -> concurrent.futures.Executor``.  *options* is a dict: ``workers`` (int or None),
        ``threads`` (FFT/torch threads per task), ``scheduler`` (an address or None), ``cluster`` (the
        recipe's validated ``cluster:`` section, a dict), ``tasks`` (how many tasks will be submitted).
        The executor's ``shutdown()`` releases everything it started.  An executor with a ``client``
        attribute (a ``distributed.Client``) gets the workers' progress streamed back.
    script : callable, optional
        ``script(options) -> str``: the job script a scheduler would run (``cdi batch --dry-run``).
    """

    name: str
    help: str
    make: Callable
    script: Callable | None = None
    plugin: str = ""  # filled in by the registry


@dataclasses.dataclass
class FrameSourceSpec:
    """One kind of live data for ``cdi watch``.

    Parameters
    ----------
    name : str
        What ``cdi watch --source NAME`` selects.
    help : str
        One line.
    make : callable
        ``make(path, options) -> source``; a source has ``poll() -> list[(index, 2-D ndarray)]`` (the frames
        complete since the last call, in order; a frame is handed out once, and only once it is fully
        written) and ``close()``.  *options*: ``poll`` (bool: no inotify, poll the filesystem),
        ``settle`` (seconds a frame's size must stay unchanged when no later frame exists yet).
    accepts : callable, optional
        ``accepts(path) -> bool``: whether this source reads *path* (used when ``--source`` is not given).
    """

    name: str
    help: str
    make: Callable
    accepts: Callable | None = None
    plugin: str = ""
