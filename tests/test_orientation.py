"""Tests for cdi_plugins.report.orientation: one canonical orientation of the twin, and which rule chose it."""

from __future__ import annotations

import numpy as np
import pytest

from cdi_plugins.compute.metrics import twin
from cdi_plugins.physics.postprocess import postprocess
from cdi_plugins.physics.simulate import simulate_crystal
from cdi_plugins.report.orientation import AS_RECONSTRUCTED, canonical, orientation_statistic

GEOMETRY = {"hkl": [1, 1, 1], "lattice_constant": 4.078, "energy": 9.0, "voxel_size": 10}


@pytest.fixture(scope="module")
def crystal():
    d = simulate_crystal(32, seed=1, noise=False)
    obj = d["truth"] / np.abs(d["truth"]).max()
    return obj, np.abs(obj) > 0.05


def _support_twin(support):
    return twin(support.astype(np.complex64)).real > 0.5


def test_canonical_is_idempotent_and_leaves_its_input_alone(crystal):
    obj, sup = crystal
    p = postprocess(twin(obj), _support_twin(sup))
    before = p.amplitude.copy()
    c = canonical(p, obj.shape)
    assert canonical(c, obj.shape) is c
    np.testing.assert_array_equal(p.amplitude, before)
    assert "twin" not in p.info
    value, rule, details = orientation_statistic(c)
    assert value > 0 and rule == "phase curvature" and len(details["twin_curvatures"]) == 3


def test_flipping_negates_the_statistic_and_moves_the_origin(crystal):
    obj, sup = crystal
    p = postprocess(obj, sup, GEOMETRY)
    q = postprocess(twin(obj), _support_twin(sup), GEOMETRY)
    vp, vq = orientation_statistic(p)[0], orientation_statistic(q)[0]
    assert vp == pytest.approx(-vq, rel=1e-4)
    flipped = canonical(q if vq < 0 else p, obj.shape)
    kept = canonical(p if vq < 0 else q, obj.shape)
    assert flipped.origin == kept.origin
    np.testing.assert_allclose(flipped.strain, kept.strain, atol=1e-7)
    np.testing.assert_allclose(flipped.displacement, kept.displacement, atol=1e-5)


def test_a_flat_centrosymmetric_object_stays_as_reconstructed():
    obj = np.zeros((16, 16, 16), np.complex64)
    obj[5:11, 5:11, 5:11] = 1.0
    p = postprocess(obj, np.abs(obj) > 0)
    c = canonical(p, obj.shape)
    assert c.info["twin"] == AS_RECONSTRUCTED and c.info["twin_rule"] == "none"
