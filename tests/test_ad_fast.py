"""The AD refiner's CPU fast path (numba kernels, no autograd) against the autograd path it replaces."""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdi_plugins import CDIError  # noqa: E402
from cdi_plugins.core.state import Problem  # noqa: E402
from cdi_plugins.algorithms.ad import model as ad_model  # noqa: E402
from cdi_plugins.algorithms.ad import optimizers as ad_optimizers  # noqa: E402
from cdi_plugins.algorithms.ad import plugin as ad  # noqa: E402
from cdi_plugins.algorithms.ad.refiner import Refiner  # noqa: E402
from tests.test_ad_helpers import ctx, noisy, one_thread, params, rel, truth_state  # noqa: E402,F401

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def kernels():
    k = ad_model._import_kernels()
    if k is None:
        pytest.skip("numba is not installed: no fast path")
    return k


def _problem(n, masked, rng):
    """Random data with (optionally) masked and free pixels, and a random object on a random support."""
    intensity = rng.random((n, n, n)) ** 4 * 1e4
    mask = rng.random((n, n, n)) < 0.1 if masked else None
    free = (rng.random((n, n, n)) < 0.1) & ~mask if masked else None
    unc = (mask | free) if masked else None
    support = torch.from_numpy(rng.random((n, n, n)) < 0.5)
    p = torch.from_numpy(rng.normal(size=(n, n, n, 2)).astype(np.float32)) * support[..., None]
    return intensity, unc, free, p


def _autograd(model, p, loss, gain):
    q = p.clone().requires_grad_(True)
    val, info = model.evaluate(q, loss)
    grad = torch.autograd.grad(val * gain, q)[0]
    return float(val.detach()), {k: None if v is None else float(v) for k, v in info.items()}, grad


