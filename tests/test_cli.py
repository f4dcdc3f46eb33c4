"""Tests for the ``cdi`` command line (run in-process through cdi_plugins.cli.main)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins.cli import main
from cdi_plugins.physics.simulate import simulate_crystal

REPO = pathlib.Path(__file__).resolve().parents[1]

RECIPE = """\
name: tiny
data:
  simulate: {shape: 32, seed: 0}
seed: 0
threads: 1
steps: "5*ER+5*HIO+5*ER"
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A scratch folder as the working directory, holding a tiny recipe and two data files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RECIPE)
    np.save(tmp_path / "a.npy", simulate_crystal(32, seed=1)["intensity"])
    np.save(tmp_path / "b.npy", simulate_crystal(32, seed=2)["intensity"])
    return tmp_path


def cdi(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, out, err, *words):
    assert rc == 2
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("cdi: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert str(w) in err, err


# --------------------------------------------------------------------------- cdi run


def test_run_writes_a_result_and_prints_a_summary(work, capsys):
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "res.cxi")
    assert rc == 0, err
    res = cdi_plugins.load(work / "res.cxi")
    assert res.obj.shape == (32, 32, 32) and res.obj.dtype == np.complex64
    assert len(res.history) == 15 and [s["algorithm"] for s in res.steps] == ["er", "hio", "er"]
    assert "final chi2" in out and "wrote res.cxi" in out
    assert f"final chi2 {res.chi2:.3e}" in out
    assert "error vs truth" in out            # simulated data: the summary compares to the truth
    assert out.count("\n") >= 5               # one line per step plus header and total


def test_summary_of_averaged_runs_gives_the_chi2_of_the_object_written(work, capsys):
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "avg.cxi", "--set", "runs=3", "--set", "average=2")
    assert rc == 0, err
    res = cdi_plugins.load(work / "avg.cxi")
    from cdi_plugins.compute.metrics import chi2
    written = chi2(res.obj, res.intensity, res.mask)
    assert res.chi2 == pytest.approx(written, rel=1e-4)              # not the best run's last record
    assert res.chi2 != pytest.approx(res.history[-1]["chi2"], rel=1e-3)
    assert "best of 3 runs" in out and "total: 3 runs of 15 iterations" in out
    assert f"chi2 of the averaged object {res.chi2:.3e}" in out


def test_run_uses_the_recipe_output_path(work, capsys):
    (work / "out").mkdir()
    (work / "r2.yaml").write_text(RECIPE + "output: {path: 'out/{dataset}.cxi'}\n")
    rc, out, err = cdi(capsys, "run", "r2.yaml", "-q")
    assert rc == 0, err
    assert cdi_plugins.load(work / "out" / "tiny.cxi").dataset == "tiny"


def test_quiet_prints_nothing(work, capsys):
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "res.cxi", "--quiet")
    assert rc == 0 and out == "" and err == ""
    assert (work / "res.cxi").exists()


def test_set_overrides_the_recipe(work, capsys):
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "res.cxi", "-q",
                       "--set", "params.hio.beta=0.5", "--set", "steps=4*HIO")
    assert rc == 0, err
    res = cdi_plugins.load(work / "res.cxi")
    assert [(s["algorithm"], s["params"]["beta"]) for s in res.steps] == [("hio", 0.5)]
    assert len(res.history) == 4


def test_several_data_files_one_output_each(work, capsys):
    rc, out, err = cdi(capsys, "run", "r.yaml", "--data", "a.npy", "b.npy", "--out", "res.cxi")
    assert rc == 0, err
    a, b = cdi_plugins.load(work / "res_a.cxi"), cdi_plugins.load(work / "res_b.cxi")
    np.testing.assert_array_equal(a.intensity, np.load(work / "a.npy"))
    np.testing.assert_array_equal(b.intensity, np.load(work / "b.npy"))
    assert a.metadata["source"] == str(work / "a.npy")
    assert out.count("  total: ") == 2 and out.count("wrote res_") == 2
    rc, out, err = cdi(capsys, "run", "r.yaml", "--data", "a.npy", "b.npy", "--out", "{dataset}_rec.cxi", "-q")
    assert rc == 0 and (work / "a_rec.cxi").exists() and (work / "b_rec.cxi").exists()


def test_existing_output_is_kept_without_overwrite(work, capsys):
    target = work / "res.cxi"
    target.write_bytes(b"precious")
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "res.cxi")
    assert_one_line_error(rc, out, err, "res.cxi", "exists", "--overwrite")
    assert target.read_bytes() == b"precious"
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "res.cxi", "--overwrite", "-q")
    assert rc == 0 and cdi_plugins.load(target).iterations == 15


