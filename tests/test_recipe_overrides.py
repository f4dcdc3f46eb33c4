"""Tests for cdi_plugins.recipe.overrides: --set KEY=VALUE, datasets[*].set, and how a dataset merges."""

from __future__ import annotations

import pytest

from cdi_plugins import CDIError
from cdi_plugins.recipe import apply_set, load_recipe, parse_set
from cdi_plugins.recipe.overrides import _merge

from tests.recipe_cases import BASE, DATASETS


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


def test_api_overrides_take_a_mapping_and_refuse_anything_else_in_one_line():
    """``cdi_plugins.run(recipe, overrides={"runs": 8})`` is what a Python user writes first: it works like
    the (key, value) pairs of --set; a malformed item is a CDIError naming it, not a ValueError traceback."""
    import numpy as np

    import cdi_plugins
    plan = load_recipe(BASE, overrides={"params.hio.beta": 0.5, "seed": 9}).dataset()
    assert {s.params["beta"] for s in plan.steps if s.name == "hio"} == {0.5} and plan.seed == 9
    for bad, item in ((["seed"], "item 0 is 'seed'"), ([("seed", 1, 2)], "item 0 is \\('seed', 1, 2\\)"),
                      ("seed=9", "the string 'seed=9'"), ([(3, 1)], "item 0 is \\(3, 1\\)")):
        with pytest.raises(CDIError, match="overrides must be a mapping or \\(key, value\\) pairs.*" + item):
            load_recipe(BASE, overrides=bad)
    r = cdi_plugins.run({"data": {"path": "<array>"}, "steps": "3*ER"}, data=np.ones((16, 16, 16), np.float32),
                        overrides={"seed": 4}, write=False)
    assert r.metadata["seed"] == 4


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


def test_parse_set_reads_yaml_numbers_and_rejects_bad_yaml():
    assert parse_set("data.simulate.counts=1e8") == ("data.simulate.counts", 1e8)
    with pytest.raises(CDIError, match=r"^--set seed: value '\[1' is not valid YAML"):
        parse_set("seed=[1")


def test_a_dataset_replaces_data_and_steps_and_merges_the_rest():
    base = {"data": {"simulate": {"shape": 32}}, "steps": "5*ER", "params": {"hio": {"beta": 0.9}},
            "output": {"path": "a.cxi"}}
    over = {"data": {"path": "x.npy"}, "steps": "5*HIO", "params": {"er": {"iterations": 3}},
            "output": {"png": "a.png"}}
    merged = _merge(base, over)
    assert merged == {"data": {"path": "x.npy"}, "steps": "5*HIO",
                      "params": {"hio": {"beta": 0.9}, "er": {"iterations": 3}},
                      "output": {"path": "a.cxi", "png": "a.png"}}
    assert base["params"] == {"hio": {"beta": 0.9}}                    # the base is not modified


def test_a_bad_set_value_is_one_line():
    with pytest.raises(CDIError) as e:
        parse_set("params.hio.beta=[0.5,")
    text = str(e.value)
    assert "\n" not in text and text.startswith("--set params.hio.beta: value '[0.5,' is not valid YAML (")


def test_set_on_one_dataset_changes_that_dataset_only():
    # --set datasets.1.params.hio.beta=0.55 used to land in every dataset as an unused key, silently;
    # it wins over the dataset's own set: (0.7) and over a plain --set
    rec = load_recipe(DATASETS, overrides=[("datasets.1.params.hio.beta", 0.55), ("params.hio.beta", 0.6)])
    a, b, c = rec.datasets
    assert b.steps[1].params["beta"] == 0.55 and a.steps[1].params["beta"] == 0.6
    rec = load_recipe(DATASETS, overrides=[("datasets[0].data.simulate.seed", 7)])
    assert [d.data.simulate["seed"] for d in rec.datasets] == [7, 4, 0]
    with pytest.raises(CDIError, match=r"--set datasets.5.seed: index 5 is out of range \(the recipe lists 3"):
        load_recipe(DATASETS, overrides=[("datasets.5.seed", 1)])
    with pytest.raises(CDIError, match="--set datasets.0.seed: the recipe has no datasets list"):
        load_recipe(BASE, overrides=[("datasets.0.seed", 1)])
    with pytest.raises(CDIError, match="--set datasets.x.seed: use datasets.<index>.KEY=VALUE"):
        load_recipe(DATASETS, overrides=[("datasets.x.seed", 1)])
