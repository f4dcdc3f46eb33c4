"""Hook specifications: how a plugin tells cdi-plugins what it provides.

A plugin is a module (or any object) with functions marked ``@hookimpl``,
announced to the world through the ``cdi_plugins`` entry-point group::

    # setup.cfg of a third-party package
    [options.entry_points]
    cdi_plugins =
        my_algorithms = my_package.plugin

    # my_package/plugin.py
    from cdi_plugins import AlgorithmSpec, Param, hookimpl

    @hookimpl
    def cdi_register_algorithms(register):
        register(AlgorithmSpec(name="my_alg", kind="iterative", summary="...", params=[...], run=run))

The built-in algorithms register through exactly this mechanism.  A plugin can also add ``cdi``
subcommands with ``cdi_register_commands`` (see :mod:`cdi_plugins.core.commands`); the neural
network's ``train`` and cohere's ``import-cohere`` come in that way.  Executors for ``cdi batch`` and frame
sources for ``cdi watch`` come through ``cdi_register_executors`` and ``cdi_register_frame_sources``
(see :mod:`cdi_plugins.core.executors`).
"""

import pluggy

PROJECT = "cdi_plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cdi_register_algorithms(register):
    """Register reconstruction algorithms.

    Parameters
    ----------
    register : callable
        Call ``register(spec)`` once per :class:`cdi_plugins.AlgorithmSpec`.
    """


@hookspec
def cdi_register_commands(register):
    """Register ``cdi`` subcommands.

    Parameters
    ----------
    register : callable
        Call ``register(spec)`` once per :class:`cdi_plugins.core.commands.CommandSpec`.
    """


@hookspec
def cdi_register_executors(register):
    """Register executors for ``cdi batch`` (Dask, a cluster, a thread pool, Globus Compute ...).

    Parameters
    ----------
    register : callable
        Call ``register(spec)`` once per :class:`cdi_plugins.core.executors.ExecutorSpec`.
    """


@hookspec
def cdi_register_frame_sources(register):
    """Register live frame sources for ``cdi watch`` (a folder of TIFFs, a growing HDF5 file ...).

    Parameters
    ----------
    register : callable
        Call ``register(spec)`` once per :class:`cdi_plugins.core.executors.FrameSourceSpec`.
    """


@hookspec
def cdi_register_beamlines(register):
    """Register beamlines: a diffractometer, a detector and a reader of the scan's metadata.

    Parameters
    ----------
    register : callable
        Call ``register(spec)`` once per :class:`cdi_plugins.core.beamline.BeamlineSpec`.
    """