def test_existing_output_is_checked_before_computing(work, capsys):
    (work / "res_b.cxi").write_bytes(b"precious")
    rc, out, err = cdi(capsys, "run", "r.yaml", "--data", "a.npy", "b.npy", "--out", "res.cxi")
    assert_one_line_error(rc, out, err, "res_b.cxi", "exists")
    assert not (work / "res_a.cxi").exists()      # nothing was computed or written


def test_output_onto_the_recipe_itself_is_refused(work, capsys):
    before = (work / "r.yaml").read_bytes()
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "r.yaml", "--overwrite")
    assert_one_line_error(rc, out, err, "r.yaml", "refusing to overwrite the input file")
    assert (work / "r.yaml").read_bytes() == before


def test_output_onto_the_weights_a_step_loads_is_refused_before_computing(work, capsys):
    from cdi_plugins.algorithms.nn.network import builtin_weights
    import shutil
    shutil.copy(builtin_weights()["au32_w025_ft"], work / "w.pt")
    before = (work / "w.pt").read_bytes()
    (work / "nn.yaml").write_text("data: {simulate: {shape: 32}}\nthreads: 1\n"
                                  "steps: [{algorithm: nn, weights: w.pt}, {algorithm: er, iterations: 5}]\n")
    events = []
    import cdi_plugins.pipeline as pipeline
    real = pipeline.build_problem
    pipeline_build = lambda *a, **k: events.append("computing") or real(*a, **k)   # noqa: E731
    import unittest.mock
    with unittest.mock.patch.object(pipeline, "build_problem", pipeline_build):
        rc, out, err = cdi(capsys, "run", "nn.yaml", "--out", "w.pt", "--overwrite")
    assert_one_line_error(rc, out, err, "w.pt", "refusing to overwrite the input file")
    assert events == [] and (work / "w.pt").read_bytes() == before


@pytest.mark.parametrize("how", ["--data", "recipe"])
def test_output_onto_the_input_is_refused(work, capsys, how):
    before = (work / "a.npy").read_bytes()
    if how == "--data":
        args = ["run", "r.yaml", "--data", "a.npy", "--out", "a.npy", "--overwrite"]
    else:
        (work / "r3.yaml").write_text("data: {path: a.npy}\nthreads: 1\nsteps: 5*ER\n")
        args = ["run", "r3.yaml", "--out", str(work / "a.npy"), "--overwrite"]
    rc, out, err = cdi(capsys, *args)
    assert_one_line_error(rc, out, err, "a.npy", "refusing to overwrite the input file")
    assert (work / "a.npy").read_bytes() == before


# --------------------------------------------------------------------------- every bad input: one line, exit 2


