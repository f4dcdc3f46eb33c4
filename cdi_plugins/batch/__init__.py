"""Many scans at once (``cdi batch``) and one scan while it is written (``cdi watch``).

One task is one scan is one recipe run (:mod:`cdi_plugins.pipeline`), submitted to a
:class:`concurrent.futures.Executor` that a plugin provides through the ``cdi_register_executors`` hook
(built in: a Dask ``LocalCluster``, an existing Dask scheduler, Slurm and PBS through dask-jobqueue).
Results go to the (shared) filesystem; futures carry small records, collected in a manifest.

Modules: :mod:`~cdi_plugins.batch.tasks` (scans -> tasks), :mod:`~cdi_plugins.batch.worker` (what runs on a
worker), :mod:`~cdi_plugins.batch.manifest`, :mod:`~cdi_plugins.batch.runner` (submit, collect, resume,
interrupt), :mod:`~cdi_plugins.batch.cluster` (the ``cluster:`` recipe section and the built-in executors),
:mod:`~cdi_plugins.batch.frames` (live frame sources), :mod:`~cdi_plugins.batch.live` (``cdi watch``) and
:mod:`~cdi_plugins.batch.plugin` (the built-ins' registration).  Importing this package imports nothing heavy.
"""
