"""Tests for cdi_plugins.core.registry: entry-point loading, error isolation, lookup.

The third-party plugins here are real installed distributions: a package and a
``*.dist-info`` folder (METADATA + entry_points.txt) written to a temporary
directory put on ``sys.path``, found by ``importlib.metadata`` exactly as a
``pip install``-ed plugin would be.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import AlgorithmSpec, CDIError, Param, hookimpl
from cdi_plugins.cli import main
from cdi_plugins.core.registry import Registry, reset_registry

SMALL = {"simulate": {"shape": 32, "seed": 0}}


def recipe(steps, **kw):
    """A tiny simulated recipe; one FFT thread keeps it fast (and identical) on any machine."""
    return {"data": SMALL, "seed": 0, "threads": 1, "steps": steps, **kw}

THIRDPARTY = '''
"""A third-party cdi-plugins plugin: multiplies the incoming object by a factor."""
import numpy as np

from cdi_plugins import AlgorithmSpec, CDIError, Param, State, hookimpl
from cdi_plugins.compute.metrics import chi2


def run(problem, state, params, ctx):
    if state is None:
        raise CDIError("scale_half needs a previous step")
    obj = ctx.backend.to_numpy(state.obj) * np.float32(params["factor"])
    rec = {"step": ctx.step, "algorithm": "scale_half", "iteration": 1,
           "chi2": chi2(obj, problem.intensity, problem.mask), "factor": params["factor"]}
    return State(obj=ctx.backend.asarray(obj.astype(np.complex64)), support=state.support,
                 history=list(state.history) + [rec],
                 provenance=list(state.provenance) + [{"note": "scaled by cdi_thirdparty_demo"}])


@hookimpl
def cdi_register_algorithms(register):
    register(AlgorithmSpec(
        name="scale_half", kind="refiner", summary="Multiply the object by a factor (demo plugin)",
        params=[Param("factor", "float", 0.5, "multiplier", low=0, high=1, low_open=True)],
        run=run, backends=("numpy", "cupy")))
'''


def install_plugin(root, dist, modules: dict, entry_points: dict, version="0.1"):
    """Write modules and a ``dist-info`` with *entry_points* under *root* (already on sys.path)."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[cdi_plugins]\n{lines}")


@pytest.fixture(autouse=True)
def _fresh_registry():
    reset_registry(None)
    yield
    reset_registry(None)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A private site-packages on sys.path; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("cdi_thirdparty") or name.startswith("cdi_broken"):
            del sys.modules[name]


def plugin(reg, name):
    found = [p for p in reg.plugins if p.name == name]
    assert len(found) == 1, [p.name for p in reg.plugins]
    return found[0]


# --------------------------------------------------------------------------- built-ins


def test_builtins_are_registered_through_the_entry_point():
    reg = Registry()
    it = plugin(reg, "iterative")
    assert it.status == "ok" and it.error == ""
    assert it.source == "cdi_plugins.algorithms.iterative"
    assert it.algorithms == ["er", "hio", "raar", "sf", "asr", "dm"]
    assert it.version.startswith("cdi-plugins")
    for name in ("er", "hio", "raar"):
        spec = reg.get(name)
        assert spec.kind == "iterative" and spec.plugin == "iterative"
        assert spec.params.defaults()["iterations"] >= 1
    assert reg.get("hio").params.params["beta"].default == 0.9


def test_registry_without_entry_points_is_empty():
    reg = Registry(entry_points=False)
    assert reg.algorithms == {} and reg.plugins == []
    with pytest.raises(CDIError, match="no plugin loaded"):
        reg.get("hio")


def test_lookup_is_case_insensitive_and_suggests():
    reg = Registry()
    assert reg.get("HIO") is reg.get("hio")
    with pytest.raises(CDIError) as info:
        reg.get("hoi", "recipe.yaml:5: steps[1].algorithm")
    msg = str(info.value)
    assert msg.startswith("recipe.yaml:5: steps[1].algorithm: unknown algorithm 'hoi'")
    assert "did you mean 'hio'" in msg
    assert "registered: " in msg and all(name in msg for name in ("er", "hio", "raar"))


# --------------------------------------------------------------------------- a real third-party plugin