def _bad_inputs(d: pathlib.Path):
    """(argv, words expected in the message) for every kind of bad input; files written under *d*."""
    good = simulate_crystal(16, seed=0)["intensity"]
    np.save(d / "good16.npy", good)
    np.save(d / "flat.npy", good[0])
    np.save(d / "nan.npy", np.where(good > good.max() / 2, np.nan, good))
    np.save(d / "neg.npy", good - 1.0)
    np.save(d / "zero.npy", np.zeros_like(good))
    np.save(d / "mask_shape.npy", np.zeros((4, 4, 4), bool))
    np.save(d / "mask_all.npy", np.ones(good.shape, bool))
    (d / "data.xyz").write_text("1 2 3")
    (d / "file").write_text("not a folder")

    def recipe(name, text):
        (d / name).write_text(text)
        return name

    head = "data:\n  simulate: {shape: 32}\nthreads: 1\n"           # lines 1-3
    out = ["--out", "o.cxi"]
    return {
        "missing-data": (["run", "r.yaml", "--data", "nope.npy", *out], ["nope.npy", "not found"]),
        "missing-data-in-recipe": (["run", recipe("md.yaml", "data:\n  path: nope.npy\nsteps: 5*ER\n"), *out],
                                   ["md.yaml:2: data.path", "nope.npy", "not found"]),
        "unknown-format": (["run", "r.yaml", "--data", "data.xyz", *out], ["data.xyz", "unsupported file type"]),
        "2-D": (["run", "r.yaml", "--data", "flat.npy", *out], ["flat.npy", "3-D", "2-D"]),
        "nan": (["run", "r.yaml", "--data", "nan.npy", *out], ["nan.npy", "NaN"]),
        "negative": (["run", "r.yaml", "--data", "neg.npy", *out], ["neg.npy", "negative"]),
        "all-zero": (["run", "r.yaml", "--data", "zero.npy", *out], ["zero.npy", "zero at every measured pixel"]),
        "mask-shape": (["run", recipe("ms.yaml", "data: {path: good16.npy, mask: mask_shape.npy}\nsteps: 5*ER\n"),
                        *out], ["mask_shape.npy", "mask shape (4, 4, 4)"]),
        "mask-all": (["run", recipe("ma.yaml", "data: {path: good16.npy, mask: mask_all.npy}\nsteps: 5*ER\n"),
                      *out], ["mask_all.npy", "covers every pixel"]),
        "missing-mask": (["run", recipe("mm.yaml", "data: {path: good16.npy, mask: nomask.npy}\nsteps: 5*ER\n"),
                          *out], ["mm.yaml:1: data.mask", "nomask.npy"]),
        "missing-recipe": (["run", "nope.yaml", *out], ["nope.yaml", "recipe file not found"]),
        "yaml-syntax": (["run", recipe("syn.yaml", head + "steps: [5*ER\n"), *out],
                        ["syn.yaml:", "YAML syntax error"]),
        "unknown-key": (["run", recipe("key.yaml", head + "stpes: 5*ER\n"), *out],
                        ["key.yaml:4: stpes", "did you mean 'steps'"]),
        "unknown-algorithm": (["run", recipe("alg.yaml", head + "steps: 5*ER+5*HOI\n"), *out],
                              ["alg.yaml:4: steps (HOI)", "did you mean 'hio'"]),
        "unknown-parameter": (["run", recipe("par.yaml", head + "steps:\n  - {algorithm: hio, bta: 0.5}\n"), *out],
                              ["par.yaml:5: steps[0].bta", "unknown parameter 'bta'", "did you mean 'beta'"]),
        "wrong-type": (["run", recipe("typ.yaml", head + "steps:\n  - {algorithm: er, iterations: ten}\n"), *out],
                       ["typ.yaml:5: steps[0].iterations", "must be an integer"]),
        "beta-out-of-range": (["run", recipe("beta.yaml", head + "params:\n  hio:\n    beta: 1.5\nsteps: 5*HIO\n"),
                               *out], ["beta.yaml:6: params.hio.beta", "(0, 1]"]),
        "negative-iterations": (["run", recipe("it.yaml", head + "steps:\n  - {algorithm: er, iterations: -5}\n"),
                                 *out], ["it.yaml:5: steps[0].iterations", "out of range"]),
        "set-out-of-range": (["run", "r.yaml", "--set", "params.hio.beta=0", *out],
                             ["--set params.hio.beta", "out of range (0, 1]"]),
        "set-syntax": (["run", "r.yaml", "--set", "beta", *out], ["--set expects KEY=VALUE"]),
        "output-dir-missing": (["run", "r.yaml", "--out", "no/such/dir/o.cxi"], ["no/such/dir/o.cxi", "does not exist"]),
        "output-under-a-file": (["run", "r.yaml", "--out", "file/o.cxi"], ["file/o.cxi", "does not exist"]),
        "output-is-a-directory": (["run", "r.yaml", "--out", "."], ["is a directory"]),
        "validate-bad": (["validate", recipe("v.yaml", head + "steps: 5*ER\nseed: -3\n")],
                         ["v.yaml:5: seed", "seed must be an integer >= 0"]),
        "unknown-algorithm-info": (["algorithms", "hoi"], ["unknown algorithm 'hoi'", "did you mean 'hio'"]),
        "unknown-dataset": (["run", "r.yaml", "--dataset", "tinny", *out], ["--dataset", "did you mean 'tiny'"]),
    }


CASES = [
    "missing-data", "missing-data-in-recipe", "unknown-format", "2-D", "nan", "negative", "all-zero",
    "mask-shape", "mask-all", "missing-mask", "missing-recipe", "yaml-syntax", "unknown-key",
    "unknown-algorithm", "unknown-parameter", "wrong-type", "beta-out-of-range", "negative-iterations",
    "set-out-of-range", "set-syntax", "output-dir-missing", "output-under-a-file", "output-is-a-directory",
    "validate-bad", "unknown-algorithm-info", "unknown-dataset"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(work, capsys, case):
    argv, words = _bad_inputs(work)[case]
    inputs = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    rc, out, err = cdi(capsys, *argv)
    assert_one_line_error(rc, out, err, *words)
    # nothing lost, nothing half-written
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == inputs


def test_the_case_list_is_complete(tmp_path):
    assert sorted(_bad_inputs(tmp_path)) == sorted(CASES)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc as an unwritable folder")
def test_unwritable_output_folder(work, capsys):
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "/proc/cdi_result.cxi")
    assert_one_line_error(rc, out, err, "/proc/cdi_result.cxi", "cannot write")


