"""cohere experiments into recipes (algorithms/cohere/experiment.py) and the `cdi import-cohere` command
(algorithms/cohere/commands.py)."""

from __future__ import annotations


import numpy as np
import yaml

import cdi_plugins

from cdi_plugins.cli import main
from tests.cohere_helpers import CONF, SIM, _experiment, needs_cohere
from cdi_plugins.algorithms.cohere.experiment import config_rec_to_recipe, recipe_to_config_rec
from cdi_plugins.io.cohere import read_cohere_results, read_config_rec, write_config_rec
from cdi_plugins.recipe import load_recipe


def test_config_rec_recipe_round_trip_ours(tmp_path):
    write_config_rec(CONF, tmp_path / "config_rec")
    conf = read_config_rec(tmp_path / "config_rec")
    assert conf == CONF
    recipe, unsupported = config_rec_to_recipe(conf)
    # twin_trigger [2] counts over the whole sequence: the steps are spelt out, the first carrying it
    steps = recipe["steps"]
    assert [(s["algorithm"], s["iterations"]) for s in steps] == [("er", 20), ("hio", 180)] * 3 + [("er", 20)]
    assert steps[0]["twin_trigger"] == 3 and steps[0]["twin_halves"] == [0, 0]   # after iteration 2 (0-based)
    assert all("twin_trigger" not in s for s in steps[1:]) and recipe["runs"] == 3
    assert recipe["params"]["hio"]["beta"] == 0.8 and recipe["params"]["er"]["shrink_wrap_period"] == 5
    keys = {k for k, _ in unsupported}
    assert {"twin_trigger", "ga_generations"} <= keys  # listed (ours also centres), never silently dropped
    assert "twin_halves" not in keys
    back = recipe_to_config_rec(recipe)
    assert "initial_support_area" in keys  # per-algorithm params would reset every step's support
    assert back["algorithm_sequence"] == "+".join(["20*ER+180*HIO"] * 3 + ["20*ER"])
    for k in ("hio_beta", "shrink_wrap_trigger", "shrink_wrap_threshold", "shrink_wrap_gauss_sigma",
              "reconstructions", "twin_trigger", "twin_halves"):
        assert back[k] == conf[k], k
    plan = load_recipe({**recipe, "data": SIM}).dataset()  # it validates
    assert plan.iterations == 620 and plan.runs == 3


@needs_cohere
def test_config_rec_recipe_round_trip_cohere():
    recipe, unsupported = config_rec_to_recipe(CONF, engine="cohere")
    assert [k for k, _ in unsupported] == ["reconstructions", "ga_generations"]
    step = recipe["steps"][0]
    assert step["twin_trigger"] == [2] and step["algorithm_sequence"] == CONF["algorithm_sequence"]
    back = recipe_to_config_rec(recipe)
    assert back == {k: v for k, v in CONF.items() if k != "ga_generations"}
    load_recipe({**recipe, "data": SIM})


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
    assert doc["steps"] == [{"algorithm": "er", "iterations": 20, "twin_trigger": 3, "twin_halves": [0, 0]},
                            {"algorithm": "hio", "iterations": 40}, {"algorithm": "er", "iterations": 20}]
    assert doc["output"]["cohere_dir"] == "scan_results_phasing"
    assert np.allclose(np.load(tmp_path / "scan_data.npy"), sim["intensity"], rtol=1e-5, atol=1e-3)  # un-transposed
    assert main(["run", "scan.yaml", "-q"]) == 0
    back = read_cohere_results(tmp_path / "scan_results_phasing")
    assert back["obj"].shape == (32, 32, 32) and len(back["errors"]) == 80
    assert main(["import-cohere", str(exp), "--out", "scan.yaml"]) == 2  # exists
    assert main(["import-cohere", str(tmp_path), "--out", "x.yaml"]) == 2  # not an experiment


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


def test_solvent_flipping_in_a_config_rec_becomes_our_sf_step():
    no_twin = {k: v for k, v in CONF.items() if not k.startswith("twin")}
    recipe, _ = config_rec_to_recipe({**no_twin, "algorithm_sequence": "10*SF+20*HIO+10*ER"})
    assert recipe["steps"] == "10*SF+20*HIO+10*ER"
    assert recipe["params"]["sf"]["shrink_wrap_period"] == recipe["params"]["er"]["shrink_wrap_period"]
    plan = load_recipe({**recipe, "data": SIM}).dataset()
    assert [s.name for s in plan.steps] == ["sf", "hio", "er"]


def test_cohere_triggers_become_options_of_the_steps_they_fall_in():
    """Partial coherence (ERpc/HIOpc + pc_interval), the phase constraint and twin removal, whose cohere
    triggers count over the whole sequence, land on the steps and iterations they cover; the recipe runs."""
    conf = {"algorithm_sequence": "20*ER+40*HIOpc+20*ERpc", "pc_interval": 10, "pc_LUCY_iterations": 15,
            "pc_LUCY_kernel": [8, 8, 8], "phc_trigger": [0, 1, 50], "phc_phase_min": -1.0, "phc_phase_max": 1.2,
            "twin_trigger": [19], "twin_halves": [1, 0], "shrink_wrap_trigger": [1, 5]}
    recipe, unsupported = config_rec_to_recipe(conf)
    er1, hio, er2 = recipe["steps"]
    assert (er1["algorithm"], hio["algorithm"], er2["algorithm"]) == ("er", "hio", "er")
    assert "pc_interval" not in er1
    for st in (hio, er2):
        assert (st["pc_interval"], st["pc_lucy_iterations"], st["pc_kernel_size"]) == (10, 15, 9)
    assert (er1["phc_iterations"], hio["phc_iterations"], er1["phc_min"], er1["phc_max"]) == (20, 30, -1.0, 1.2)
    assert "phc_iterations" not in er2
    # iteration 19 is the first step's last: ours acts within a step, so one iteration later
    assert "twin_trigger" not in er1 and hio["twin_trigger"] == 1 and hio["twin_halves"] == [1, 0]
    reasons = dict(unsupported)
    assert "last iteration" in " ".join(r for k, r in unsupported if k == "twin_trigger")
    assert "cube of side 9" in reasons["pc_LUCY_kernel"] and "afresh" in reasons["pc_interval"]
    assert "algorithm_sequence" not in reasons          # ERpc/HIOpc are not run as plain ER/HIO any more
    back = recipe_to_config_rec(recipe)
    assert back["algorithm_sequence"] == "20*ER+40*HIOpc+20*ERpc" and back["pc_interval"] == 10
    assert back["phc_trigger"] == [0, 1, 50] and back["twin_trigger"] == [20]
    r = cdi_plugins.run({**recipe, "data": SIM, "seed": 0}, write=False)
    assert len(r.history) == 80 and np.isfinite(r.history[-1]["chi2"])


def test_pc_sequence_without_pc_interval_runs_plain_and_says_so():
    recipe, unsupported = config_rec_to_recipe({"algorithm_sequence": "10*ER+10*HIOpc"})
    assert recipe["steps"] == "10*ER+10*HIO"
    assert "ERpc/HIOpc without pc_interval" in dict(unsupported)["algorithm_sequence"]