@pytest.mark.parametrize("loss", ad_model.FAST_LOSSES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("crop", [None, (12, 12, 12)])
def test_fast_path_equals_autograd(kernels, loss, masked, crop):
    """Loss, chi^2, chi2_free, the scales and the gradient of the fast path are autograd's, to float32
    rounding: both are compared with the float64 autograd evaluation of the same float32 object."""
    rng = np.random.default_rng(7)
    n = 16 if crop is None else 12
    intensity, unc, free, p = _problem(16, masked, rng)
    p = p[:n, :n, :n].contiguous()
    gain = 321.0
    m32 = ad_model._Model(intensity, unc, free, CPU, torch.float32, crop=crop)
    m64 = ad_model._Model(intensity, unc, free, CPU, torch.float64, crop=crop)
    ref_loss, ref_info, ref_grad = _autograd(m64, p.double(), loss, gain)
    ag_loss, ag_info, ag_grad = _autograd(m32, p, loss, gain)
    f_loss, f_info, g = m32.evaluate_fast(torch.view_as_complex(p.clone()), loss, gain, kernels)
    f_grad = torch.view_as_real(g)
    assert f_grad.dtype == torch.float32 and f_grad.shape == p.shape
    assert (f_info["chi_free"] is None) == (ref_info["chi_free"] is None) == (not masked)
    tol = 2e-5
    assert f_loss == pytest.approx(ref_loss, rel=tol)
    for key in ("chi", "chi_free", "s", "eta", "fix"):
        if ref_info[key] is not None:
            assert f_info[key] == pytest.approx(ref_info[key], rel=tol), key
            assert ag_info[key] == pytest.approx(ref_info[key], rel=tol), key     # the tolerance is float32's
    assert m32.scale(p, kernels) == pytest.approx(ref_info["s"], rel=tol)      # the fit alone
    err_fast = rel(f_grad.double().numpy(), ref_grad.numpy())
    err_autograd = rel(ag_grad.double().numpy(), ref_grad.numpy())
    assert err_fast < tol and err_autograd < tol
    assert err_fast < 3 * err_autograd + 1e-6


def test_fast_path_gradient_is_zero_at_unconstrained_pixels_and_a_zero_far_field(kernels):
    """Masked and free pixels add nothing to the gradient; a zero object gives a zero gradient (no NaN)."""
    rng = np.random.default_rng(3)
    intensity, unc, free, p = _problem(8, True, rng)
    model = ad_model._Model(intensity, unc, free, CPU, torch.float32)
    loss, info, g = model.evaluate_fast(torch.zeros(8, 8, 8, dtype=torch.complex64), "amplitude", 1.0, kernels)
    assert loss == pytest.approx(1.0) and info["s"] == 0.0 and torch.count_nonzero(g) == 0
    F = torch.fft.fftn(torch.view_as_complex(p.clone()))
    _, _, g = model.evaluate_fast(torch.view_as_complex(p.clone()), "amplitude", 1.0, kernels)
    # dL/dF back from the gradient: zero wherever the pixel is left out of the loss
    dF = torch.fft.fftn(g, norm="backward") / g.numel()
    unc_f = np.fft.ifftshift(unc)
    assert float(dF.abs()[torch.from_numpy(unc_f)].max()) < 1e-6 * float(dF.abs().max())
    assert float(F.abs()[torch.from_numpy(unc_f)].min()) > 0


def _refiner(prob, start, kind="amplitude", **over):
    values = params(**{"iterations": 12, "feedback_iterations": 6, "optimizer": "gd", "loss": kind,
                       "shrink_wrap_period": 4, "shrink_wrap_only_on_improvement": False, "plateau_patience": 0,
                       **over})
    return Refiner(prob, start, values, ctx(), CPU, "ad")


def test_the_fast_path_is_taken_only_where_it_applies(kernels, noisy, monkeypatch):
    prob = Problem.from_array(noisy["intensity"])
    start = truth_state(noisy)
    assert _refiner(prob, start).kernels is kernels
    assert _refiner(prob, start, "poisson").kernels is kernels
    assert _refiner(prob, start, "max_normalised").kernels is None
    assert _refiner(prob, start, tv_weight=0.01).kernels is None
    monkeypatch.setenv("CDI_PLUGINS_KERNELS", "numpy")
    assert _refiner(prob, start).kernels is None
    # a misspelt switch is an error here too, as in the iterative steps, not silently the fast path
    monkeypatch.setenv("CDI_PLUGINS_KERNELS", "nupmy")
    with pytest.raises(CDIError, match="unknown kernel implementation 'nupmy'"):
        _refiner(prob, start)


def test_without_numba_the_refiner_falls_back_to_autograd(noisy, monkeypatch):
    """numba is the ``fast`` extra: where it cannot be imported the step runs, on the autograd path."""
    monkeypatch.setitem(sys.modules, "numba", None)           # `import numba` raises ImportError
    monkeypatch.delitem(sys.modules, "cdi_plugins.algorithms.ad._kernels", raising=False)
    monkeypatch.delattr(sys.modules["cdi_plugins.algorithms.ad"], "_kernels", raising=False)
    ad_model._import_kernels.cache_clear()
    try:
        prob = Problem.from_array(noisy["intensity"])
        ref = _refiner(prob, truth_state(noisy))
        assert ref.kernels is None
        st = ref.run()
        assert len(st.history) == 12 and np.isfinite(st.history[-1]["chi2"])
    finally:
        ad_model._import_kernels.cache_clear()


@pytest.mark.parametrize("kind, feedback, optimizer", [("amplitude", 6, "gd"), ("poisson", 0, "adam"),
                                                      ("amplitude", 0, "lbfgs")])
def test_fast_and_autograd_runs_agree(kernels, noisy, monkeypatch, kind, feedback, optimizer):
    """A run with shrink-wrap and free pixels (and HIO feedback) gives the same history and object on both
    paths (to float32 rounding, grown over a few iterations).  Poisson with Adam: its HIO and its gd
    in the own step jump between chi^2 0.03 and 0.5 from this start, which parts the paths' last bits
    within a few iterations."""
    prob = Problem.from_array(noisy["intensity"], free_fraction=0.05, seed=3)
    t = noisy["truth"]
    rough = (t * np.exp(0.5j * np.random.default_rng(3).standard_normal(t.shape))).astype(np.complex64)
    fast = _refiner(prob, truth_state({"truth": rough}), kind, feedback_iterations=feedback, optimizer=optimizer)
    monkeypatch.setenv("CDI_PLUGINS_KERNELS", "numpy")
    slow = _refiner(prob, truth_state({"truth": rough}), kind, feedback_iterations=feedback, optimizer=optimizer)
    assert fast.kernels is kernels and slow.kernels is None
    a, b = fast.run(), slow.run()
    for key in ("chi2", "chi2_free", "loss"):
        ha, hb = (np.array([r[key] for r in st.history]) for st in (a, b))
        assert np.allclose(ha, hb, rtol=1e-3), key
    assert [r.get("support_fraction") for r in a.history] == [r.get("support_fraction") for r in b.history]
    assert rel(np.asarray(a.obj), np.asarray(b.obj)) < 1e-3


def test_fused_gd_and_feedback_updates_equal_the_torch_updates(kernels):
    rng = np.random.default_rng(5)
    shape = (6, 7, 8)
    mask = torch.from_numpy(rng.random(shape) < 0.4)
    p0, g, v0 = (torch.from_numpy(rng.normal(size=shape + (2,)).astype(np.float32)) for _ in range(3))
    # gd: the torch step with the projected gradient against the fused kernel on the support's voxels
    inside = mask[..., None]
    gd = ad_optimizers._GD(torch, p0 * inside, 0.7, 0.8)
    gd.v.copy_(v0 * inside)
    gd.p.grad = g * inside
    gd.step(1.3)
    p, v = p0 * inside, v0 * inside
    kernels.gd(p.numpy().reshape(-1), g.numpy().reshape(-1), v.numpy().reshape(-1),
               np.flatnonzero(mask.numpy()), np.float32(-1.3 * 0.7), np.float32(0.8))
    assert torch.allclose(p, gd.p, rtol=1e-6, atol=1e-6) and torch.allclose(v, gd.v, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(p * ~inside) == 0
    # feedback: P = (c g + x) fix; x <- P in the support, x - beta P outside
    c, fix, beta = -0.3, 1.7, 0.9
    x = torch.view_as_complex(p0.clone())
    proj = (torch.view_as_complex(g) * c + x) * fix
    want = torch.where(mask, proj, x - beta * proj)
    xr = p0.clone()
    kernels.feedback(xr.numpy().reshape(-1), g.numpy().reshape(-1), mask.numpy().reshape(-1), np.float32(c),
                     np.float32(fix), np.float32(beta))
    assert torch.allclose(torch.view_as_complex(xr), want, rtol=1e-6, atol=1e-6)
    # the projection of the gradient onto the support
    gp = g.clone()
    kernels.project(gp.numpy().reshape(-1), mask.numpy().reshape(-1))
    assert torch.equal(gp, g * mask[..., None])


@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_fast_shrink_wrap_equals_the_torch_one(kernels, sigma):
    rng = np.random.default_rng(11)
    x = torch.from_numpy((rng.normal(size=(12, 14, 16)) + 1j * rng.normal(size=(12, 14, 16))).astype(np.complex64))
    x *= 0.1
    x[3:9, 4:10, 5:12] *= 20
    fast = ad_model._shrink_wrap(x, sigma, 0.3, kernels)
    slow = ad_model._shrink_wrap(x, sigma, 0.3)
    assert fast.dtype == torch.bool and fast.shape == x.shape
    assert int((fast != slow).sum()) <= 2 and 0 < int(fast.sum()) < x.numel()      # the last bit may tip a tie
