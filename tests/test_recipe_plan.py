"""Tests for cdi_plugins.recipe.plan: sequences, step expansion, and the typed plan (DataSpec, OutputSpec)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.recipe import DataSpec, OutputSpec, load_recipe, parse_sequence

from tests.recipe_cases import BASE, COHERE, error, write


# --------------------------------------------------------------------------- parse_sequence


def test_cohere_sequence_expands_to_seven_steps():
    assert parse_sequence("3*(20*ER+180*HIO)+20*ER") == COHERE
    assert sum(n for _, n in parse_sequence("3*(20*ER+180*HIO)+20*ER")) == 620


def test_sequence_nesting_whitespace_and_bare_names():
    assert parse_sequence(" 2 * ( 3*(ER + 5*HIO) + RAAR ) ") == (
        [("ER", None), ("HIO", 5)] * 3 + [("RAAR", None)]) * 2
    assert parse_sequence("ER") == [("ER", None)]
    assert parse_sequence("(10*raar)") == [("raar", 10)]


@pytest.mark.parametrize("text, message", [
    ("3*(20*ER", "missing ')' at position 9"),
    ("20*", "expected an algorithm name or '(' after '*' at position 4"),
    ("ER+", "unexpected end at position 4"),
    ("20 ER", "expected '*' after a count at position 4"),
    ("0*ER", "a count must be at least 1 at position 3"),
    ("ER$", "unexpected character '$' at position 3"),
    ("ER)", "unexpected ')' at position 3"),
    ("", "sequence is empty"),
])
def test_sequence_syntax_errors_give_the_position(text, message):
    with pytest.raises(CDIError) as info:
        parse_sequence(text)
    assert message in str(info.value)


# --------------------------------------------------------------------------- step lists


def test_list_steps_repeat_blocks_and_sequence_items():
    text = """\
data: {simulate: {shape: 32}}
params:
  er: {iterations: 7}
steps:
  - {algorithm: hio, iterations: 10, beta: 0.7}
  - repeat: 2
    steps:
      - {algorithm: er, iterations: 5}
      - "3*HIO"
  - {sequence: "2*(ER+4*RAAR)", params: {raar: {beta: 0.6}, er: {shrink_wrap_period: 0}}}
  - er
"""
    plan = load_recipe(text).dataset()
    got = [(s.name, s.iterations) for s in plan.steps]
    assert got == [("hio", 10), ("er", 5), ("hio", 3), ("er", 5), ("hio", 3),
                   ("er", 7), ("raar", 4), ("er", 7), ("raar", 4), ("er", 7)]
    assert plan.steps[0].params["beta"] == 0.7
    assert plan.steps[2].params["beta"] == 0.9                    # the algorithm's own default
    raar = [s for s in plan.steps if s.name == "raar"]
    assert {s.params["beta"] for s in raar} == {0.6}              # the sequence item's params
    seq_er = plan.steps[5:9:2]
    assert {s.params["shrink_wrap_period"] for s in seq_er} == {0}
    assert plan.steps[-1].params["shrink_wrap_period"] == 20      # the sequence's params stay local


def test_top_level_params_apply_to_sequence_steps_and_steps_win():
    text = """\
data: {simulate: {shape: 32}}
params:
  hio: {beta: 0.7, iterations: 11}
steps:
  - "HIO+5*HIO"
  - {algorithm: hio, beta: 0.5}
