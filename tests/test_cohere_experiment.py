"""cohere experiments into recipes (algorithms/cohere/experiment.py) and the `cdi import-cohere` command
(algorithms/cohere/commands.py)."""

from __future__ import annotations


import numpy as np
import yaml

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
    assert recipe["steps"] == "3*(20*ER+180*HIO)+20*ER" and recipe["runs"] == 3
    assert recipe["params"]["hio"]["beta"] == 0.8 and recipe["params"]["er"]["shrink_wrap_period"] == 5
    keys = {k for k, _ in unsupported}
    assert {"twin_trigger", "twin_halves", "ga_generations"} <= keys  # listed, never silently dropped
    back = recipe_to_config_rec(recipe)
    assert "initial_support_area" in keys  # per-algorithm params would reset every step's support
    for k in ("algorithm_sequence", "hio_beta", "shrink_wrap_trigger", "shrink_wrap_threshold",
              "shrink_wrap_gauss_sigma", "reconstructions"):
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
    assert doc["steps"] == "20*ER+40*HIO+20*ER" and doc["output"]["cohere_dir"] == "scan_results_phasing"
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
    recipe, _ = config_rec_to_recipe({**CONF, "algorithm_sequence": "10*SF+20*HIO+10*ER"})
    assert recipe["steps"] == "10*SF+20*HIO+10*ER"
    assert recipe["params"]["sf"]["shrink_wrap_period"] == recipe["params"]["er"]["shrink_wrap_period"]
    plan = load_recipe({**recipe, "data": SIM}).dataset()
    assert [s.name for s in plan.steps] == ["sf", "hio", "er"]
