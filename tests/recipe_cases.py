"""Recipes and helpers shared by the tests/test_recipe_*.py files (one per module of cdi_plugins.recipe)."""

from __future__ import annotations

import pytest

from cdi_plugins import CDIError
from cdi_plugins.recipe import load_recipe

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

COHERE = [("ER", 20), ("HIO", 180)] * 3 + [("ER", 20)]

HEAD = ("name: t", "data:", "  simulate: {shape: 32, seed: 0}")   # lines 1-3


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


def lines(*rows):
    return "".join(r + "\n" for r in rows)
