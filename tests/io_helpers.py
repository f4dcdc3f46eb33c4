"""Shared by the io tests: a small intensity cube, a file snapshot, a Result with every field set."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from cdi_plugins.core.result import Result

@pytest.fixture
def cube():
    rng = np.random.default_rng(1)
    return (rng.random((6, 7, 8)) * 100).astype(np.float32)


def snapshot(path):
    p = pathlib.Path(path)
    return p.read_bytes(), p.stat().st_mtime_ns


def make_result(shape=(8, 8, 8), truth=True):
    rng = np.random.default_rng(0)
    obj = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    support = rng.random(shape) > 0.5
    mask = np.zeros(shape, dtype=bool)
    mask[0, 0, :3] = True
    intensity = (rng.random(shape) * 10).astype(np.float32)
    return Result(
        obj=obj, support=support,
        history=[{"step": 1, "algorithm": "er", "iteration": 1, "chi2": 0.5},
                 {"step": 2, "algorithm": "hio", "iteration": 1, "chi2": 0.25,
                  "support_fraction": 0.125, "chi2_free": float("nan")}],
        timings=[0.1, 0.2],
        steps=[{"algorithm": "er", "params": {"iterations": 1}, "seconds": 0.1},
               {"algorithm": "hio", "params": {"iterations": 1, "beta": 0.9}, "seconds": 0.2}],
        intensity=intensity, mask=mask,
        metadata={"energy_kev": np.float64(9.0), "shape": np.array([8, 8, 8]),
                  "n": np.int64(3), "name": "au", "nested": {"pixel_m": 55e-6}},
        truth=obj * 2 if truth else None,
        recipe="steps: []\n", dataset="default", versions={"numpy": "x"})
