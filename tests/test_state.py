"""Tests for cdi_plugins.core.state: Problem validation lives in test_pipeline/test_io; here the State helper."""

import numpy as np

from cdi_plugins.core.state import State


def test_after_carries_history_and_provenance_without_touching_the_previous_state():
    prev = State(obj=np.zeros(2, np.complex64), support=np.ones(2, bool),
                 history=[{"step": 1, "iteration": 1, "chi2": 0.5}], provenance=[{"step": 1, "algorithm": "er"}])
    new = State.after(prev, np.ones(2, np.complex64), np.zeros(2, bool),
                      [{"step": 2, "iteration": 1, "chi2": 0.25}])
    assert [r["chi2"] for r in new.history] == [0.5, 0.25]
    assert new.provenance == prev.provenance and new.provenance is not prev.provenance
    assert len(prev.history) == 1                      # the received State is unchanged
    first = State.after(None, prev.obj, prev.support, [{"step": 1, "chi2": 1.0}])
    assert first.history == [{"step": 1, "chi2": 1.0}] and first.provenance == []


def test_float64_data_beyond_float32_range_is_one_clear_error_without_warnings():
    import warnings

    import pytest

    from cdi_plugins import CDIError
    from cdi_plugins.core.state import Problem
    a = np.ones((8, 8, 8))
    a[4, 4, 4] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no RuntimeWarning from an overflowing cast
        with pytest.raises(CDIError, match=r"big.npy: intensity values up to 1e\+39 exceed the float32 range"):
            Problem.from_array(a, source="big.npy")
        assert Problem.from_array(a / 1e30, source="ok.npy").intensity.max() == pytest.approx(1e9)


def test_a_float64_file_beyond_float32_range_names_the_file(tmp_path, capsys):
    from cdi_plugins.cli import main
    a = np.ones((8, 8, 8))
    a[4, 4, 4] = 1e39
    np.save(tmp_path / "big.npy", a)
    (tmp_path / "r.yaml").write_text("data: {path: big.npy}\nsteps: 5*ER\n")
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o.cxi")]) == 2
    err = capsys.readouterr().err
    assert "big.npy: intensity values up to 1e+39 exceed the float32 range" in err
    assert "NaN" not in err and err.count("\n") == 1