def test_thirdparty_plugin_installed_through_entry_point_runs_from_a_recipe(site, capsys):
    install_plugin(site, "cdi_thirdparty_demo", {"cdi_thirdparty_demo": THIRDPARTY},
                   {"thirdparty": "cdi_thirdparty_demo"})
    reg = Registry()
    info = plugin(reg, "thirdparty")
    assert info.status == "ok", info.error
    assert info.algorithms == ["scale_half"]
    assert info.version == "cdi_thirdparty_demo 0.1"
    assert reg.get("scale_half").kind == "refiner"
    assert plugin(reg, "iterative").status == "ok"   # built-ins unaffected

    reset_registry(reg)
    base = cdi_plugins.run(recipe("20*ER"))
    res = cdi_plugins.run(recipe(["20*ER", {"algorithm": "scale_half", "factor": 0.5}]))
    # the plugin's effect: exactly half of what ER alone gives
    assert res.obj.dtype == np.complex64
    np.testing.assert_array_equal(res.obj, base.obj * np.float32(0.5))
    np.testing.assert_array_equal(res.support, base.support)
    # its history and provenance
    assert len(res.history) == 21
    assert res.history[-1]["algorithm"] == "scale_half" and res.history[-1]["step"] == 2
    assert res.history[-1]["factor"] == 0.5
    assert res.history[:20] == base.history
    assert [s["algorithm"] for s in res.steps] == ["er", "scale_half"]
    assert res.steps[1]["plugin"] == "thirdparty" and res.steps[1]["params"] == {"factor": 0.5}
    assert len(res.timings) == 2

    # it shows in the CLI like a built-in
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "thirdparty (cdi_thirdparty_demo 0.1): ok" in out and "scale_half" in out
    assert main(["algorithms", "scale_half"]) == 0
    out = capsys.readouterr().out
    assert "scale_half (refiner, plugin 'thirdparty')" in out
    assert "factor" in out and "(0, 1]" in out


def test_thirdparty_parameters_are_validated_like_builtins(site):
    install_plugin(site, "cdi_thirdparty_demo", {"cdi_thirdparty_demo": THIRDPARTY},
                   {"thirdparty": "cdi_thirdparty_demo"})
    reset_registry(Registry())
    with pytest.raises(CDIError, match=r"steps\[1\]\.factor: 'factor' = 2\.0 is out of range"):
        cdi_plugins.run(recipe(["5*ER", {"algorithm": "scale_half", "factor": 2.0}]))


# --------------------------------------------------------------------------- broken plugins


BROKEN_IMPORT = '''
raise ImportError("needs a library that is not installed (demo)")
'''

BROKEN_HOOK = '''
from cdi_plugins import hookimpl

@hookimpl
def cdi_register_algorithms(register):
    raise RuntimeError("boom while registering")
'''

DUPLICATE = '''
from cdi_plugins import AlgorithmSpec, hookimpl

@hookimpl
def cdi_register_algorithms(register):
    register(AlgorithmSpec(name="hio", kind="iterative", summary="an impostor", params=[],
                           run=lambda *a: None))
'''

BAD_SIGNATURE = '''
from cdi_plugins import hookimpl

@hookimpl
def cdi_register_algorithms(reg):   # wrong argument name: pluggy rejects it
    pass
'''


EXITS_AT_IMPORT = '''
import sys
sys.exit("this plugin refuses to load")
'''

EXITS_IN_HOOK = '''
import sys
from cdi_plugins import hookimpl

@hookimpl
def cdi_register_commands(register):
    sys.exit(3)
'''


@pytest.fixture
def broken_site(site):
    install_plugin(site, "cdi_broken_pack",
                   {"cdi_broken_import": BROKEN_IMPORT, "cdi_broken_hook": BROKEN_HOOK,
                    "cdi_broken_dup": DUPLICATE, "cdi_broken_sig": BAD_SIGNATURE,
                    "cdi_broken_exit": EXITS_AT_IMPORT, "cdi_broken_exit_hook": EXITS_IN_HOOK},
                   {"broken_import": "cdi_broken_import", "broken_hook": "cdi_broken_hook",
                    "broken_dup": "cdi_broken_dup", "broken_sig": "cdi_broken_sig",
                    "broken_missing": "cdi_broken_no_such_module", "broken_exit": "cdi_broken_exit",
                    "broken_exit_hook": "cdi_broken_exit_hook"})
    return site


