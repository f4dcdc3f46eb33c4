"""Tests for the nn plugin's mapping module: a pattern onto the network grid and a prediction back."""

import numpy as np
import pytest

from cdi_plugins.algorithms.nn.mapping import OVERSAMPLING_PRESET, from_network, to_network
from cdi_plugins.compute.fourier import oversampling
from tests.helpers import box_pattern


def test_oversampling_estimate_and_network_grid():
    inten = box_pattern(64, (16, 20, 26))
    os_ = oversampling(inten, preset=OVERSAMPLING_PRESET)
    assert os_[0] > os_[1] > os_[2]
    assert 64 / 26 * 0.9 < os_[2] < 64 / 26 * 1.5
    x, c, _ = to_network(inten, target=2.0)
    assert x.shape == (32, 32, 32) and x.max() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(x), x.shape) == (16, 16, 16)
    assert c == round(32 * min(os_) / 2.0)
    # the network-grid object comes back onto the data grid with the right size
    obj32 = np.zeros((32, 32, 32), complex)
    w = round(26 * c / 64)                                     # extent in network voxels on axis 2
    obj32[12:20, 12:20, 16 - w // 2:16 - w // 2 + w] = 1
    back = np.abs(from_network(obj32, (64, 64, 64), c))
    ext = np.flatnonzero((back > 0.5).any(axis=(0, 1)))
    assert abs((ext[-1] - ext[0] + 1) - 26) <= 2


def test_masked_pixels_never_reach_the_network_and_a_given_oversampling_is_used():
    inten = box_pattern(64, (16, 20, 26))
    mask = np.zeros(inten.shape, bool)
    mask[40:44] = True
    hot, clean = inten.copy(), inten.copy()
    hot[mask], clean[mask] = 1e9, 0
    x, c, os_ = to_network(hot, mask, target=2.0)
    x0, c0, os0 = to_network(clean, target=2.0)
    assert c == c0 and os_ == os0 and np.array_equal(x, x0)
    x, c, os_ = to_network(inten, target=2.5, oversampling=(3.0, 4.0, 5.0))
    assert os_ == (3.0, 4.0, 5.0) and c == round(32 * 3.0 / 2.5)
    back = from_network(np.ones((32, 32, 32), np.complex64), (64, 48, 40), c)
    assert back.shape == (64, 48, 40) and back.dtype == np.complex64


def test_the_network_grid_is_map_coordinates_trilinear_interpolation():
    # the separable interpolation gives what scipy's map_coordinates(order=1, mode="constant") gave,
    # including crops whose grid starts half a pixel before the first one or ends beyond the last
    import scipy.ndimage

    from cdi_plugins.algorithms.nn.mapping import _linear_resample
    rng = np.random.default_rng(0)
    for c in (20, 31, 32, 43, 50, 70):
        a = rng.random((c, c, c)).astype(np.float32)
        coords = np.meshgrid(*[c // 2 + (np.arange(32) - 16) * (c / 32)] * 3, indexing="ij")
        ref = scipy.ndimage.map_coordinates(a, coords, order=1, mode="constant", cval=0.0)
        np.testing.assert_allclose(_linear_resample(a, 32), ref, atol=1e-6)


def test_the_prediction_comes_back_by_fourier_resampling():
    from cdi_plugins.compute.fourier import crop_pad, fourier_resample
    rng = np.random.default_rng(1)
    obj = (rng.normal(size=(32,) * 3) + 1j * rng.normal(size=(32,) * 3)).astype(np.complex64)
    for shape, c in (((64, 64, 64), 43), ((64, 48, 40), 20), ((64, 64, 64), 70)):
        m = tuple(round(32 * n / c) for n in shape)
        ref = crop_pad(fourier_resample(obj, m), shape)
        back = from_network(obj, shape, c)
        assert back.dtype == np.complex64
        np.testing.assert_allclose(back, ref, atol=2e-6 * np.abs(ref).max())