"""
    plan = load_recipe(text).dataset()
    assert [(s.iterations, s.params["beta"]) for s in plan.steps] == [(11, 0.7), (5, 0.7), (11, 0.5)]


# --------------------------------------------------------------------------- data and output


def test_relative_data_path_is_relative_to_the_recipe_file(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "d.npy", np.ones((4, 4, 4), np.float32))
    path = write(tmp_path / "sub", "data: {path: d.npy}\nsteps: 5*ER\n")
    plan = load_recipe(path).dataset()
    assert plan.data.resolved() == str(tmp_path / "sub" / "d.npy")


def test_missing_data_override_names_the_file(tmp_path):
    missing = str(tmp_path / "nope.npy")
    assert error(BASE, data=missing) == f"{missing}: data file not found"


def test_dataspec_of_a_file_with_mask_and_preparation(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((4, 4, 4), np.float32))
    np.save(tmp_path / "m.npy", np.zeros((4, 4, 4), bool))
    path = write(tmp_path, "data: {path: d.npy, mask: m.npy, free_fraction: 0.05, prepare: {threshold: 2}}\n"
                           "steps: 5*ER\n")
    d = load_recipe(path).dataset().data
    assert isinstance(d, DataSpec)
    assert (d.path, d.mask, d.dataset, d.mask_dataset, d.simulate) == ("d.npy", "m.npy", None, None, None)
    assert d.free_fraction == 0.05 and d.prepare["threshold"] == 2.0 and d.base_dir == str(tmp_path)
    assert d.resolved("path") == str(tmp_path / "d.npy") and d.resolved("mask") == str(tmp_path / "m.npy")
    assert d.resolved("mask_dataset") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.path = "other.npy"


def test_dataspec_of_a_simulation_and_of_a_data_override(tmp_path):
    d = load_recipe(BASE).dataset().data
    assert d.path is None and d.resolved() is None and d.free_fraction == 0.0 and d.prepare is None
    assert d.simulate == {"shape": 32, "seed": 0, "counts": 1e8, "noise": True, "phase_amplitude": 1.0,
                          "oversampling_min": 2.2, "coherence_blur": None}
    given = tmp_path / "given.npy"
    np.save(given, np.ones((4, 4, 4), np.float32))
    d = load_recipe(BASE, data=str(given)).dataset().data     # cdi run --data: the simulation is replaced
    assert d.simulate is None and d.path == str(given) and d.resolved() == str(given)


def test_outputspec_defaults_and_report_files():
    out = load_recipe(BASE).dataset().output
    assert out == OutputSpec() and out.overwrite is False and out.reports() == {}
    plan = load_recipe(BASE + "output: {path: 'r/{dataset}.cxi', overwrite: true, vti: a.vti, cohere_dir: res}\n"
                       ).dataset()
    out = plan.output
    assert (out.path, out.overwrite, out.png, out.vti, out.cohere_dir) == ("r/{dataset}.cxi", True, None, "a.vti",
                                                                          "res")
    assert out.reports() == {"vti": "a.vti"}
    assert OutputSpec(png="a.png", vti="b.vti").reports() == {"png": "a.png", "vti": "b.vti"}
    # the effective recipe (stored with every result) keeps what the recipe wrote, without the defaults
    assert plan.doc["output"] == {"path": "r/{dataset}.cxi", "overwrite": True, "vti": "a.vti", "cohere_dir": "res"}


@pytest.mark.parametrize("steps, message", [
    ("[{repeat: 1000000000, steps: [{algorithm: er, iterations: 1}]}]",
     r"<recipe>:\d+: steps\[0\].repeat: the steps expand to 1,000,000,000 steps, more than the limit of 10,000"),
    ("[{repeat: 101, steps: [{repeat: 100, steps: [{algorithm: er, iterations: 1}]}]}]",
     r"steps\[0\].repeat: the steps expand to 10,100 steps, more than the limit of 10,000"),
    ("[{repeat: 1000, steps: '3000*ER+3000*HIO'}, '5000000*ER']",
     r"steps: the steps ask for 11,000,000 iterations, more than the limit of 10,000,000 per run"),
])
def test_repeats_beyond_the_limits_are_refused_before_they_are_built(steps, message):
    # repeat: 1000000000 used to build a billion step objects (a hang); now the size is computed first
    with pytest.raises(CDIError, match=message):
        load_recipe(f"data: {{simulate: {{shape: 32}}}}\nsteps: {steps}\n")


def test_runs_beyond_the_limit_are_refused():
    with pytest.raises(CDIError, match=r"runs: runs = 1,000,000 is more than the limit of 10,000"):
        load_recipe("data: {simulate: {shape: 32}}\nruns: 1000000\nsteps: 5*ER\n")
