"""cdi compare with recipes: one table, same data, chi^2-vs-time picture."""

import numpy as np
import pytest

from cdi_plugins.cli import main

SIM = "data: {simulate: {shape: 32, seed: 0, counts: 1.0e8}}\nthreads: 1\n"


@pytest.fixture
def recipes(tmp_path):
    a = tmp_path / "hio.yaml"
    a.write_text(SIM + 'steps: "20*ER+100*HIO+20*ER"\n')
    b = tmp_path / "raar.yaml"
    b.write_text(SIM + 'steps: "20*ER+100*RAAR+20*ER"\n')
    return a, b


def test_compare_runs_recipes_on_the_same_data_and_draws_chi2_against_time(recipes, tmp_path, capsys):
    png = tmp_path / "c.png"
    assert main(["compare", str(recipes[0]), str(recipes[1]), "--png", str(png), "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "error vs truth" in out[1]
    rows = {line.split()[0]: line.split() for line in out[2:4]}
    assert set(rows) == {"hio", "raar"}
    assert rows["hio"][2] == "140" and rows["raar"][2] == "140"  # iterations
    assert all(0 < float(r[3]) < 1 for r in rows.values())    # final chi2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_recipes_on_different_data(recipes, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text("data: {simulate: {shape: 32, seed: 5}}\nsteps: '20*ER'\n")
    assert main(["compare", str(recipes[0]), str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.yaml" in err[0] and "--data" in err[0]


def test_compare_with_data_overrides_every_recipe(recipes, tmp_path, capsys):
    from cdi_plugins.physics.simulate import simulate_crystal
    sim = simulate_crystal(32, seed=2)
    path = tmp_path / "pattern.npy"
    np.save(path, sim["intensity"])
    assert main(["compare", str(recipes[0]), str(recipes[1]), "--data", str(path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "pattern.npy" in out and "error vs truth" not in out  # a file carries no truth
