"""Tests for cdi_plugins.compute.metrics: chi2 and compare_to_truth."""

import numpy as np
import pytest

from cdi_plugins.errors import CDIError
from cdi_plugins.compute.metrics import chi2, compare_to_truth, far_field, support_stats, twin
from cdi_plugins.physics.simulate import simulate_crystal


@pytest.fixture(scope="module")
def sim():
    return simulate_crystal(48, noise=False, seed=3, phase_amplitude=1.5)


@pytest.fixture(scope="module")
def truth(sim):
    return sim["truth"]


def fourier_shift(a, shift):
    """a translated by *shift* pixels (a(r - shift)) via a Fourier phase ramp."""
    f = np.fft.fftn(a)
    for ax, (n, s) in enumerate(zip(a.shape, shift)):
        k = np.fft.fftfreq(n).reshape([-1 if i == ax else 1 for i in range(a.ndim)])
        f = f * np.exp(-2j * np.pi * k * s)
    return np.fft.ifftn(f).astype(np.complex64)


# ----------------------------------------------------------------------------- chi2

def test_chi2_of_truth_on_its_own_data_is_zero(sim):
    assert chi2(sim["truth"], sim["intensity"]) < 1e-8


def test_chi2_is_invariant_to_what_phase_retrieval_cannot_see(sim):
    t, i = sim["truth"], sim["intensity"]
    assert chi2(t * np.exp(0.9j), i) < 1e-8
    assert chi2(np.roll(t, (3, -2, 5), axis=(0, 1, 2)), i) < 1e-8
    assert chi2(twin(t), i) < 1e-8


def test_chi2_of_wrong_object_is_large(sim):
    t, i = sim["truth"], sim["intensity"]
    other = simulate_crystal(48, noise=False, seed=9, phase_amplitude=3.0)["truth"]
    assert chi2(other, i) > 0.05
    assert chi2(2 * t, i) == pytest.approx(1.0, rel=1e-4)   # (2|F| - |F|)^2 / |F|^2
    rng = np.random.default_rng(0)
    scrambled = np.abs(t) * np.exp(2j * np.pi * rng.random(t.shape)).astype(np.complex64)
    assert chi2(scrambled, i) > 0.3


def test_chi2_formula_and_mask(sim):
    t, i = sim["truth"], sim["intensity"]
    obj = t * 1.1
    f = np.abs(far_field(obj)).astype(np.float64)
    a = np.sqrt(i.astype(np.float64))
    assert chi2(obj, i) == pytest.approx(np.sum((f - a) ** 2) / np.sum(a ** 2), rel=1e-5)
    # corrupt some pixels: masking them restores chi2 ~ 0
    bad = np.zeros(i.shape, dtype=bool)
    bad[24, 24, 20:28] = True
    bad[5, 7, 9] = True
    corrupted = i.copy()
    corrupted[bad] = 10 * i.max()
    assert chi2(t, corrupted) > 0.1
    assert chi2(t, corrupted, mask=bad) < 1e-8
    # mask excludes pixels from both sums
    expected = np.sum(((f - a) ** 2)[~bad]) / np.sum((a ** 2)[~bad])
    assert chi2(obj, i, mask=bad) == pytest.approx(expected, rel=1e-5)


def test_chi2_errors(sim):
    t, i = sim["truth"], sim["intensity"]
    with pytest.raises(CDIError, match="shape"):
        chi2(t[:-1], i)
    with pytest.raises(CDIError, match="mask"):
        chi2(t, i, mask=np.zeros((4, 4, 4), bool))
    with pytest.raises(CDIError, match="zero"):
        chi2(t, np.zeros_like(i))
    with pytest.raises(CDIError, match="zero"):
        chi2(t, i, mask=np.ones(i.shape, bool))


# ----------------------------------------------------------------------------- compare_to_truth

def test_compare_identical(truth):
    out = compare_to_truth(truth, truth)
    assert out["error"] < 1e-5
    assert out["twin"] is False
    assert np.allclose(out["shift"], 0, atol=1e-4)
    assert out["phase"] == pytest.approx(0, abs=1e-5)
    assert out["aligned"].dtype == np.complex64 and out["aligned"].shape == truth.shape
    assert isinstance(out["error"], float) and len(out["shift"]) == 3


def test_compare_global_phase(truth):
    out = compare_to_truth(truth * np.exp(0.7j).astype(np.complex64), truth)
    assert out["error"] < 1e-5
    assert out["phase"] == pytest.approx(0.7, abs=1e-5)
    np.testing.assert_allclose(out["aligned"], truth, atol=1e-4 * np.abs(truth).max())


def test_compare_integer_shift(truth):
    rec = np.roll(truth, (4, -3, 7), axis=(0, 1, 2))
    out = compare_to_truth(rec, truth)
    assert out["error"] < 1e-5
    assert out["twin"] is False
    np.testing.assert_allclose(out["shift"], (4, -3, 7), atol=1e-4)


