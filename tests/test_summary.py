"""Tests for cdi_plugins.report.summary: judging a reconstruction, the one-line summary, comparing two."""

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.compute.metrics import twin
from cdi_plugins.report import compare, format_summary, summarize
from tests.helpers import made  # noqa: F401  (fixture)


def test_compare_finds_the_twin_and_a_shift(made):
    res = cdi_plugins.load(made / "res.cxi")
    moved = np.roll(twin(res.obj), (3, -1, 2), axis=(0, 1, 2))
    c = compare(moved, res)
    assert c["difference"] < 1e-3 and c["twin"]
    with pytest.raises(CDIError, match="different shapes"):
        compare(res.obj[:-1], res.obj)

def test_summarize_judges_a_reconstruction(made):
    res = cdi_plugins.load(made / "res.cxi")
    s = summarize(res)
    assert s["chi2_end"] < 0.1 * s["chi2_start"]
    assert s["components"] == 1 and 0 < s["support_fraction"] < 0.1
    assert s["iterations"] == 70


def test_format_summary_says_what_summarize_found_and_the_oversampling(made):
    res = cdi_plugins.load(made / "res.cxi")
    s = summarize(res)
    line = format_summary(res)
    assert "\n" not in line and line.startswith(f"chi2 {s['chi2_start']:.3e} -> {s['chi2_end']:.3e}")
    assert "in 70 iterations" in line and "1 connected component;" in line          # singular for one
    os_ = res.metadata["oversampling_estimate"]
    assert line.endswith("oversampling estimate " + ", ".join(f"{v:.2f}" for v in os_))
    res.metadata["oversampling_estimate"] = None
    assert "oversampling" not in format_summary(res)
