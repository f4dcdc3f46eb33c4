"""Tests for cdi_plugins.recipe: sequences, recipe forms, overrides, and located errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.recipe import apply_set, load_recipe, parse_sequence, parse_set

from tests.conftest import HAVE_GPU

BASE = """\
name: t
data:
  simulate: {shape: 32, seed: 0}
seed: 0
threads: 1
params:
  hio: {beta: 0.8}
steps: "3*(20*ER+180*HIO)+20*ER"
"""


def steps_of(recipe, **kw):
    """[(algorithm, iterations), ...] of the only dataset."""
    plan = load_recipe(recipe, **kw).dataset()
    return [(s.name, s.iterations) for s in plan.steps]


def write(tmp_path, text, name="recipe.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error(recipe, **kw) -> str:
    with pytest.raises(CDIError) as info:
        load_recipe(recipe, **kw)
    return str(info.value)


COHERE = [("ER", 20), ("HIO", 180)] * 3 + [("ER", 20)]


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


# --------------------------------------------------------------------------- the three forms of a recipe


def test_recipe_as_path_yaml_string_and_dict_agree(tmp_path):
    path = write(tmp_path, BASE)
    expected = [(a.lower(), n) for a, n in COHERE]
    assert steps_of(path) == expected
    assert steps_of(str(path)) == expected
    assert steps_of(BASE) == expected
    d = {"name": "t", "data": {"simulate": {"shape": 32, "seed": 0}}, "params": {"hio": {"beta": 0.8}},
         "steps": "3*(20*ER+180*HIO)+20*ER"}
    assert steps_of(d) == expected
    rec = load_recipe(path)
    assert rec.source == str(path)
    plan = rec.dataset()
    assert plan.name == "t" and plan.seed == 0 and plan.threads == 1
    assert plan.iterations == 620
    assert plan.data.simulate["shape"] == 32 and plan.data.simulate["noise"] is True  # defaults filled
    # the default HIO beta from params: applies to every HIO step of the sequence string
    assert {s.params["beta"] for s in plan.steps if s.name == "hio"} == {0.8}


def test_dict_recipe_is_not_modified_and_accepts_numpy_scalars():
    d = {"data": {"simulate": {"shape": np.int64(32)}}, "seed": np.int64(3),
         "steps": [{"algorithm": "hio", "iterations": np.int64(7), "beta": np.float32(0.5)}]}
    snapshot = repr(d)
    plan = load_recipe(d).dataset()
    assert repr(d) == snapshot
    assert plan.seed == 3 and plan.steps[0].iterations == 7 and plan.steps[0].params["beta"] == 0.5


def test_relative_data_path_is_relative_to_the_recipe_file(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "d.npy", np.ones((4, 4, 4), np.float32))
    path = write(tmp_path / "sub", "data: {path: d.npy}\nsteps: 5*ER\n")
    plan = load_recipe(path).dataset()
    assert plan.data.resolved() == str(tmp_path / "sub" / "d.npy")


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


# --------------------------------------------------------------------------- datasets and overrides


DATASETS = """\
data: {simulate: {shape: 32, seed: 0}}
params:
  hio: {beta: 0.9}
steps: "10*ER+10*HIO"
datasets:
  - name: a
  - name: b
    set: {params.hio.beta: 0.7, "data.simulate.seed": 4}
  - name: c
    steps: "10*ER+10*RAAR"
