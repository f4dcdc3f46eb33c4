"""Tests of the AD refiner's forward model (algorithms/ad/model.py): gradients, total variation, grids."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdi_plugins.compute.metrics import chi2  # noqa: E402
from cdi_plugins.core.state import Problem  # noqa: E402
from cdi_plugins.algorithms.ad import model as ad_model  # noqa: E402
from cdi_plugins.algorithms.ad import plugin as ad  # noqa: E402
from tests.test_ad_helpers import N, noisy, one_thread, rel  # noqa: E402,F401


# ------------------------------------------------------------------------------------ gradient

@pytest.mark.parametrize("loss", ad.LOSSES)
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_matches_finite_differences(loss, masked):
    """The custom autograd node (modulus, fitted scale, loss) and the TV term against finite differences."""
    rng = np.random.default_rng(0)
    n = 6
    intensity = rng.random((n, n, n)) * 10
    mask = rng.random((n, n, n)) < 0.1 if masked else None
    free = (rng.random((n, n, n)) < 0.1) & ~mask if masked else None
    unc = (mask | free) if masked else None
    model = ad_model._Model(intensity, unc, free, torch.device("cpu"), torch.float64)
    support = torch.from_numpy(rng.random((n, n, n)) < 0.6)
    box = ad_model._tv_box(support)
    p = (torch.from_numpy(rng.normal(size=(n, n, n, 2))) * support[..., None]).requires_grad_(True)
    for tv in (0.0, 0.3):
        # fast mode checks random directional derivatives: seconds instead of a full Jacobian
        assert torch.autograd.gradcheck(lambda q: model.evaluate(q, loss, tv, box)[0], (p,),
                                        eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    if not masked:               # and once element by element
        q = p.detach()[:4, :4, :4].clone().requires_grad_(True)
        small = ad_model._Model(intensity[:4, :4, :4], None, None, torch.device("cpu"), torch.float64)
        # rtol 1e-3: the Poisson floor eps makes its closed-form scale optimal only to ~1e-5
        assert torch.autograd.gradcheck(lambda v: small.evaluate(v, loss)[0], (q,), eps=1e-6, atol=1e-6,
                                        rtol=1e-3)


def test_total_variation_box_wraps_around_the_origin():
    """TV on the support's bounding box equals TV on the whole array, for a support split by the edges."""
    rng = np.random.default_rng(1)
    n = 16
    support = np.zeros((n, n, n), dtype=bool)
    support[-3:, :2, 5:9] = True
    support[:2, -2:, 5:9] = True
    x = torch.from_numpy((rng.normal(size=(n, n, n)) + 1j * rng.normal(size=(n, n, n))) * support)
    s = torch.from_numpy(support)
    box = ad_model._tv_box(s)
    assert [len(i) for i in box[0]] == [7, 6, 6] and box[1] == support.sum()
    assert float(ad_model._tv(x, box)) == pytest.approx(float(ad_model._tv(x, ad_model._tv_box(s, crop=False))), rel=1e-9)
    assert float(ad_model._tv(3 * x, box)) == pytest.approx(float(ad_model._tv(x, box)), rel=1e-9)   # scale-blind


# --------------------------------------------------------------------------------- coarse grid

def test_resample_down_and_up_keeps_a_band_limited_object():
    rng = np.random.default_rng(2)
    low = torch.from_numpy((rng.normal(size=(8, 10, 8)) + 1j * rng.normal(size=(8, 10, 8))).astype(np.complex64))
    up = ad_model._resample(low, (16, 20, 16))
    assert up.shape == (16, 20, 16)
    # the far field of the interpolated object is the coarse far field inside the crop, zero outside
    f_up = torch.fft.fftshift(torch.fft.fftn(up)).numpy()
    f_low = torch.fft.fftshift(torch.fft.fftn(low)).numpy() * (16 * 20 * 16) / (8 * 10 * 8)
    inner = (slice(4, 12), slice(5, 15), slice(4, 12))
    assert np.allclose(f_up[inner], f_low, atol=1e-3 * np.abs(f_low).max())
    outer = np.ones(f_up.shape, dtype=bool)
    outer[inner] = False
    assert np.abs(f_up[outer]).max() < 1e-4 * np.abs(f_low).max()
    back = ad_model._resample(up, (8, 10, 8))
    assert rel(back.numpy(), low.numpy()) < 1e-5
    assert ad_model._coarse_shape((64, 64, 48), 2.0) == (32, 32, 24)
    assert ad_model._coarse_shape((20, 64, 64), 4.0) == (8, 16, 16)


def test_coarse_model_chi2_is_that_of_the_interpolated_object(noisy):
    """On the coarse grid the recorded chi2 (and chi2_free) is the full pattern's chi2 of the object
    Fourier-interpolated onto the full grid: the history means the same thing in both stages."""
    prob = Problem.from_array(noisy["intensity"], free_fraction=0.05, seed=3)
    unc = prob.unconstrained
    t = torch.from_numpy(np.fft.ifftshift(noisy["truth"]))
    coarse = ad_model._Model(prob.intensity, unc, prob.free, torch.device("cpu"), torch.float64, crop=(16, 16, 16))
    full = ad_model._Model(prob.intensity, unc, prob.free, torch.device("cpu"), torch.float64)
    xc = ad_model._resample(t.to(torch.complex128), (16, 16, 16))
    xf = ad_model._resample(xc, (N, N, N))
    info_c = coarse.modulus(torch.fft.fftn(xc), "amplitude")[3]
    info_f = full.modulus(torch.fft.fftn(xf), "amplitude")[3]
    assert float(info_c["chi"]) == pytest.approx(float(info_f["chi"]), rel=1e-6)
    assert float(info_c["chi_free"]) == pytest.approx(float(info_f["chi_free"]), rel=1e-6)
    assert float(info_f["chi"]) > 10 * chi2(noisy["truth"], noisy["intensity"])   # the crop lost detail
