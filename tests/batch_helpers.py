"""Shared pieces of the batch tests: simulated scans on disk, a recipe over them, executors as plugins."""

import concurrent.futures as cf
import types

import numpy as np

from cdi_plugins.cli import main
from cdi_plugins.core.executors import ExecutorSpec
from cdi_plugins.core.hookspecs import hookimpl
from cdi_plugins.core.registry import Registry, reset_registry
from cdi_plugins.physics.simulate import simulate_crystal

RECIPE = """\
data: {path: "scans/scan_{scan:04d}.npy"}
fft: scipy
threads: 1
steps: "20*ER"
output: {path: "results/scan_{scan}.cxi"}
"""


def write_scans(folder, numbers, corrupt=()):
    """32^3 simulated crystals as scans/scan_NNNN.npy (a text file for the *corrupt* ones) and the recipe."""
    (folder / "scans").mkdir(exist_ok=True)
    for n in numbers:
        path = folder / "scans" / f"scan_{n:04d}.npy"
        if n in corrupt:
            path.write_text("this is not a detector frame\n")
        else:
            np.save(path, simulate_crystal(32, seed=n)["intensity"])
    (folder / "r.yaml").write_text(RECIPE)


def cdi(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


class Borrowed(cf.Executor):
    """An executor that is lent, not owned: shutdown leaves it running (a test module shares one cluster)."""

    def __init__(self, inner):
        self.inner = inner
        self.client = getattr(inner, "client", None)
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return self.inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait=True, *, cancel_futures=False):
        pass


def use_executor(name, make):
    """A fresh registry with an in-process plugin registering executor *name*; returns the registry."""
    @hookimpl
    def cdi_register_executors(register):
        register(ExecutorSpec(name, "a test executor", make))
    reg = Registry()
    reg.register_plugin(types.SimpleNamespace(cdi_register_executors=cdi_register_executors), name=f"test-{name}")
    reset_registry(reg)
    return reg