def test_console_script_exit_status_and_no_traceback(work):
    proc = subprocess.run([sys.executable, "-m", "cdi_plugins.cli", "run", "r.yaml", "--data", "nope.npy"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("cdi: error: ")
    assert "nope.npy" in proc.stderr and "Traceback" not in proc.stderr
    script = pathlib.Path(sys.executable).with_name("cdi")
    if script.exists():
        proc = subprocess.run([str(script), "validate", "missing.yaml"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr == "cdi: error: missing.yaml: recipe file not found\n"


# --------------------------------------------------------------------------- the other commands


def test_algorithms_name_prints_parameters_with_defaults_and_bounds(capsys):
    rc, out, err = cdi(capsys, "algorithms", "hio")
    assert rc == 0
    assert out.startswith("hio (iterative, plugin 'iterative'): Hybrid input-output")
    beta = [line for line in out.splitlines() if line.startswith("beta ")]
    assert len(beta) == 1
    assert beta[0].split()[:4] == ["beta", "float", "0.9", "(0,"] and "(0, 1]" in beta[0]
    iters = [line for line in out.splitlines() if line.startswith("iterations ")][0]
    assert "[1, inf)" in iters


def test_algorithms_lists_every_builtin(capsys):
    rc, out, err = cdi(capsys, "algorithms")
    assert rc == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"er", "hio", "raar"} <= set(names)


def test_plugins_lists_the_builtins(capsys):
    rc, out, err = cdi(capsys, "plugins")
    assert rc == 0
    line = [ln for ln in out.splitlines() if ln.startswith("iterative ")][0]
    assert ": ok" in line and "er, hio, raar" in line


def test_validate_the_demo_recipe(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    rc, out, err = cdi(capsys, "validate", "configs/demo.yaml")
    assert rc == 0, err
    assert out.startswith("ok: configs/demo.yaml dataset 'demo'")
    assert "7 steps, 620 iterations" in out


def test_validate_verbose_and_data(work, capsys):
    rc, out, err = cdi(capsys, "validate", "r.yaml", "-v", "--data", "a.npy", "b.npy")
    assert rc == 0, err
    assert out.count("ok: r.yaml") == 2 and str(work / "b.npy") in out
    assert "5*er + 5*hio + 5*er" in out
    assert not list(work.glob("*.cxi"))


def test_simulate_then_run(work, capsys):
    rc, out, err = cdi(capsys, "simulate", "sim.npy", "--shape", "32", "--seed", "4")
    assert rc == 0 and "wrote sim.npy" in out
    np.testing.assert_array_equal(np.load(work / "sim.npy"), simulate_crystal(32, seed=4)["intensity"])
    assert (work / "sim_truth.npy").exists()
    rc, out, err = cdi(capsys, "simulate", "sim.npy")
    assert_one_line_error(rc, out, err, "sim.npy", "exists")
    rc, out, err = cdi(capsys, "run", "r.yaml", "--data", "sim.npy", "--out", "sim.cxi", "-q")
    assert rc == 0 and os.path.exists(work / "sim.cxi")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_global_verbose_flag_reaches_every_command(work, capsys):
    from cdi_plugins.cli import build_parser
    assert build_parser().parse_args(["-v", "validate", "r.yaml"]).verbose is True
    assert build_parser().parse_args(["validate", "r.yaml"]).verbose is False
    rc, out, err = cdi(capsys, "-v", "validate", "r.yaml")
    assert rc == 0 and "5*er + 5*hio + 5*er" in out


def test_validate_checks_the_data_header_regions_and_outputs_without_computing(work, capsys):
    (work / "g.yaml").write_text("data: {path: a.npy, prepare: {gaps: [':, 40:44, :']}}\nsteps: 5*ER\n")
    rc, out, err = cdi(capsys, "validate", "g.yaml")
    assert_one_line_error(rc, out, err, "g.yaml:1: data.prepare.gaps", "index 40 is outside axis 1, which has 32")
    (work / "o.yaml").write_text("data: {path: a.npy}\nsteps: 5*ER\noutput: {path: a.npy, overwrite: true}\n")
    rc, out, err = cdi(capsys, "validate", "o.yaml")
    assert_one_line_error(rc, out, err, "a.npy: the run reads this file; an output must not replace it")
    rc, out, err = cdi(capsys, "validate", "r.yaml", "--data", "b.npy")
    assert rc == 0 and "data: 32x32x32 float32" in out
    assert sorted(p.name for p in work.iterdir()) == ["a.npy", "b.npy", "g.yaml", "o.yaml", "r.yaml"]  # wrote nothing