def test_broken_plugins_are_reported_and_skipped(broken_site):
    reg = Registry()   # must not raise
    imp = plugin(reg, "broken_import")
    assert imp.status == "error"
    assert "failed to import" in imp.error and "ImportError" in imp.error
    assert "not installed (demo)" in imp.error
    hook = plugin(reg, "broken_hook")
    assert hook.status == "error" and "RuntimeError: boom while registering" in hook.error
    dup = plugin(reg, "broken_dup")
    assert dup.status == "error"
    assert "'hio' already registered by plugin 'iterative'" in dup.error
    assert dup.algorithms == []
    sig = plugin(reg, "broken_sig")
    assert sig.status == "error" and "invalid plugin" in sig.error
    missing = plugin(reg, "broken_missing")
    assert missing.status == "error" and "ModuleNotFoundError" in missing.error
    # sys.exit() is a BaseException: caught and reported like any other failure
    ex = plugin(reg, "broken_exit")
    assert ex.status == "error" and "SystemExit: this plugin refuses to load" in ex.error
    exh = plugin(reg, "broken_exit_hook")
    assert exh.status == "error" and "cdi_register_commands raised SystemExit: 3" in exh.error
    # the built-ins are untouched, and hio is still the real one
    assert plugin(reg, "iterative").status == "ok"
    assert reg.get("hio").plugin == "iterative"
    assert reg.get("hio").summary.startswith("Hybrid input-output")


def test_builtins_still_run_next_to_broken_plugins(broken_site):
    reset_registry(Registry())
    res = cdi_plugins.run(recipe("5*ER+5*HIO+5*RAAR+5*ER"))
    assert [s["algorithm"] for s in res.steps] == ["er", "hio", "raar", "er"]
    assert len(res.history) == 20 and np.isfinite(res.chi2)


def test_cdi_plugins_command_shows_the_errors(broken_site, capsys):
    reset_registry(Registry())
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "iterative (cdi-plugins" in out and "ok" in out
    assert "broken_import" in out and "error: failed to import: ImportError" in out
    assert "error: cdi_register_algorithms raised RuntimeError: boom while registering" in out
    assert "error: algorithm 'hio' already registered by plugin 'iterative'" in out
    assert "error: failed to import: SystemExit: this plugin refuses to load" in out
    # `cdi algorithms` still lists the working ones
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("er ", "hio ", "raar "))


# --------------------------------------------------------------------------- in-process registration


class _InProcess:
    @hookimpl
    def cdi_register_algorithms(self, register):
        register(AlgorithmSpec(name="noop", kind="refiner", summary="returns its input",
                               params=[Param("n", "int", 1, low=0)], run=lambda p, s, params, ctx: s))


def test_register_plugin_in_process_and_twice():
    reg = Registry()
    plug = _InProcess()
    info = reg.register_plugin(plug, name="inproc")
    assert info.status == "ok" and info.algorithms == ["noop"]
    assert reg.get("noop").plugin == "inproc"
    again = reg.register_plugin(plug, name="inproc2")
    assert again.status == "error" and "already registered" in again.error


@pytest.mark.parametrize("spec_kw, message", [
    (dict(name="Bad-Name", kind="refiner"), "must be lower-case"),
    (dict(name="odd", kind="magic"), "kind 'magic' is not one of"),
    (dict(name="odd", kind="refiner", run="not callable"), "run is not callable"),
])
def test_invalid_specs_mark_the_plugin_as_broken(spec_kw, message):
    kw = dict(summary="x", params=[], run=lambda *a: None)
    kw.update(spec_kw)

    class P:
        @hookimpl
        def cdi_register_algorithms(self, register):
            register(AlgorithmSpec(**kw))

    reg = Registry()
    info = reg.register_plugin(P(), name="p")
    assert info.status == "error" and message in info.error
    assert "odd" not in reg.algorithms and info.algorithms == []


def test_register_rejects_non_spec():
    class P:
        @hookimpl
        def cdi_register_algorithms(self, register):
            register({"name": "dict_not_spec"})

    reg = Registry()
    info = reg.register_plugin(P(), name="p")
    assert info.status == "error" and "expects an AlgorithmSpec" in info.error


