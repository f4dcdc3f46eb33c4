"""Tests for cdi_plugins.errors: the one exception a user sees, and where it says the problem is."""

import pytest

from cdi_plugins.errors import CDIError


def test_the_message_starts_with_where_the_problem_is():
    e = CDIError("beta must be in (0, 1]", "steps[2].beta")
    assert str(e) == "steps[2].beta: beta must be in (0, 1]"
    assert e.message == "beta must be in (0, 1]" and e.location == "steps[2].beta"
    assert str(CDIError("no location")) == "no location" and CDIError("x").location is None
    with pytest.raises(Exception, match="steps"):                # an ordinary exception to callers
        raise e


def test_at_adds_an_outer_location_and_leaves_the_original_alone():
    inner = CDIError("unknown key 'bta'", "steps[2]")
    outer = inner.at("recipe.yaml:12")
    assert str(outer) == "recipe.yaml:12: steps[2]: unknown key 'bta'"
    assert str(inner) == "steps[2]: unknown key 'bta'"
    assert str(CDIError("empty").at("data.npy")) == "data.npy: empty"
