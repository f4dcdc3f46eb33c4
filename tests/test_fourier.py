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


def _oversampling_by_the_book(intensity, mask=None, *, threshold, sigma, region, width_offset, dtype, decimals):
    """The estimate computed the plain way (the full complex autocorrelation, shifted; ndimage's Gaussian
    filter and labelling), as it was before it moved to the Hermitian half grid."""
    import scipy.fft
    from scipy import ndimage
    a = np.array(intensity, dtype=dtype)
    if mask is not None:
        a[mask] = 0
    a = np.where(np.isfinite(a), np.maximum(a, 0), 0).astype(dtype)
    ac = np.abs(scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(a))))
    if sigma:
        ac = ndimage.gaussian_filter(ac, sigma, mode="wrap")
    above = ac > threshold * ac.max()
    if region == "central":
        labels, _ = ndimage.label(above)
        above = labels == labels[tuple(n // 2 for n in a.shape)]
    out = []
    for axis, n in enumerate(a.shape):
        idx = np.flatnonzero(above.any(axis=tuple(j for j in range(a.ndim) if j != axis)))
        os_ = 2.0 * n / (idx[-1] - idx[0] + 1 + width_offset)
        out.append(round(os_, decimals) if decimals is not None else float(os_))
    return tuple(out)


def test_the_half_grid_estimate_gives_the_plain_computations_figures():
    # odd and even axes, masks, both presets, and sigmas whose kernel wraps round a short axis
    cases = [(simulate_crystal(n, seed=s, counts=1e8)["intensity"], None) for n, s in ((64, 3), (48, 7), (40, 11))]
    s = atomistic_crystal([5, 0], shape=64)
    cases.append((s["intensity"], s["mask"]))
    obj = np.zeros((15, 12, 9))
    obj[5:10, 4:8, 3:6] = np.random.default_rng(2).random((5, 4, 3))
    cases.append((np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj)))) ** 2, None))
    for inten, mask in cases:
        for preset, cfg in OVERSAMPLING_PRESETS.items():
            assert oversampling(inten, mask, preset=preset) == _oversampling_by_the_book(inten, mask, **cfg), preset
        cfg = dict(OVERSAMPLING_PRESETS["smoothed"], sigma=2.5, threshold=0.3)
        assert oversampling(inten, mask, preset="smoothed", sigma=2.5, threshold=0.3) == \
            _oversampling_by_the_book(inten, mask, **cfg)


def test_the_half_grid_gaussian_is_ndimages_on_the_full_grid():
    from scipy import ndimage

    from cdi_plugins.compute.fourier import _autocorrelation_half, full_from_half, _gaussian_wrap_half
    rng = np.random.default_rng(3)
    for shape in ((64, 64, 64), (9, 10, 7), (5, 6, 4), (16, 12, 11)):
        a = rng.random(shape).astype(np.float32)
        half = _autocorrelation_half(a)
        full = np.abs(np.fft.fftn(a)).astype(np.float32)
        np.testing.assert_allclose(full_from_half(half, shape), full, rtol=1e-5, atol=1e-5 * full.max())
        for sigma in (1.0, 2.0):
            ref = ndimage.gaussian_filter(full, sigma, mode="wrap")
            np.testing.assert_allclose(_gaussian_wrap_half(half, sigma, shape), ref[..., :half.shape[-1]],
                                       rtol=1e-5, atol=1e-6 * ref.max())


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
