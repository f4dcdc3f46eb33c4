"""Tests for cdi_plugins.compute.fourier: the two oversampling presets, centred crop/pad, Fourier resampling."""

import math

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.compute.fourier import OVERSAMPLING_PRESETS, crop_pad, fourier_resample, oversampling
from cdi_plugins.physics.atomistic import atomistic_crystal
from cdi_plugins.physics.simulate import simulate_crystal
from tests.helpers import box_pattern


@pytest.fixture(scope="module")
def demo():
    """The pattern of configs/demo.yaml: 64^3, seed 1, 1e8 photons, Poisson noise."""
    return simulate_crystal(64, seed=1, counts=1e8, noise=True)["intensity"]


# --------------------------------------------------------------------------- oversampling presets

def test_each_preset_gives_the_figures_its_old_estimator_gave(demo):
    # what `cdi run configs/demo.yaml` prints ("2.78, 2.67, 2.91") came from prepare.oversampling_estimate;
    # the nn step's figures from nn.network.estimate_oversampling: both recorded before they merged
    assert oversampling(demo) == oversampling(demo, preset="blob") == (2.783, 2.667, 2.909)
    assert oversampling(demo, preset="smoothed") == (128 / 33, 128 / 35, 128 / 33)   # 3.88, 3.66, 3.88
    s = atomistic_crystal([42, 0], shape=64)            # with a detector gap, masked
    assert oversampling(s["intensity"], s["mask"], preset="blob") == (2.909, 2.37, 2.462)
    assert oversampling(s["intensity"], s["mask"], preset="smoothed") == (128 / 37, 128 / 41, 128 / 41)


def test_the_blob_preset_finds_a_box_exactly():
    inten = box_pattern(64, (16, 20, 26))
    assert oversampling(inten, preset="blob") == (4.0, 3.2, round(64 / 26, 3))
    smoothed = oversampling(inten, preset="smoothed")
    assert smoothed[0] > smoothed[1] > smoothed[2] > 64 / 26           # reads high, keeps the order
    assert all(isinstance(v, float) for v in smoothed)


def test_presets_are_only_their_settings():
    inten = box_pattern(32, (8, 10, 12))
    as_blob = dict(OVERSAMPLING_PRESETS["blob"])
    assert oversampling(inten, preset="smoothed", **as_blob) == oversampling(inten, preset="blob")
    # one setting changed, one figure changed: a lower threshold keeps more of the tails (smaller os)
    assert oversampling(inten, preset="smoothed", threshold=0.01) < oversampling(inten, preset="smoothed")


def test_masked_and_invalid_pixels_count_as_zero(demo):
    hot = demo.copy()
    hot[3, 5, 7] = 1e12                                             # an alien far from the peak
    mask = np.zeros(demo.shape, bool)
    mask[3, 5, 7] = True
    for preset in OVERSAMPLING_PRESETS:
        clean = demo.copy()
        clean[3, 5, 7] = 0
        assert oversampling(hot, mask, preset=preset) == oversampling(clean, preset=preset)
        bad = clean.copy()
        bad[3, 5, 7], bad[4, 5, 7] = np.nan, -1e9
        assert oversampling(bad, preset=preset) == oversampling(clean, preset=preset)
        assert all(math.isnan(v) for v in oversampling(np.zeros((8, 8, 8)), preset=preset))


def test_unknown_presets_and_settings_are_named():
    inten = box_pattern(16, (4, 4, 4))
    with pytest.raises(CDIError, match="unknown oversampling preset 'report'; known: blob, smoothed"):
        oversampling(inten, preset="report")
    with pytest.raises(CDIError, match=r"unknown oversampling setting\(s\) \['sigam'\]"):
        oversampling(inten, sigam=2)
    with pytest.raises(CDIError, match="threshold must be in"):
        oversampling(inten, threshold=1.5)
    with pytest.raises(CDIError, match="region must be one of central, all"):
        oversampling(inten, region="middle")


# --------------------------------------------------------------------------- crop / pad

def test_crop_pad_keeps_the_centre_pixel_at_the_centre():
    assert crop_pad(np.arange(10), (4,)).tolist() == [3, 4, 5, 6]
    assert crop_pad(np.arange(4), (6,)).tolist() == [0, 0, 1, 2, 3, 0]
    assert crop_pad(np.arange(5), (8,), value=-1).tolist() == [-1, -1, 0, 1, 2, 3, 4, -1]
    a = np.random.default_rng(0).random((7, 8, 9)).astype(np.float32)
    for shape in ((12, 8, 5), (3, 16, 9), (7, 8, 9)):
        out = crop_pad(a, shape)
        assert out.shape == shape and out.dtype == np.float32
        assert out[tuple(m // 2 for m in shape)] == a[3, 4, 4]
    np.testing.assert_array_equal(crop_pad(crop_pad(a, (20, 21, 22)), a.shape), a)   # pad, crop: the same


def test_crop_pad_around_another_pixel_and_off_the_data():
    a = np.arange(10)
    assert crop_pad(a, (4,), centre=(8,)).tolist() == [6, 7, 8, 9]
    assert crop_pad(a, (4,), value=-1, centre=(9,)).tolist() == [7, 8, 9, -1]
    with pytest.raises(CDIError, match="the window of 4 pixels around pixel 20 misses the data"):
        crop_pad(a, (4,), centre=(20,))


# --------------------------------------------------------------------------- Fourier resampling

def test_fourier_resampling_round_trips_and_keeps_the_centre():
    rng = np.random.default_rng(0)
    a = np.zeros((32, 32, 32), complex)
    a[8:24, 8:24, 8:24] = rng.normal(size=(16, 16, 16)) + 1j * rng.normal(size=(16, 16, 16))
    for shape in ((64, 64, 64), (48, 80, 40)):
        up = fourier_resample(a, shape)
        assert up.shape == shape and up.dtype == np.complex128
        assert np.allclose(fourier_resample(up, a.shape), a, atol=1e-10)
    d = np.zeros((32, 32, 32))
    d[16, 16, 16] = 1
    assert np.unravel_index(np.argmax(np.abs(fourier_resample(d, (64, 64, 64)))), (64,) * 3) == (32, 32, 32)


def test_fourier_resampling_keeps_values_not_energy():
    # values keep their scale: a constant stays that constant on any grid...
    np.testing.assert_allclose(fourier_resample(np.full((8, 8, 8), 2.5), (16, 12, 10)), 2.5, atol=1e-12)
    # ...so on a finer grid of the same field of view sum |a|^2 grows with the number of voxels
    rng = np.random.default_rng(1)
    a = np.zeros((32, 32, 32), complex)
    a[8:24, 8:24, 8:24] = rng.normal(size=(16, 16, 16))
    up = fourier_resample(a, (64, 48, 40))
    assert np.sum(np.abs(up) ** 2) == pytest.approx(np.sum(np.abs(a) ** 2) * 64 * 48 * 40 / 32 ** 3, rel=1e-12)
    # and a band-limited wave is interpolated exactly, centred at index n // 2
    x, y = np.arange(32), np.arange(48)
    wave = fourier_resample(np.exp(2j * np.pi * 3 * (x - 16) / 32), (48,))
    np.testing.assert_allclose(wave, np.exp(2j * np.pi * 3 * (y - 24) / 48), atol=1e-12)
