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
