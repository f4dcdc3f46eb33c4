"""Tests for cdi_plugins.recipe.loader: the three forms of a recipe, and YAML and file errors with their line."""

from __future__ import annotations

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.recipe import load_recipe
from cdi_plugins.recipe.loader import read_recipe

from tests.recipe_cases import BASE, COHERE, HEAD, error, lines, steps_of, write


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


def test_read_recipe_keeps_lines_and_names_the_source(tmp_path):
    path = write(tmp_path, BASE)
    doc, text, source, base_dir = read_recipe(path)
    assert text == BASE and source == str(path) and base_dir == str(tmp_path)
    assert doc.lines["steps"] == 8 and doc["data"].lines["simulate"] == 3
    doc, text, source, _ = read_recipe({"steps": "5*ER"})
    assert (doc, text, source) == ({"steps": "5*ER"}, "steps: 5*ER\n", "<recipe>")
    assert read_recipe("seed: 1e8\n")[0]["seed"] == 1e8     # YAML 1.1 would read a string


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
    with pytest.raises(CDIError, match="a mapping key must be a plain value"):
        read_recipe("? [1, 2]\n: 3\n")


def test_a_billion_laughs_recipe_is_refused_before_it_is_expanded(tmp_path):
    lines_ = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines_.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines_) + "\nsteps: 5*ER\n")
    assert bomb.stat().st_size < 1000
    with pytest.raises(CDIError, match=r"bomb.yaml:1: the YAML expands to [\d,]+ values through its aliases "
                                       r"\(&anchor / \*alias\), more than the limit of 100,000"):
        load_recipe(str(bomb))
    # aliases themselves are fine
    ok = "defaults: &d {beta: 0.8}\n"
    with pytest.raises(CDIError, match="unknown key 'defaults'"):
        load_recipe(ok + "data: {simulate: {shape: 32}}\nsteps: 5*ER\n")
