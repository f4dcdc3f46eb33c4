"""Tests for cdi_plugins.cli.render: the summary `cdi run` prints and the progress rendering."""

from __future__ import annotations

import numpy as np

from cdi_plugins.cli.render import Progress, preparation_lines, summary
from cdi_plugins.core.result import Result


def _result(**metadata):
    history = [{"step": 1, "algorithm": "er", "iteration": i + 1, "chi2": 0.1 / (i + 1)} for i in range(4)]
    steps = [{"step": 1, "algorithm": "er", "plugin": "iterative", "params": {}, "seconds": 0.5}]
    md = {"source": "x.npy", "backend": "numpy", "fft": "scipy", "threads": 1, "seed": 0, **metadata}
    return Result(obj=np.zeros((4, 4, 4), np.complex64), support=np.ones((4, 4, 4), bool), history=history,
                  timings=[0.5], steps=steps, metadata=md)


def test_a_single_run_summary_names_the_data_steps_and_final_chi2():
    text = summary(_result(), "out.cxi", 0.6, ["out.png"])
    lines = text.splitlines()
    assert lines[0] == "dataset default: 4x4x4 from x.npy, backend numpy (fft scipy, 1 FFT thread), seed 0"
    assert "     1  er                  4     0.500   2.500e-02" in lines
    assert lines[-2] == "  total: 4 iterations in 0.50 s (wall 0.60 s), final chi2 2.500e-02"
    assert lines[-1] == "  wrote out.cxi, out.png"


def test_an_averaged_summary_gives_the_chi2_of_the_object_written_and_every_run():
    r = _result(runs=3, run_scores=[0.03, 0.025, 0.04], best_run=2, averaged_runs=[2, 1], average_chi2=0.05)
    text = summary(r, None, 2.0)
    assert "best of 3 runs: kept run 2 (final chi2 of each: 3.000e-02, 2.500e-02, 4.000e-02)" in text
    assert "object written: mean of runs 2, 1 aligned to the best (its chi2 5.000e-02" in text
    assert text.splitlines()[-1].endswith("3 runs of 4 iterations in 0.50 s (wall 2.00 s), "
                                          "chi2 of the averaged object 5.000e-02")


def test_preparation_lines_warn_about_undersampling():
    lines = preparation_lines({"oversampling_estimate": [2.5, 1.8, 3.0]})
    assert lines == ["  oversampling estimate (autocorrelation): 2.50, 1.80, 3.00 per axis; below 2 on axis 1: "
                     "the pattern may be undersampled there (bin less, or expect ambiguous results)"]


def test_progress_is_silent_when_disabled():
    bar = Progress(10, "x", enabled=False)
    bar(step=1, algorithm="er", iteration=5, total=10, chi2=0.1)     # no bar, no error
    bar.close()
    assert bar.bar is None