"""


def test_per_dataset_overrides_give_different_step_lists():
    rec = load_recipe(DATASETS)
    assert [d.name for d in rec.datasets] == ["a", "b", "c"]
    a, b, c = rec.datasets
    assert [(s.name, s.iterations) for s in a.steps] == [("er", 10), ("hio", 10)]
    assert a.steps[1].params["beta"] == 0.9 and a.data.simulate["seed"] == 0
    assert b.steps[1].params["beta"] == 0.7 and b.data.simulate["seed"] == 4
    assert [s.name for s in c.steps] == ["er", "raar"]
    assert rec.dataset("b") is b
    with pytest.raises(CDIError, match="lists 3 datasets"):
        rec.dataset()
    with pytest.raises(CDIError, match="no dataset named 'bb'.*did you mean 'b'"):
        rec.dataset("bb")


def test_set_style_overrides():
    plan = load_recipe(BASE, overrides=[("params.hio.beta", 0.5)]).dataset()
    assert {s.params["beta"] for s in plan.steps if s.name == "hio"} == {0.5}
    plan = load_recipe(BASE, overrides=[("steps", "2*(5*RAAR)"), ("seed", 9)]).dataset()
    assert [(s.name, s.iterations) for s in plan.steps] == [("raar", 5), ("raar", 5)] and plan.seed == 9
    listed = "data: {simulate: {shape: 32}}\nsteps:\n  - {algorithm: er, iterations: 5}\n  - {algorithm: hio}\n"
    plan = load_recipe(listed, overrides=[parse_set("steps[1].beta=0.6"), parse_set("steps.0.iterations=3")]).dataset()
    assert (plan.steps[0].iterations, plan.steps[1].params["beta"]) == (3, 0.6)
    # the same override reaches every dataset
    rec = load_recipe(DATASETS, overrides=[("params.hio.beta", 0.3)])
    assert [d.steps[1].params["beta"] for d in rec.datasets] == [0.3, 0.3, 0.75]  # c's raar keeps its own


def test_parse_set_and_apply_set():
    assert parse_set("params.hio.beta=0.8") == ("params.hio.beta", 0.8)
    assert parse_set("steps=3*(20*ER+180*HIO)") == ("steps", "3*(20*ER+180*HIO)")
    assert parse_set("output.overwrite=true") == ("output.overwrite", True)
    assert parse_set("threads=") == ("threads", None)
    for bad in ("beta", "=3"):
        with pytest.raises(CDIError, match="--set expects KEY=VALUE"):
            parse_set(bad)
    doc = {"steps": [{"algorithm": "er"}]}
    apply_set(doc, "steps[0].iterations", 4)
    apply_set(doc, "params.hio.beta", 0.5)
    assert doc == {"steps": [{"algorithm": "er", "iterations": 4}], "params": {"hio": {"beta": 0.5}}}
    with pytest.raises(CDIError, match="out of range"):
        apply_set(doc, "steps.3.beta", 1)
    with pytest.raises(CDIError, match="sequence string"):
        apply_set({"steps": "5*ER"}, "steps.0.beta", 1)


def test_override_errors_point_at_the_override_not_the_file(tmp_path):
    path = write(tmp_path, BASE)
    msg = error(path, overrides=[("params.hio.beta", 1.5)])
    assert msg.startswith("--set params.hio.beta: 'beta' = 1.5 is out of range (0, 1]")
    msg = error(path, overrides=[("steps", "5*HOI")])
    assert msg.startswith("--set steps (HOI): unknown algorithm 'HOI'") and "did you mean 'hio'" in msg
    msg = error(path, overrides=[("stesp", "5*ER")])
    assert msg.startswith("--set stesp: unknown key 'stesp'") and "did you mean 'steps'" in msg


def test_dataset_set_errors_point_at_the_dataset(tmp_path):
    text = DATASETS.replace("params.hio.beta: 0.7", "params.hio.beta: 7")
    path = write(tmp_path, text)
    msg = error(path)
    assert msg.startswith(f"{path}:8: datasets[1].set.params.hio.beta: 'beta' = 7.0 is out of range")


# --------------------------------------------------------------------------- located errors


def lines(*rows):
    return "".join(r + "\n" for r in rows)


HEAD = ("name: t", "data:", "  simulate: {shape: 32, seed: 0}")   # lines 1-3

ERRORS = [
    # (recipe lines, expected "recipe.yaml:LINE", key path, words in the message)
    pytest.param(lines(*HEAD, "seed: 0", "steps: 5*ER", "params:", "  hio: {iterations: 3,", "   beta: 1.5}"),
                 8, "params.hio.beta", ["'beta' = 1.5 is out of range (0, 1]"], id="beta-1.5"),
    pytest.param(lines(*HEAD, "steps:", "  - {algorithm: er, iterations: 5}", "  - algorithm: hio",
                       "    beta: 0"), 7, "steps[1].beta", ["'beta' = 0.0 is out of range (0, 1]"], id="beta-0"),
    pytest.param(lines(*HEAD, "steps:", "  - {algorithm: hio, iterations: -5}"), 5,
                 "steps[0].iterations", ["'iterations' = -5 is out of range [1, inf)"], id="negative-iterations"),
    pytest.param(lines(*HEAD, "steps:", "  - {algorithm: hio, iterations: ten}"), 5,
                 "steps[0].iterations", ["must be an integer, got 'ten'"], id="wrong-type"),
    pytest.param(lines(*HEAD, "steps:", "  - {algorithm: hio, bta: 0.5}"), 5,
                 "steps[0].bta", ["unknown parameter 'bta'", "did you mean 'beta'"], id="unknown-parameter"),
    pytest.param(lines(*HEAD, "steps:", "  - {algorithm: er}", "  - {algorithm: hoi}"), 6,
                 "steps[1].algorithm", ["unknown algorithm 'hoi'", "did you mean 'hio'"], id="unknown-algorithm"),
    pytest.param(lines(*HEAD, "seed: 1", "steps: 20*ER+20*HOI"), 5,
                 "steps (HOI)", ["unknown algorithm 'HOI'", "did you mean 'hio'"], id="unknown-algorithm-in-sequence"),
    pytest.param(lines(*HEAD, "steps: 3*(20*ER"), 4, "steps", ["missing ')' at position 9"], id="bad-sequence"),
    pytest.param(lines(*HEAD, "params:", "  hoi: {beta: 0.5}", "steps: 5*ER"), 5,
                 "params.hoi", ["unknown algorithm 'hoi'", "did you mean 'hio'"], id="unknown-algorithm-in-params"),
    pytest.param(lines(*HEAD, "step: 5*ER"), 4, "step", ["unknown key 'step'", "did you mean 'steps'"],
                 id="unknown-top-level-key"),
    pytest.param(lines("data:", "  pth: x.npy", "steps: 5*ER"), 2, "data.pth",
                 ["unknown key 'pth'", "did you mean 'path'"], id="unknown-data-key"),
    pytest.param(lines("data:", "  simulate: {shape: 8}", "steps: 5*ER"), 2, "data.simulate.shape",
                 ["'shape' = 8 is out of range [16, 1024]"], id="simulate-too-small"),
    pytest.param(lines("data:", "  path: no_such_file.npy", "steps: 5*ER"), 2, "data.path",
                 ["data file not found", "no_such_file.npy"], id="missing-data-file"),
    pytest.param(lines(*HEAD, "seed: -1", "steps: 5*ER"), 4, "seed", ["seed must be an integer >= 0"], id="seed"),
    pytest.param(lines(*HEAD, "backend: gpu", "steps: 5*ER"), 4, "backend",
                 ["backend must be one of auto, numpy, cupy"], id="backend-choice"),
    pytest.param(lines(*HEAD, "steps: []"), 4, "steps", ["no steps"], id="empty-steps-list"),
    pytest.param(lines(*HEAD, "steps: ''"), 4, "steps", ["no steps"], id="empty-steps-string"),
    pytest.param(lines(*HEAD, "steps:", "  - {repeat: 0, steps: 5*ER}"), 5, "steps[0].repeat",
                 ["repeat must be an integer >= 1"], id="repeat-zero"),
    pytest.param(lines(*HEAD, "steps:", "  - {repeat: 2}"), 5, "steps[0]",
                 ["a repeat block needs 'steps'"], id="repeat-without-steps"),
    pytest.param(lines(*HEAD, "steps:", "  - {iterations: 5}"), 5, "steps[0]",
                 ["a step needs 'algorithm'"], id="step-without-algorithm"),
    pytest.param(lines(*HEAD, "steps: 5*ER", "output:", "  path: [1]"), 6, "output.path",
                 ["output.path must be a string"], id="output-path-type"),
    pytest.param(lines(*HEAD, "steps: 5*ER", "output: nowhere.cxi"), 5, "output",
                 ["output must be a mapping, got a string"], id="output-not-mapping"),
    pytest.param(lines(*HEAD, "steps: 5*ER", "datasets:", "  - name: a", "  - name: b", "  - name: a"), 8,
                 "datasets[2].name", ["duplicate dataset name 'a'"], id="duplicate-dataset"),
    pytest.param(lines(*HEAD, "steps: 5*ER", "datasets:", "  - name: a", "    set: 5"), 7,
                 "datasets[0].set", ["set must be a mapping"], id="dataset-set-not-mapping"),
    pytest.param(lines(*HEAD, "steps: 5*ER", "datasets:", "  - {seed: 1}"), 6,
                 "datasets[0]", ["every dataset needs a name"], id="dataset-without-name"),
    pytest.param(lines(*HEAD, "steps: 5*ER", "datasets:", "  - name: a", "    steps: '5*HOI'"), 7,
                 "steps (HOI)", ["unknown algorithm 'HOI'"], id="unknown-algorithm-in-dataset"),
]


@pytest.mark.parametrize("text, line, key, words", ERRORS)
def test_every_recipe_error_names_file_line_and_key(tmp_path, text, line, key, words):
    path = write(tmp_path, text)
    with pytest.raises(CDIError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: {key}"), msg
    for w in words:
        assert w in msg, msg
    # the same text given as a string is located the same way, with <recipe> for the file
    if "no_such_file" not in text:
        assert error(text).startswith(f"<recipe>:{line}: {key}")


@pytest.mark.parametrize("text, line, words", [
    pytest.param(lines(*HEAD, "steps: 5*ER", "seed: [1"), 6, ["YAML syntax error"], id="unclosed-list"),
    pytest.param(lines("data: {simulate: {shape: 32}", "steps: 5*ER"), 2, ["YAML syntax error"], id="unclosed-map"),
    pytest.param(lines(*HEAD, "\tsteps: 5*ER"), 4, ["YAML syntax error", "'\\t'"], id="tab"),
    pytest.param(lines(*HEAD, "seed: 1", "steps: 5*ER", "seed: 2"), 6, ["duplicate key 'seed'"], id="duplicate-key"),
])
def test_yaml_errors_name_file_and_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    msg = error(path)
    assert msg.startswith(f"{path}:{line}: "), msg
    for w in words:
        assert w in msg


def test_the_issue_example_beta_on_line_7(tmp_path):
    text = lines("name: t", "data:", "  simulate: {shape: 32, seed: 0}", "steps: 20*HIO",
                 "params:", "  hio:", "    beta: 1.5")
    path = write(tmp_path, text)
    msg = error(path)
    assert "recipe.yaml:7" in msg and "beta" in msg and "(0, 1]" in msg


def test_file_level_errors(tmp_path):
    assert error(tmp_path / "missing.yaml") == f"{tmp_path / 'missing.yaml'}: recipe file not found"
    assert error("recpie.yml").startswith("recpie.yml: recipe file not found")
    assert error("recipe_typo").startswith("recipe_typo: recipe file not found")
    assert error(str(tmp_path)).endswith("is a directory, not a recipe file")
    assert error(write(tmp_path, "")).endswith("the recipe is empty")
    assert "a recipe must be a mapping, got a list" in error(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    bad = tmp_path / "binary.yaml"
    bad.write_bytes(b"\xff\xfe\x00bad")
    assert error(bad).startswith(f"{bad}: cannot read recipe")
    assert "no data" in error("steps: 5*ER\n")
    assert "give exactly one of data.path or data.simulate" in error(
        "data: {path: x.npy, simulate: {shape: 32}}\nsteps: 5*ER\n")


def test_missing_data_override_names_the_file(tmp_path):
    missing = str(tmp_path / "nope.npy")
    assert error(BASE, data=missing) == f"{missing}: data file not found"


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device works here")
def test_cupy_backend_without_gpu_is_a_clear_error(tmp_path):
    path = write(tmp_path, lines(*HEAD, "backend: cupy", "steps: 5*ER"))
    msg = error(path)
    assert msg.startswith(f"{path}:4: backend: ")
    assert "CuPy" in msg and "GPU" in msg
    # validation without the backend check still accepts it (a recipe can be checked for another machine)
    assert load_recipe(path, check_backend=False).dataset().backend == "cupy"


def test_thirty_two_cubed_simulation_validates():
    plan = load_recipe({"data": {"simulate": {"shape": 32, "seed": 0}}, "steps": "5*ER"}).dataset()
    assert plan.data.simulate["shape"] == 32
    assert os.path.basename(plan.source) == "<recipe>"


def test_dataset_set_on_a_sequence_string_is_located(tmp_path):
    path = write(tmp_path, lines(*HEAD, "steps: 5*ER", "datasets:", "  - name: a", "    set: {steps.0.beta: 1}"))
    msg = error(path)
    assert msg.startswith(f"{path}:7: datasets[0].set steps.0.beta: ") and "sequence string" in msg
