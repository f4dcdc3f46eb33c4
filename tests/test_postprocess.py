"""Tests for cdi_plugins.physics.postprocess: phase ramp, centring, unwrapping, displacement and strain."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.compute.metrics import far_field, twin
from cdi_plugins.physics.postprocess import (Geometry, centre_object, phase_gradient, postprocess, remove_phase_ramp,
                                     unwrap_phase, validate_geometry)
from cdi_plugins.recipe import load_recipe
from cdi_plugins.physics.simulate import simulate_crystal

GOLD = {"hkl": [1, 1, 1], "lattice_constant": 4.078, "energy": 9.0, "voxel_size": 10.0}


def strained(truth_amp: np.ndarray, strain: float, geometry: Geometry, axis: int = 0) -> np.ndarray:
    """An object with a uniform strain along *axis*: phase = |Q| * strain * x (x in Angstrom)."""
    x = (np.arange(truth_amp.shape[axis]) - truth_amp.shape[axis] // 2) * geometry.voxel_size[axis] * 10.0
    shape = [1, 1, 1]
    shape[axis] = -1
    phi = geometry.q_norm * strain * x.reshape(shape)
    return (truth_amp * np.exp(1j * phi)).astype(np.complex64)


@pytest.fixture(scope="module")
def crystal():
    """A 32^3 simulated crystal (noise free) and its true support."""
    sim = simulate_crystal(32, seed=0, counts=1e9, noise=False)
    return sim["truth"], sim["support"]


# --------------------------------------------------------------------------- strain


def test_uniform_strain_of_a_known_object_is_exact(crystal):
    truth, support = crystal
    geo = Geometry.from_dict(GOLD)
    obj = strained(np.abs(truth), 3e-3, geo)     # 0.8 rad per voxel
    before = obj.copy()
    p = postprocess(obj, support, geo, remove_ramp=False)
    np.testing.assert_array_equal(obj, before)                 # input untouched
    assert p.strain[p.strain_valid].mean() == pytest.approx(3e-3, rel=1e-3)
    assert p.strain[p.strain_valid].std() < 1e-5
    # the phase wraps several times across the crystal; unwrapped, it is a clean ramp
    assert np.ptp(p.phase[p.support]) > 2 * math.pi
    assert p.info["unwrapped"] > 0


def test_uniform_strain_comes_out_of_a_reconstruction_within_5_percent(crystal):
    """Reconstruct the diffraction of a uniformly strained crystal; its strain must come back."""
    truth, _ = crystal
    geo = Geometry.from_dict(GOLD)
    obj = strained(np.abs(truth), 2e-3, geo)   # 0.53 rad per voxel: the Bragg peak is 2.7 pixels off centre
    intensity = (np.abs(far_field(obj)) ** 2).astype(np.float32)
    recipe = {"data": {"path": "<array>"}, "seed": 0, "threads": 1, "runs": 2,
              "steps": "2*(20*ER+100*HIO)+50*ER", "geometry": GOLD}
    result = cdi_plugins.run(recipe, data=intensity)
    assert result.chi2 < 1e-3
    p = postprocess(result.obj, result.support, geo, remove_ramp=False)
    assert p.strain[p.strain_valid].mean() == pytest.approx(2e-3, rel=0.05)
    # with the ramp removed (the default) the strain is relative to the crystal's mean lattice
    p0 = postprocess(result.obj, result.support, geo)
    assert abs(p0.strain[p0.strain_valid].mean()) < 1e-4


def test_strain_of_the_twin_is_the_same(crystal):
    truth, support = crystal
    geo = Geometry.from_dict(GOLD)
    obj = strained(np.abs(truth), -1.5e-3, geo, axis=2)
    g = Geometry.from_dict({**GOLD, "q_direction": 2})
    a = postprocess(obj, support, g, remove_ramp=False)
    b = postprocess(twin(obj), twin(support.astype(np.complex64)).real > 0.5, g, remove_ramp=False)
    assert a.strain[a.strain_valid].mean() == pytest.approx(-1.5e-3, rel=1e-3)
    assert b.strain[b.strain_valid].mean() == pytest.approx(-1.5e-3, rel=1e-3)


def test_strain_follows_q_direction_and_voxel_size(crystal):
    truth, support = crystal
    geo = Geometry.from_dict(GOLD)
    obj = strained(np.abs(truth), 1e-3, geo, axis=1)
    along_0 = postprocess(obj, support, geo, remove_ramp=False)
    assert abs(along_0.strain[along_0.strain_valid].mean()) < 1e-6             # Q along axis 0 sees none
    diag = Geometry.from_dict({**GOLD, "q_direction": [0, 1, 1]})
    p = postprocess(obj, support, diag, remove_ramp=False)
    assert p.strain[p.strain_valid].mean() == pytest.approx(1e-3 / math.sqrt(2), rel=1e-3)
    # the same phase read with voxels twice as large is half the strain
    big = Geometry.from_dict({**GOLD, "voxel_size": [10, 20, 10], "q_direction": 1})
    p = postprocess(obj, support, big, remove_ramp=False)
    assert p.strain[p.strain_valid].mean() == pytest.approx(0.5e-3, rel=1e-3)


def test_displacement_is_phase_over_q(crystal):
    truth, support = crystal
    geo = Geometry.from_dict(GOLD)
    p = postprocess(truth, support, geo)
    assert geo.q_norm == pytest.approx(2 * math.pi * math.sqrt(3) / 4.078)
    np.testing.assert_allclose(p.displacement, p.phase / geo.q_norm, rtol=1e-6)
    # without a voxel size there is a displacement but no strain, and it says why
    p = postprocess(truth, support, {**GOLD, "voxel_size": None})
    assert p.displacement is not None and p.strain is None and "voxel_size" in p.info["note"]
    p = postprocess(truth, support)
    assert p.displacement is None and p.strain is None and "geometry" in p.info["note"]


# --------------------------------------------------------------------------- phase ramp, centring, phase offset


def test_phase_ramp_of_a_shifted_object_is_removed(crystal):
    """A Bragg peak k pixels off centre multiplies the object by exp(2 pi i k.r / N): removed again."""
    truth, support = crystal
    k = np.array([3.0, -2.0, 1.5])
    idx = np.indices(truth.shape)
    ramp = np.exp(2j * np.pi * sum(k[i] * idx[i] for i in range(3)) / 32)
    shifted = (truth * ramp).astype(np.complex64)
    ref = postprocess(truth, support)
    got = postprocess(shifted, support)
    expected = 2 * np.pi * k / 32 + np.array(ref.info["ramp"])
    np.testing.assert_allclose(got.info["ramp"], expected, atol=1e-4)
    s = ref.support
    assert np.sqrt(np.mean((got.phase[s] - ref.phase[s]) ** 2)) < 1e-3
    # without removal the phase would span many radians across the crystal
    kept = postprocess(shifted, support, remove_ramp=False)
    assert np.ptp(kept.phase[kept.support]) > 3 * np.ptp(ref.phase[s])


def test_ramp_removal_leaves_the_phase_near_flat_for_a_reconstruction():
    """A pattern whose peak is off the array centre reconstructs with a ramp; post-processing removes it."""
    sim = simulate_crystal(32, seed=1, counts=1e9, noise=False, phase_amplitude=0.3)
    rolled = np.roll(sim["intensity"], (2, -3, 1), axis=(0, 1, 2))
    result = cdi_plugins.run({"data": {"path": "<array>"}, "seed": 0, "threads": 1,
                              "steps": "2*(20*ER+100*HIO)+50*ER"}, data=rolled)
    raw = postprocess(result.obj, result.support, remove_ramp=False)
    flat = postprocess(result.obj, result.support)
    g = phase_gradient(*remove_phase_ramp(result.obj, result.support)[:1], result.support)
    assert np.abs([g[i][result.support].mean() for i in range(3)]).max() < 0.02   # rad / voxel
    assert np.ptp(flat.phase[flat.support]) < 2.0                                 # true peak-to-peak: 0.3
    assert np.ptp(raw.phase[raw.support]) > 4.0


def test_centring_puts_the_object_in_the_middle(crystal):
    truth, support = crystal
    moved = np.roll(truth, (9, -7, 5), axis=(0, 1, 2))
    msup = np.roll(support, (9, -7, 5), axis=(0, 1, 2))
    obj, sup, shift = centre_object(moved, msup)
    com = np.argwhere(sup).mean(axis=0)
    assert np.all(np.abs(com - 16) <= 0.5)
    assert shift == tuple(int(v) for v in np.round(16 - np.argwhere(msup).mean(axis=0)))
    p = postprocess(moved, msup, crop=False)
    assert np.all(np.abs(np.argwhere(p.support).mean(axis=0) - 16) <= 0.5)


def test_phase_is_zero_at_the_centre_of_mass(crystal):
    truth, support = crystal
    p = postprocess(truth * np.complex64(np.exp(2.5j)), support, crop=False)
    c = tuple(int(round(v)) for v in np.argwhere(p.support).mean(axis=0))
    assert abs(p.phase[c]) < 0.05
    # the global phase of the input does not matter
    q = postprocess(truth, support, crop=False)
    np.testing.assert_allclose(p.phase[p.support], q.phase[q.support], atol=1e-4)


def test_crop_keeps_the_object_and_a_margin(crystal):
    truth, support = crystal
    p = postprocess(truth, support, margin=2)
    full = postprocess(truth, support, crop=False)
    extent = [np.ptp(np.flatnonzero(full.support.any(axis=tuple(j for j in range(3) if j != a)))) + 1
              for a in range(3)]
    assert p.amplitude.shape == tuple(e + 4 for e in extent)
    assert p.support.sum() == full.support.sum()
    box = tuple(slice(o, o + n) for o, n in zip(p.origin, p.amplitude.shape))
    np.testing.assert_array_equal(full.phase[box], p.phase)
    assert p.amplitude.dtype == p.phase.dtype == np.float32 and p.amplitude.max() == 1.0


# --------------------------------------------------------------------------- unwrapping


def test_unwrap_recovers_a_phase_spanning_several_turns():
    n = 40
    idx = np.indices((n, n, n)).astype(np.float64) - n // 2
    r2 = (idx ** 2).sum(axis=0)
    sup = r2 < 15 ** 2
    phi = 0.03 * r2 + 0.3 * idx[1]               # up to ~11 rad: wraps in rings
    obj = (sup * np.exp(1j * phi)).astype(np.complex64)
    got = unwrap_phase(obj, sup, root=(n // 2,) * 3)
    err = (got - phi)[sup]
    assert np.abs(err - err.mean()).max() < 1e-3
    turns = (got - np.angle(obj))[sup] / (2 * np.pi)
    np.testing.assert_allclose(turns, np.round(turns), atol=1e-3)   # only whole turns were added
    assert np.unique(np.round(turns)).size >= 3
    assert (got[~sup] == 0).all()


def test_unwrap_leaves_an_unwrapped_phase_alone(crystal):
    truth, support = crystal                       # simulated phase spans 1 rad: nothing to unwrap
    got = unwrap_phase(truth, support)
    np.testing.assert_allclose(got[support], np.angle(truth)[support], atol=1e-5)


def test_unwrap_handles_separate_parts():
    sup = np.zeros((20, 20, 20), dtype=bool)
    sup[2:6, 2:6, 2:6] = True
    sup[12:18, 12:18, 12:18] = True
    idx = np.indices(sup.shape)
    phi = 1.2 * idx[0]
    obj = (sup * np.exp(1j * phi)).astype(np.complex64)
    got = unwrap_phase(obj, sup)
    for part in (sup & (idx[0] < 10), sup & (idx[0] >= 10)):
        d = (got - phi)[part]
        assert np.ptp(d) < 1e-4


# --------------------------------------------------------------------------- geometry errors


@pytest.mark.parametrize("change, words", [
    ({"hkl": [0, 0, 0]}, ["hkl", "0 0 0"]),
    ({"hkl": [1, 1]}, ["hkl", "3 integers"]),
    ({"hkl": [1.5, 1, 1]}, ["hkl", "3 integers"]),
    ({"lattice_constant": -4.078}, ["lattice_constant", "-4.078"]),
    ({"lattice_constant": 0}, ["lattice_constant"]),
    ({"lattice_constant": 4078}, ["lattice_constant", "Angstrom"]),
    ({"lattice_constant": "gold"}, ["lattice_constant", "number"]),
    ({"energy": 2.0}, ["energy", "cannot be reached", "wavelength"]),
    ({"energy": 9000}, ["energy", "eV"]),
    ({"energy": -9}, ["energy"]),
    ({"voxel_size": -10}, ["voxel_size"]),
    ({"voxel_size": [10, 10]}, ["voxel_size", "3"]),
    ({"q_direction": 3}, ["q_direction", "0, 1 or 2"]),
    ({"q_direction": [0, 0, 0]}, ["q_direction", "no direction"]),
    ({"lattice": 4.0}, ["unknown key 'lattice'", "lattice_constant"]),
])
def test_bad_geometry_gives_a_clear_located_error(change, words):
    geo = {**GOLD, **change}
    with pytest.raises(CDIError) as info:
        validate_geometry(geo, lambda key=None: f"HERE.{key}")
    msg = str(info.value)
    assert msg.startswith("HERE."), msg
    for w in words:
        assert w in msg, msg


def test_missing_hkl_or_lattice_constant():
    with pytest.raises(CDIError, match="needs hkl"):
        validate_geometry({"lattice_constant": 4.078})
    with pytest.raises(CDIError, match="needs lattice_constant"):
        validate_geometry({"hkl": [1, 1, 1]})


def test_bad_geometry_in_a_recipe_names_the_line(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("data:\n  simulate: {shape: 32}\nsteps: 5*ER\ngeometry:\n  hkl: [1, 1, 1]\n"
                 "  lattice_constant: -4.078\n")
    with pytest.raises(CDIError) as info:
        load_recipe(str(p))
    assert str(info.value).startswith(f"{p}:6: geometry.lattice_constant:"), str(info.value)
    p.write_text("data:\n  simulate: {shape: 32}\nsteps: 5*ER\npostprocess: {unwrap: maybe}\n")
    with pytest.raises(CDIError, match=r"r.yaml:4: postprocess.unwrap: 'unwrap' must be true or false"):
        load_recipe(str(p))


def test_geometry_properties():
    g = Geometry.from_dict(GOLD)
    assert g.d_spacing == pytest.approx(4.078 / math.sqrt(3))
    assert g.wavelength == pytest.approx(1.3776, rel=1e-4)
    assert 2 * g.bragg_angle == pytest.approx(34.02, abs=0.01)
    assert g.voxel_size == (10.0, 10.0, 10.0)
    assert Geometry.from_dict(g.as_dict()) == g


def test_postprocess_errors(crystal):
    truth, support = crystal
    with pytest.raises(CDIError, match="support is empty"):
        postprocess(truth, np.zeros_like(support))
    with pytest.raises(CDIError, match="does not match"):
        postprocess(truth, support[:-1])
    bad = truth.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(CDIError, match="NaN"):
        postprocess(bad, support)


def test_weak_voxels_are_left_out_of_the_maps(crystal):
    truth, support = crystal
    obj = truth.copy()
    sup = support.copy()
    sup[2, 2, 2] = True                               # a stray support voxel with almost no density
    obj[2, 2, 2] = 1e-3 * np.abs(truth).max() * np.exp(3j)
    everything = postprocess(obj, sup, amplitude_threshold=0, crop=False, centre=False)
    assert everything.support.sum() == sup.sum()
    p = postprocess(obj, sup, crop=False, centre=False)          # default 0.1
    assert not p.support[2, 2, 2] and p.support.sum() < sup.sum()
    assert (p.amplitude[p.support] >= 0.1 - 1e-6).all()
