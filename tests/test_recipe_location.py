"""Tests for cdi_plugins.recipe.location: every error names the file, the line and the key path
(or the override that set the value)."""

from __future__ import annotations

import pytest

from cdi_plugins import CDIError
from cdi_plugins.recipe import load_recipe
from cdi_plugins.recipe.loader import read_recipe
from cdi_plugins.recipe.location import _key_parts, _Where

from tests.recipe_cases import BASE, DATASETS, HEAD, error, lines, write

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


def test_the_issue_example_beta_on_line_7(tmp_path):
    text = lines("name: t", "data:", "  simulate: {shape: 32, seed: 0}", "steps: 20*HIO",
                 "params:", "  hio:", "    beta: 1.5")
    path = write(tmp_path, text)
    msg = error(path)
    assert "recipe.yaml:7" in msg and "beta" in msg and "(0, 1]" in msg


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


def test_dataset_set_on_a_sequence_string_is_located(tmp_path):
    path = write(tmp_path, lines(*HEAD, "steps: 5*ER", "datasets:", "  - name: a", "    set: {steps.0.beta: 1}"))
    msg = error(path)
    assert msg.startswith(f"{path}:7: datasets[0].set steps.0.beta: ") and "sequence string" in msg


def test_where_texts_and_key_parts():
    assert _key_parts("steps[0].beta") == _key_parts("steps.0.beta") == ("steps", "0", "beta")
    doc = read_recipe(lines(*HEAD, "steps:", "  - {algorithm: hio, beta: 0.5}"))[0]
    w = _Where("r.yaml", "", doc)
    assert w.text() == "r.yaml" and w.text("steps") == "r.yaml:5: steps"      # the line of the value
    step = w.child("steps").child(0)
    assert step.text() == "r.yaml:5: steps[0]" and step.text("beta") == "r.yaml:5: steps[0].beta"
    assert w.child("nothing").text("x") == "r.yaml: nothing.x"                 # no line: the file only
    over = _Where("r.yaml", "", doc, overridden={("steps",): "--set steps"})
    assert over.text("steps") == "--set steps"
    assert over.child("steps").text(0) == "--set steps: steps[0]"             # inside an overridden value