def test_plugin_returning_a_wrong_state_is_a_clear_error():
    class P:
        @hookimpl
        def cdi_register_algorithms(self, register):
            register(AlgorithmSpec(name="wrong_dtype", kind="refiner", summary="x", params=[],
                                   run=lambda p, s, params, ctx: s.replace(obj=np.asarray(s.obj, np.complex128))))

    reg = Registry()
    reg.register_plugin(P(), name="p")
    reset_registry(reg)
    with pytest.raises(CDIError, match=r"algorithm 'wrong_dtype' \(plugin 'p'\) returned dtype complex128"):
        cdi_plugins.run(recipe(["3*ER", {"algorithm": "wrong_dtype"}]))


# --------------------------------------------------------------------------- plugin commands

COMMANDS = '''
from cdi_plugins.core import CDIError, CommandSpec, hookimpl

def _arguments(parser):
    parser.add_argument("who")
    parser.add_argument("--shout", action="store_true")

def _hello(args):
    if args.who == "nobody":
        raise CDIError("nobody to greet", "hello")
    print(("HELLO " if args.shout else "hello ") + args.who)
    return 0

@hookimpl
def cdi_register_commands(register):
    register(CommandSpec("hello", "greet someone (a third-party command)", _arguments, _hello))
    register(CommandSpec("run", "an impostor of cdi run", _arguments, _hello))
'''


def test_a_thirdparty_plugin_adds_a_command_with_the_hosts_error_handling(site, capsys):
    install_plugin(site, "cdi_thirdparty_cmd", {"cdi_thirdparty_cmd": COMMANDS}, {"greeter": "cdi_thirdparty_cmd"})
    reset_registry(Registry())
    assert main(["hello", "world", "--shout"]) == 0
    assert capsys.readouterr().out == "HELLO world\n"
    assert main(["hello", "nobody"]) == 2                       # CDIError: one line, exit 2
    assert capsys.readouterr().err == "cdi: error: hello: nobody to greet\n"
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "greeter (cdi_thirdparty_cmd 0.1): error" in out and "commands: hello" in out
    assert "error: command 'run' is a built-in cdi command; this one is ignored" in out
    # the built-in run is untouched: it still wants a recipe
    with pytest.raises(SystemExit):
        main(["run"])
    assert "the following arguments are required: recipe" in capsys.readouterr().err


def test_builtin_plugins_bring_their_commands():
    reg = Registry()
    assert plugin(reg, "nn").commands == ["simulate-set", "train", "nn-eval", "nn-bench", "adapt"]
    assert plugin(reg, "cohere").commands == ["import-cohere"]
    assert reg.commands["train"].plugin == "nn"


BUGGY_FIRST_STEP = '''  # the README's example as it was: it assumes a previous step
from cdi_plugins import AlgorithmSpec, Param, State, hookimpl

def run(problem, state, params, ctx):
    xp = ctx.backend.xp                           # numpy or cupy: write the kernel once
    obj = state.obj * xp.float32(params["factor"])
    return state.replace(obj=obj.astype(xp.complex64))

@hookimpl
def cdi_register_algorithms(register):
    register(AlgorithmSpec(name="scale", kind="refiner", summary="multiply the object by a factor",
                           params=[Param("factor", "float", 1.0, "the factor", low=0, low_open=True)],
                           run=run))
'''


def test_a_plugin_that_raises_in_run_is_one_line_naming_step_algorithm_and_plugin(site, tmp_path, capsys):
    # the README's old example plugin used as a first step: state is None, its run raises AttributeError
    install_plugin(site, "cdi_thirdparty_scale", {"cdi_thirdparty_scale": BUGGY_FIRST_STEP},
                   {"scaler": "cdi_thirdparty_scale"})
    reset_registry(Registry())
    rec = tmp_path / "r.yaml"
    rec.write_text("data: {simulate: {shape: 32}}\nsteps:\n  - {algorithm: scale, factor: 2}\n")
    assert main(["run", str(rec), "--out", str(tmp_path / "o.cxi")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert ("r.yaml:3: steps[0]: algorithm 'scale' (plugin 'scaler') failed: AttributeError: "
            "'NoneType' object has no attribute 'obj'") in err
    assert not (tmp_path / "o.cxi").exists()
    assert main(["--debug", "run", str(rec), "--out", str(tmp_path / "o.cxi")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "state.obj * xp.float32" in err and err.endswith("the traceback)\n")


def test_cdi_plugins_lists_executors_and_frame_sources(capsys):
    reset_registry(Registry())
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "executors: local, dask, slurm, pbs  frame sources: folder, hdf5" in out
