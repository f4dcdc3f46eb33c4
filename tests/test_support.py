"""Tests for cdi_plugins.compute.support: Gaussian smoothing, shrink-wrap, the autocorrelation support and the
support-fraction guard."""

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.compute.backend import get_backend
from cdi_plugins.compute.support import (autocorrelation_support, check_support_fraction, shrink_wrap, smooth,
                                         support_fraction)


def test_gaussian_smoothing_preserves_the_sum_and_spreads():
    be = get_backend("numpy")
    a = np.zeros((16, 16, 16), np.float32)
    a[0, 0, 0] = 1
    s = smooth(be, a, 2.0)
    assert s.dtype == np.float32
    assert s.sum() == pytest.approx(1.0, rel=1e-4)
    assert s[0, 0, 0] < 0.1 and s[1, 0, 0] > 0


def test_shrink_wrap_and_autocorrelation_support_find_the_object():
    be = get_backend("numpy")
    obj = np.zeros((32, 32, 32), np.complex64)
    obj[12:20, 12:20, 12:20] = 1
    sup = shrink_wrap(be, obj, 1.0, 0.2)
    assert sup[16, 16, 16] and not sup[0, 0, 0]
    assert 8 ** 3 <= sup.sum() <= 12 ** 3
    inten = np.abs(np.fft.fftn(obj)).astype(np.float32) ** 2  # FFT order, as the kernels use it
    ac = autocorrelation_support(be, inten, 0.1)
    assert ac[0, 0, 0] and ac.sum() > sup.sum()  # autocorrelation: about twice the object's size


def test_no_smoothing_returns_the_array_as_float32():
    be = get_backend("numpy")
    a = np.arange(27, dtype=np.float64).reshape(3, 3, 3)
    out = smooth(be, a, 0)
    assert out.dtype == np.float32 and np.array_equal(out, a)


def test_support_fraction_and_the_guard_name_the_parameter_to_change():
    s = np.zeros((8, 8, 8), bool)
    s[:2, :2, :2] = True
    assert support_fraction(s) == 8 / 512
    check_support_fraction(0.1, 0.001, 0.5, "step 2 (hio)")          # inside the bounds: nothing happens
    with pytest.raises(CDIError, match=r"^step 2 \(hio\): the support collapsed.*lower shrink_wrap_threshold"):
        check_support_fraction(1e-4, 1e-3, 0.5, "step 2 (hio)")
    with pytest.raises(CDIError, match=r"^step 3 \(er\): the support grew to 0.60.*raise shrink_wrap_threshold"):
        check_support_fraction(0.6, 1e-3, 0.5, "step 3 (er)")
