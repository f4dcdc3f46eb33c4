"""Tests for cdi_plugins.core.result: what a run returns, its figures and its error against a truth."""

import numpy as np
import pytest

from cdi_plugins.core.result import Result


def _result(history, timings=(), truth=None, obj=None):
    if obj is None:
        obj = np.zeros((8, 8, 8), np.complex64)
        obj[2:6, 3:6, 2:5] = 1
    return Result(obj=obj, support=np.abs(obj) > 0, history=list(history), timings=list(timings), truth=truth)


def test_figures_come_from_the_history_and_the_timings():
    r = _result([{"step": 1, "chi2": 0.5}, {"step": 1, "chi2": 0.25}, {"step": 2, "chi2": np.float32(0.125)}],
                timings=[1.5, 0.25])
    assert r.chi2 == 0.125 and isinstance(r.chi2, float)
    assert r.iterations == 3 and r.seconds == 1.75
    empty = _result([])
    assert empty.chi2 is None and empty.iterations == 0 and empty.seconds == 0.0


def test_error_against_the_truth_ignores_a_global_phase():
    r = _result([])
    assert r.error() is None                                    # no truth: nothing to say
    truth = (r.obj * np.exp(1j * 0.7)).astype(np.complex64)
    assert _result([], truth=truth, obj=r.obj).error() == pytest.approx(0.0, abs=1e-6)
    other = np.zeros_like(r.obj)
    other[1:3, 1:3, 5:7] = 1
    assert _result([], truth=truth, obj=other).error() > 0.5
