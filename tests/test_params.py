"""Tests for cdi_plugins.core.params: typed parameters, bounds, choices, defaults, schema."""

from __future__ import annotations

import numpy as np
import pytest

from cdi_plugins import CDIError, Param, ParamModel
from cdi_plugins.core.params import suggest


def check(param, value, where="recipe.yaml:3: steps[0].x"):
    return param.check(value, where)


# --------------------------------------------------------------------------- types


@pytest.mark.parametrize("value, expected", [(3, 3), (3.0, 3), (np.int64(7), 7), (np.float32(2.0), 2)])
def test_int_accepts_integers_and_integral_numbers(value, expected):
    out = check(Param("n", "int", 1), value)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value", [True, False, 2.5, "ten", "3", [3], float("inf"), float("nan"), np.bool_(True)])
def test_int_rejects_non_integers_and_bools(value):
    with pytest.raises(CDIError, match="'n' must be an integer") as info:
        check(Param("n", "int", 1), value)
    assert info.value.location == "recipe.yaml:3: steps[0].x"


@pytest.mark.parametrize("value, expected", [(0.5, 0.5), (2, 2.0), (np.float32(0.25), 0.25), (np.int64(3), 3.0)])
def test_float_accepts_numbers_and_converts_to_float(value, expected):
    out = check(Param("x", "float", 0.0), value)
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value", [True, "0.5", None, [0.5]])
def test_float_rejects_bools_strings_and_null(value):
    with pytest.raises(CDIError, match="'x'"):
        check(Param("x", "float", 0.0), value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_float_rejects_non_finite(value):
    with pytest.raises(CDIError, match="'x' must be finite"):
        check(Param("x", "float", 0.0), value)


@pytest.mark.parametrize("value", [0, 1, "yes", "true", None])
def test_bool_accepts_only_true_and_false(value):
    with pytest.raises(CDIError, match="'flag' m"):
        check(Param("flag", "bool", False), value)
    assert check(Param("flag", "bool", False), True) is True


def test_str_type_and_choices_with_suggestion():
    p = Param("mode", "str", "auto", choices=("auto", "autocorrelation", "box"))
    assert check(p, "box") == "box"
    with pytest.raises(CDIError, match="'mode' must be a string"):
        check(p, 3)
    with pytest.raises(CDIError) as info:
        check(p, "autocorelation")
    msg = str(info.value)
    assert "must be one of auto, autocorrelation, box" in msg
    assert "did you mean 'autocorrelation'" in msg
    assert msg.startswith("recipe.yaml:3: steps[0].x: ")


def test_nullable():
    assert check(Param("s", "float", None, nullable=True), None) is None
    with pytest.raises(CDIError, match="'s' may not be null"):
        check(Param("s", "float", 1.0), None)


def test_unknown_type_is_a_programming_error():
    with pytest.raises(ValueError, match="type must be one of"):
        Param("x", "complex", 0)


# --------------------------------------------------------------------------- bounds


def test_open_low_closed_high_bound_like_hio_beta():
    beta = Param("beta", "float", 0.9, low=0, high=1, low_open=True)
    assert beta.range_text == "(0, 1]"
    assert check(beta, 1.0) == 1.0          # closed end: allowed
    assert check(beta, 1e-6) == 1e-6
    for bad in (0, 0.0, -0.1, 1.0000001, 1.5):
        with pytest.raises(CDIError, match=r"'beta' = .* is out of range \(0, 1\]"):
            check(beta, bad)


def test_closed_low_open_high_bound():
    p = Param("f", "float", 0.1, low=0, high=0.5, high_open=True)
    assert p.range_text == "[0, 0.5)"
    assert check(p, 0) == 0.0
    with pytest.raises(CDIError, match="out of range"):
        check(p, 0.5)


def test_one_sided_bound_and_negative_iterations():
    it = Param("iterations", "int", 100, low=1)
    assert it.range_text == "[1, inf)"
    assert check(it, 1) == 1
    for bad in (0, -5):
        with pytest.raises(CDIError, match=r"'iterations' = -?\d+ is out of range \[1, inf\)"):
            check(it, bad)
    assert Param("x", "float", 0, high=2).range_text == "(-inf, 2]"
    assert Param("x", "float", 0).range_text == ""


# --------------------------------------------------------------------------- models


@pytest.fixture
def model():
    return ParamModel([
        Param("iterations", "int", 100, "number of iterations", low=1),
        Param("beta", "float", 0.9, "feedback", low=0, high=1, low_open=True),
        Param("method", "str", "adam", choices=("adam", "lbfgs")),
        Param("verbose", "bool", False),
    ])


def test_validate_fills_defaults_and_does_not_modify_input(model):
    values = {"beta": 0.5}
    out = model.validate(values)
    assert out == {"iterations": 100, "beta": 0.5, "method": "adam", "verbose": False}
    assert values == {"beta": 0.5}
    assert model.defaults() == {"iterations": 100, "beta": 0.9, "method": "adam", "verbose": False}


def test_unknown_parameter_did_you_mean_and_known_list(model):
    where = lambda key=None: f"r.yaml:4: steps[1].{key}"
    with pytest.raises(CDIError) as info:
        model.validate({"bta": 0.5}, where)
    msg = str(info.value)
    assert msg.startswith("r.yaml:4: steps[1].bta: unknown parameter 'bta'")
    assert "did you mean 'beta'" in msg
    assert "known: iterations, beta, method, verbose" in msg


def test_unknown_parameter_with_nothing_close_has_no_suggestion(model):
    with pytest.raises(CDIError) as info:
        model.validate({"zzzz": 1})
    assert "did you mean" not in str(info.value)


def test_validate_locates_the_bad_key(model):
    def where(key=None):
        return f"loc:{key}"
    with pytest.raises(CDIError) as info:
        model.validate({"iterations": 5, "beta": 1.5}, where)
    assert info.value.location == "loc:beta"


def test_model_rejects_duplicate_declarations_and_supports_membership(model):
    with pytest.raises(ValueError, match="declared twice"):
        ParamModel([Param("a", "int", 1), Param("a", "int", 2)])
    assert "beta" in model and "gamma" not in model
    assert [p.name for p in model] == ["iterations", "beta", "method", "verbose"]


def test_schema_shows_defaults_and_bounds(model):
    rows = {r["name"]: r for r in model.schema()}
    assert rows["beta"] == {"name": "beta", "type": "float", "default": 0.9, "range": "(0, 1]", "doc": "feedback"}
    assert rows["method"]["range"] == "one of adam, lbfgs"
    assert rows["iterations"]["range"] == "[1, inf)"


def test_suggest():
    assert suggest("hoi", ["er", "hio", "raar"]) == " (did you mean 'hio'?)"
    assert suggest("qqq", ["er", "hio"]) == ""