def test_compare_subpixel_shift(truth):
    rec = fourier_shift(truth, (0.3, 0.0, 0.0))
    assert compare_to_truth(np.roll(rec, 0), truth)["error"] < 1e-3
    out = compare_to_truth(fourier_shift(truth, (0.3, -1.45, 2.2)) * np.exp(-2j).astype(np.complex64), truth)
    assert out["error"] < 1e-3
    np.testing.assert_allclose(out["shift"], (0.3, -1.45, 2.2), atol=1e-3)
    assert out["phase"] == pytest.approx(-2.0, abs=1e-3)
    # without sub-pixel refinement this would be far off: check it matters
    assert np.linalg.norm(rec - truth) / np.linalg.norm(truth) > 0.05


def test_compare_twin(truth):
    tw = twin(truth)
    # the twin is the point reflection about n//2: for even n, roll(flip, 1)
    np.testing.assert_array_equal(tw, np.conj(np.roll(np.flip(truth), 1, axis=(0, 1, 2))))
    # ... and gives the same diffraction pattern
    np.testing.assert_allclose(np.abs(far_field(tw)), np.abs(far_field(truth)),
                               atol=1e-4 * np.abs(far_field(truth)).max())
    out = compare_to_truth(tw, truth)
    assert out["error"] < 1e-5
    assert out["twin"] is True
    np.testing.assert_allclose(out["shift"], 0, atol=1e-4)
    # twin, shifted and with a phase offset
    out = compare_to_truth(np.roll(tw, (2, 0, -5), axis=(0, 1, 2)) * np.exp(1j).astype(np.complex64), truth)
    assert out["error"] < 1e-5 and out["twin"] is True
    # the twin is really different from the object (the phase is not symmetric)
    assert np.linalg.norm(tw - truth) / np.linalg.norm(truth) > 0.3


def test_compare_twin_odd_shape():
    t = simulate_crystal((33, 40, 35), noise=False, seed=2)["truth"]
    # reflection about n//2: index i -> (2 * (n // 2) - i) mod n on each axis
    idx = np.ix_(*[(2 * (n // 2) - np.arange(n)) % n for n in t.shape])
    np.testing.assert_array_equal(twin(t), np.conj(t[idx]))
    np.testing.assert_array_equal(twin(t), np.conj(np.roll(np.flip(t), (0, 1, 0), axis=(0, 1, 2))))
    out = compare_to_truth(twin(t), t)
    assert out["error"] < 1e-5 and out["twin"] is True
    np.testing.assert_allclose(out["shift"], 0, atol=1e-4)


def test_compare_different_object_is_large(truth):
    other = simulate_crystal(48, noise=False, seed=11, phase_amplitude=3.0, size=5)["truth"]
    other = other * (np.linalg.norm(truth) / np.linalg.norm(other))
    out = compare_to_truth(other, truth)
    assert out["error"] > 0.5
    rng = np.random.default_rng(1)
    noise = (rng.normal(size=truth.shape) + 1j * rng.normal(size=truth.shape)).astype(np.complex64)
    assert compare_to_truth(noise, truth)["error"] > 0.9


def test_compare_partial_error_and_scale(truth):
    rng = np.random.default_rng(2)
    pert = (rng.normal(size=truth.shape) + 1j * rng.normal(size=truth.shape)).astype(np.complex64)
    pert *= 0.1 * np.linalg.norm(truth) / np.linalg.norm(pert)
    out = compare_to_truth(truth + pert, truth)
    assert out["error"] == pytest.approx(0.1, rel=0.05)
    # scale: without it a factor 2 is a 100% error, with it zero
    assert compare_to_truth(2 * truth, truth)["error"] == pytest.approx(1.0, rel=1e-4)
    out = compare_to_truth(2 * np.exp(0.4j) * truth, truth, scale=True)
    assert out["error"] < 1e-5
    assert out["scale"] == pytest.approx(2.0, rel=1e-5)
    assert out["phase"] == pytest.approx(0.4, abs=1e-5)


def test_compare_with_support(sim, truth):
    s = sim["support"]
    rec = truth.copy()
    rec[~s] += 0.5 * np.abs(truth).max()       # garbage outside the support
    assert compare_to_truth(rec, truth)["error"] > 0.5
    assert compare_to_truth(rec, truth, support=s)["error"] < 1e-2
    assert compare_to_truth(truth, truth, support=s)["error"] < 1e-5


def test_compare_errors(truth):
    with pytest.raises(CDIError, match="shape"):
        compare_to_truth(truth[:, :, :-1], truth)
    with pytest.raises(CDIError, match="zero"):
        compare_to_truth(np.zeros_like(truth), truth)
    with pytest.raises(CDIError, match="zero"):
        compare_to_truth(truth, np.zeros_like(truth))
    with pytest.raises(CDIError, match="3-D"):
        compare_to_truth(truth[0], truth[0])
    with pytest.raises(CDIError, match="support"):
        compare_to_truth(truth, truth, support=np.ones((2, 2, 2), bool))
    bad = truth.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(CDIError, match="NaN"):
        compare_to_truth(bad, truth)


def test_support_stats_counts_parts_on_the_periodic_array():
    s = np.zeros((16, 16, 16), dtype=bool)
    s[0:3, 5:8, 5:8] = True
    s[14:16, 5:8, 5:8] = True          # the same object, cut by the array edge
    st = support_stats(s)
    assert st["components"] == 1 and st["voxels"] == 5 * 9
    s[8:10, 10:12, 1:3] = True
    st = support_stats(s)
    assert st["components"] == 2 and st["largest"] == pytest.approx(45 / 53)
