"""The cohere seam: cohere-core as a registered step, its folders in and out.

The adapter reaches into cohere-core's internals (``phasing.Rec``: its flow,
``ds_image``, ``support``, ``errs``); these tests are what tells us that a new
cohere-core version no longer fits.  They skip when cohere-core is not installed
(``pip install 'cdi-plugins[cohere]'``), except those that need no cohere.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.cli import main
from cdi_plugins.algorithms.cohere.experiment import config_rec_to_recipe, recipe_to_config_rec
from cdi_plugins.io.cohere import read_cohere_results, read_config_rec, write_cohere_results, write_config_rec
from cdi_plugins.compute.metrics import chi2

try:
    import cohere_core.controller.phasing  # noqa: F401
    HAVE_COHERE = True
except Exception:
    HAVE_COHERE = False

needs_cohere = pytest.mark.skipif(not HAVE_COHERE,
                                  reason="cohere-core is not installed: pip install 'cdi-plugins[cohere]'")

SIM = {"simulate": {"shape": 32, "seed": 1, "counts": 1e8}}


def _recipe(steps, **extra):
    return {"data": SIM, "backend": "numpy", "fft": "scipy", "seed": 0, "steps": steps, **extra}


@pytest.fixture(scope="module")
def er_result():
    # ER without a support update at its end: the object lies in its support
    return cdi_plugins.run(_recipe([{"algorithm": "er", "iterations": 30}, {"algorithm": "hio", "iterations": 60},
                                    {"algorithm": "er", "iterations": 30, "shrink_wrap_period": 0}]))


# ---- the adapter (needs cohere-core) -------------------------------------------------------


@needs_cohere
def test_pinned_version_is_installed():
    import importlib.metadata
    from cdi_plugins.algorithms.cohere.plugin import COHERE_VERSION
    assert importlib.metadata.version("cohere-core") == COHERE_VERSION


@needs_cohere
def test_cohere_step_seeded_by_er_keeps_reducing_the_error(er_result):
    steps = [{"algorithm": "er", "iterations": 30}, {"algorithm": "hio", "iterations": 60},
             {"algorithm": "er", "iterations": 30, "shrink_wrap_period": 0},
             {"algorithm": "cohere", "algorithm_sequence": "20*ER", "shrink_wrap_trigger": None}]
    r = cdi_plugins.run(_recipe(steps))
    ours = [h["chi2"] for h in r.history if h["step"] == 3]
    coh = [h for h in r.history if h["step"] == 4]
    assert len(coh) == 20 and all(h["algorithm"] == "cohere" and h["cohere_algorithm"] == "ER" for h in coh)
    c = [h["chi2"] for h in coh]
    # same chi2 definition: cohere's first error is the chi2 of the object it was handed
    assert c[0] == pytest.approx(chi2(er_result.obj, er_result.intensity, er_result.mask), rel=1e-3)
    assert c[0] <= ours[-1] * 1.0001
    assert all(b <= a * (1 + 1e-6) for a, b in zip(c, c[1:]))  # ER never increases the error
    assert c[-1] < ours[-1]
    # the returned object is in our convention: its chi2 is what the history says
    assert chi2(r.obj, r.intensity, r.mask) <= c[-1] * 1.0001
    assert r.obj.dtype == np.complex64 and r.support.dtype == bool
    assert r.error() < 0.3


@needs_cohere
def test_cohere_random_start_is_seeded_and_reproducible():
    rec = _recipe([{"algorithm": "cohere", "algorithm_sequence": "10*ER+20*HIO+10*ER"}])
    a, b = cdi_plugins.run(rec), cdi_plugins.run(rec)
    assert np.array_equal(a.obj, b.obj)
    c = cdi_plugins.run({**rec, "seed": 5})
    assert not np.array_equal(a.obj, c.obj)
    assert len(a.history) == 40 and a.chi2 < 0.05
    assert any("support_fraction" in h for h in a.history)  # shrink-wrap ran (every iteration by default)


@needs_cohere
def test_cohere_step_reports_progress_and_prints_nothing(capsys):
    events = []
    cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*ER"}]),
                    progress=lambda **e: events.append(e))
    assert capsys.readouterr().out == ""
    assert events[-1]["iteration"] == 5 and events[-1]["algorithm"] == "cohere"


@needs_cohere
def test_cohere_parameters_are_validated():
    with pytest.raises(CDIError, match="SFX"):
        cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*SFX"}]))
    with pytest.raises(CDIError, match="pc_interval"):
        cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*ERpc"}]))
    with pytest.raises(CDIError, match="list of numbers"):
        cdi_plugins.run(_recipe([{"algorithm": "cohere", "shrink_wrap_trigger": "1, 1"}]))


@needs_cohere
def test_cohere_continues_from_a_results_folder(tmp_path, er_result):
    out = write_cohere_results(er_result, tmp_path / "results_phasing")
    r = cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*ER", "continue_dir": out,
                                  "shrink_wrap_trigger": None}]))
    first = r.history[0]["chi2"]
    assert first == pytest.approx(chi2(er_result.obj, er_result.intensity, er_result.mask), rel=1e-2)


# ---- without cohere-core ------------------------------------------------------------------


def test_cohere_unavailable_is_listed_and_refused(monkeypatch, capsys):
    import cdi_plugins.algorithms.cohere.plugin as mod
    from cdi_plugins.core.registry import Registry, reset_registry
    monkeypatch.setattr(mod, "cohere_status", lambda: "cohere-core is not installed; " + mod.INSTALL_HINT)
    reg = Registry(entry_points=False)
    reg.register_plugin(mod, name="cohere")
    reset_registry(reg)
    try:
        assert main(["algorithms"]) == 0
        out = capsys.readouterr().out
        assert "cohere" in out and "unavailable" in out and "cdi-plugins[cohere]" in out
        with pytest.raises(CDIError, match=r"not available.*cdi-plugins\[cohere\]"):
            cdi_plugins.run(_recipe([{"algorithm": "cohere"}]))
    finally:
        reset_registry(None)


def test_results_folder_round_trip(tmp_path, er_result):
    out = write_cohere_results(er_result, tmp_path / "rp")
    names = sorted(os.listdir(out))
    assert {"image.npy", "support.npy", "errors.npy", "errors.txt", "metrics.txt"} <= set(names)
    image = np.load(os.path.join(out, "image.npy"))
    assert np.abs(image).max() == pytest.approx(1.0)  # cohere's max-normalisation
    back = read_cohere_results(out)
    scale = np.abs(er_result.obj).max()
    assert np.allclose(back["obj"] * scale, er_result.obj, atol=1e-5 * scale)  # conjugated back
    assert np.array_equal(back["support"], er_result.support)
    assert back["errors"][-1] == pytest.approx(er_result.chi2, rel=1e-6)
    assert back["metrics"]["chi"] == pytest.approx(er_result.chi2, rel=1e-6)
    with pytest.raises(CDIError, match="exists"):
        write_cohere_results(er_result, out)
    write_cohere_results(er_result, out, overwrite=True)
    (tmp_path / "other").mkdir()
    with pytest.raises(CDIError, match="not a cohere results folder"):
        write_cohere_results(er_result, tmp_path / "other", overwrite=True)


CONF = {"algorithm_sequence": "3*(20*ER+180*HIO)+20*ER", "hio_beta": 0.8, "shrink_wrap_trigger": [1, 5],
        "shrink_wrap_type": "GAUSS", "shrink_wrap_threshold": 0.15, "shrink_wrap_gauss_sigma": 1.5,
        "initial_support_area": [0.4, 0.4, 0.4], "reconstructions": 3, "twin_trigger": [2], "twin_halves": [0, 0],
        "ga_generations": 4}


def test_config_rec_recipe_round_trip_ours(tmp_path):
    write_config_rec(CONF, tmp_path / "config_rec")
    conf = read_config_rec(tmp_path / "config_rec")
    assert conf == CONF
    recipe, unsupported = config_rec_to_recipe(conf)
    assert recipe["steps"] == "3*(20*ER+180*HIO)+20*ER" and recipe["runs"] == 3
    assert recipe["params"]["hio"]["beta"] == 0.8 and recipe["params"]["er"]["shrink_wrap_period"] == 5
    keys = {k for k, _ in unsupported}
    assert {"twin_trigger", "twin_halves", "ga_generations"} <= keys  # listed, never silently dropped
    back = recipe_to_config_rec(recipe)
    assert "initial_support_area" in keys  # per-algorithm params would reset every step's support
    for k in ("algorithm_sequence", "hio_beta", "shrink_wrap_trigger", "shrink_wrap_threshold",
              "shrink_wrap_gauss_sigma", "reconstructions"):
        assert back[k] == conf[k], k
    plan = cdi_plugins.recipe.load_recipe({**recipe, "data": SIM}).dataset()  # it validates
    assert plan.iterations == 620 and plan.runs == 3


@needs_cohere
def test_config_rec_recipe_round_trip_cohere():
    recipe, unsupported = config_rec_to_recipe(CONF, engine="cohere")
    assert [k for k, _ in unsupported] == ["reconstructions", "ga_generations"]
    step = recipe["steps"][0]
    assert step["twin_trigger"] == [2] and step["algorithm_sequence"] == CONF["algorithm_sequence"]
    back = recipe_to_config_rec(recipe)
    assert back == {k: v for k, v in CONF.items() if k != "ga_generations"}
    cdi_plugins.recipe.load_recipe({**recipe, "data": SIM})


def _experiment(tmp_path, conf):
    exp = tmp_path / "scan_54"
    (exp / "conf").mkdir(parents=True)
    (exp / "phasing_data").mkdir()
    write_config_rec(conf, exp / "conf" / "config_rec")
    from cdi_plugins.physics.simulate import simulate_crystal
    sim = simulate_crystal(32, seed=1)
    import tifffile
    tifffile.imwrite(exp / "phasing_data" / "data.tif", np.sqrt(sim["intensity"]).T.astype(np.float32))
    return exp, sim


def test_import_cohere_cli(tmp_path, capsys, monkeypatch):
    conf = {"algorithm_sequence": "20*ER+40*HIO+20*ER", "shrink_wrap_trigger": [1, 10], "twin_trigger": [2]}
    exp, sim = _experiment(tmp_path, conf)
    monkeypatch.chdir(tmp_path)
    assert main(["import-cohere", str(exp), "--out", "scan.yaml"]) == 0
    out = capsys.readouterr().out
    assert "twin_trigger" in out and "scan_data.npy" in out
    text = (tmp_path / "scan.yaml").read_text()
    assert "#   twin_trigger:" in text
    doc = yaml.safe_load(text)
    assert doc["steps"] == "20*ER+40*HIO+20*ER" and doc["output"]["cohere_dir"] == "scan_results_phasing"
    assert np.allclose(np.load(tmp_path / "scan_data.npy"), sim["intensity"], rtol=1e-5, atol=1e-3)  # un-transposed
    assert main(["run", "scan.yaml", "-q"]) == 0
    back = read_cohere_results(tmp_path / "scan_results_phasing")
    assert back["obj"].shape == (32, 32, 32) and len(back["errors"]) == 80
    assert main(["import-cohere", str(exp), "--out", "scan.yaml"]) == 2  # exists
    assert main(["import-cohere", str(tmp_path), "--out", "x.yaml"]) == 2  # not an experiment


@needs_cohere
@pytest.mark.parametrize("extra", [
    {"processing": "torch"},
    {"algorithm_sequence": "10*ER+20*HIOpc+10*ERpc", "pc_interval": 5, "pc_LUCY_kernel": [8, 8, 8]},
    {"twin_trigger": [2], "phc_trigger": [1, 5], "average_trigger": [-10, 1]},
    {"lowpass_filter_trigger": [0, 1, 20], "lowpass_filter_range": [1.0]},
    {"algorithm_sequence": "10*SF+10*RAAR+20*ER"},
], ids=["torch", "partial-coherence", "twin-phc-average", "lowpass", "sf-raar"])
def test_cohere_features_run_through_the_adapter(extra):
    step = {"algorithm": "cohere", "algorithm_sequence": "10*ER+20*HIO+10*ER", **extra}
    r = cdi_plugins.run(_recipe([step]))
    assert len(r.history) == 40 and np.isfinite(r.chi2) and r.chi2 < 0.05
    assert r.obj.dtype == np.complex64 and r.support.any()
    if "pc_interval" in extra:
        assert r.history[-1]["cohere_algorithm"] == "ERpc"
    # chi2 is ours: the returned object's chi2 is no worse than the last record
    assert chi2(r.obj, r.intensity, r.mask) <= r.chi2 * 1.5


@needs_cohere
def test_cohere_itself_continues_from_our_results_folder(tmp_path, er_result):
    # what cohere-ui does with continue_dir: its own create_rec / iterate on our folder
    import contextlib
    import io
    import cohere_core.controller.phasing as ph
    folder = write_cohere_results(er_result, tmp_path / "results_phasing")
    data = tmp_path / "data.npy"
    np.save(data, np.sqrt(er_result.intensity))
    with contextlib.redirect_stdout(io.StringIO()):
        rec = ph.create_rec({"algorithm_sequence": "5*ER", "continue_dir": folder}, str(data), "np", -1, debug=True)
        assert rec is not None and rec.iterate() == 0
    # the first error reflects cohere's max-normalised image; one ER fixes the scale
    assert rec.errs[1] < 2 * er_result.chi2 and rec.errs[-1] <= rec.errs[1]


def test_import_cohere_refusing_an_existing_recipe_writes_nothing(tmp_path, capsys, monkeypatch):
    exp, _ = _experiment(tmp_path, {"algorithm_sequence": "20*ER"})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.yaml").write_text("# mine\n")
    before = sorted(p.name for p in tmp_path.iterdir()), sorted(p.name for p in exp.rglob("*"))
    assert main(["import-cohere", str(exp), "--out", "scan.yaml"]) == 2
    assert "scan.yaml: exists" in capsys.readouterr().err
    assert (sorted(p.name for p in tmp_path.iterdir()), sorted(p.name for p in exp.rglob("*"))) == before
    assert (tmp_path / "scan.yaml").read_text() == "# mine\n"
    # also when --out points into the user's cohere experiment folder
    (exp / "scan.yaml").write_text("# mine\n")
    assert main(["import-cohere", str(exp), "--out", str(exp / "scan.yaml")]) == 2
    assert not (exp / "scan_data.npy").exists()
