"""The fused elementwise kernels (compute/kernels.py) against the NumPy reference they replace."""

import numpy as np
import pytest

from cdi_plugins.compute import kernels as K
from cdi_plugins.errors import CDIError

HAVE_NUMBA = K.numba_status() == "ok"
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")

SHAPE = (24, 20, 18)
N = int(np.prod(SHAPE))


def _case(seed=0, n_unc=200):
    rng = np.random.default_rng(seed)
    F = ((rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)) * 300).astype(np.complex64)
    F.reshape(-1)[:5] = 0                                 # |F| = 0: no division by zero
    d = (np.abs(rng.standard_normal(SHAPE)) * 300).astype(np.float32)
    unc = np.sort(rng.choice(N, n_unc, replace=False)) if n_unc else None
    if unc is not None:
        d.reshape(-1)[unc] = 0
    dN = (d / np.float32(N)).astype(np.float32)
    inside = np.flatnonzero(rng.random(N) < 0.1)
    return F, d, dN, np.float32(1.0 / N), unc, inside


@needs_numba
@pytest.mark.parametrize("n_unc", [0, 200])
def test_numba_modulus_matches_the_reference(n_unc):
    F, d, dN, inv_n, unc, _ = _case(n_unc=n_unc)
    ref, fast = F.copy(), F.copy()
    c_ref = K.project_modulus(K.KernelWork(np, SHAPE, False, impl="numpy"), ref, d, dN, inv_n, unc)
    c_fast = K.project_modulus(K.KernelWork(np, SHAPE, False, impl="numba"), fast, d, dN, inv_n, unc)
    # |F| may differ in the last bit (NumPy's hypot), chi^2 in its summation order (float32 vs float64)
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=0)
    assert abs(float(c_fast) - float(c_ref)) <= 1e-5 * float(c_ref)
    # the modulus is now the data where constrained, F / N untouched where not
    a = np.abs(fast).reshape(-1) * N
    constrained = np.ones(N, bool)
    if unc is not None:
        constrained[unc] = False
        np.testing.assert_array_equal(fast.reshape(-1)[unc], F.reshape(-1)[unc] * inv_n)
    keep = constrained & (np.arange(N) >= 5)
    np.testing.assert_allclose(a[keep], d.reshape(-1)[keep], rtol=1e-5)
    exact = np.sum((np.abs(F.astype(np.complex128)).reshape(-1) - d.reshape(-1))[constrained] ** 2)
    assert abs(float(c_fast) - exact) <= 1e-6 * exact


@needs_numba
@pytest.mark.parametrize("ca,cb", [(None, None), (1.0, -0.9), (0.75, -0.5)])
def test_numba_update_is_bitwise_the_reference(ca, cb):
    F, _, _, _, _, inside = _case()
    p = np.roll(F, 3)
    ref, fast, fast_mask = F.copy(), F.copy(), F.copy()
    K.update_object(K.KernelWork(np, SHAPE, ca is not None, impl="numpy"), ref, p, ca, cb, inside)
    K.update_object(K.KernelWork(np, SHAPE, ca is not None, impl="numba"), fast, p, ca, cb, inside)
    mask = np.zeros(SHAPE, bool)
    mask.reshape(-1)[inside] = True
    K.update_object(K.KernelWork(np, SHAPE, ca is not None, impl="numba"), fast_mask, p, ca, cb, mask)
    ref_mask = F.copy()
    K.update_object(K.KernelWork(np, SHAPE, ca is not None, impl="numpy"), ref_mask, p, ca, cb, mask)
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(fast_mask, ref)   # the support as a boolean mask: the same result
    np.testing.assert_array_equal(ref_mask, ref)


@needs_numba
def test_numba_chi2_does_not_depend_on_the_thread_count():
    F, d, dN, inv_n, unc, _ = _case()
    out = []
    for threads in (1, 2, 3):
        G = F.copy()
        chi = K.project_modulus(K.KernelWork(np, SHAPE, False, impl="numba", threads=threads), G, d, dN, inv_n, unc)
        out.append((float(chi), G.tobytes()))
    assert out[0] == out[1] == out[2]


@needs_numba
@pytest.mark.parametrize("threads", [1, 3])
def test_numba_shrink_wrap_passes_are_bitwise_the_numpy_ones(threads):
    """Shrink-wrap's fused passes (|a| into a complex buffer, the separable Gaussian formed on the fly, the
    threshold against the maximum) give the bits of the same operations written with NumPy on the 3-D kernel
    (|a| as sqrt(re^2 + im^2) in float32), on any thread count."""
    from cdi_plugins.compute.fourier import full_from_half
    from cdi_plugins.compute.support import _kernel_numpy, gaussian_factors
    rng = np.random.default_rng(5)
    a = (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE)).astype(np.complex64)
    work = K.KernelWork(np, SHAPE, False, impl="numba", threads=threads)
    c = np.empty_like(a)
    K.abs_into(work, c, a)
    assert np.array_equal(c.real, np.sqrt(a.real * a.real + a.imag * a.imag)) and not c.imag.any()
    K.scale_separable(work, c, gaussian_factors(SHAPE, 1.3))
    ref = np.sqrt(a.real * a.real + a.imag * a.imag) * full_from_half(_kernel_numpy(SHAPE, 1.3), SHAPE)
    assert np.array_equal(c.real, ref)
    k = full_from_half(_kernel_numpy(SHAPE, 0.7), SHAPE)
    c2 = c.copy()
    K.scale_by(work, c2, k)
    assert np.array_equal(c2.real, ref * k)
    assert np.array_equal(K.above_fraction(work, c, 0.3), ref > 0.3 * ref.max())
    with pytest.raises(ValueError, match="factors of sizes"):
        K.scale_separable(work, c, gaussian_factors((8, 8, 8), 1.0))
    with pytest.raises(CDIError, match="numba kernels only"):
        K.abs_into(K.KernelWork(np, SHAPE, False, impl="numpy"), c, a)


@needs_numba
def test_a_changed_support_is_picked_up():
    # the mask made from the indices is cached per support object: a new support must not reuse it
    F, _, _, _, _, inside = _case()
    w = K.KernelWork(np, SHAPE, True, impl="numba")
    x = F.copy()
    K.update_object(w, x, F, 1.0, -0.9, inside)
    x2 = F.copy()
    K.update_object(w, x2, F, 1.0, -0.9, inside[: inside.size // 2].copy())
    ref = F.copy()
    K.update_object(K.KernelWork(np, SHAPE, True, impl="numpy"), ref, F, 1.0, -0.9, inside[: inside.size // 2])
    np.testing.assert_array_equal(x2, ref)


def test_without_numba_the_reference_runs(monkeypatch):
    monkeypatch.setattr(K, "_numba_kernels", lambda: None)
    assert K.kernel_impl(np) == "numpy"
    assert K.KernelWork(np, (72, 72, 72), True).impl == "numpy"
    with pytest.raises(CDIError, match="numba"):
        K.KernelWork(np, SHAPE, True, impl="numba")


def test_numba_runs_where_it_pays(monkeypatch):
    # up to 64^3 an iteration is single-threaded and numba's start-up would not pay for itself
    assert K.KernelWork(np, (64, 64, 64), True).impl == "numpy"
    assert K.KernelWork(np, (72, 72, 72), True).impl == ("numba" if HAVE_NUMBA else "numpy")
    if HAVE_NUMBA:
        monkeypatch.setenv("CDI_PLUGINS_KERNELS", "numba")
        assert K.KernelWork(np, (8, 8, 8), True).impl == "numba"


def test_the_environment_can_force_the_reference(monkeypatch):
    monkeypatch.setenv("CDI_PLUGINS_KERNELS", "numpy")
    assert K.KernelWork(np, (72, 72, 72), True).impl == "numpy"
    monkeypatch.setenv("CDI_PLUGINS_KERNELS", "fortran")
    with pytest.raises(CDIError, match="fortran"):
        K.KernelWork(np, SHAPE, True)


@needs_numba
def test_an_unwritable_numba_cache_compiles_in_memory(monkeypatch):
    import importlib

    import numba

    from cdi_plugins.compute import _numba_kernels as nk
    real = numba.njit
    asked = []

    def njit(**kw):
        asked.append(kw.get("cache"))
        if kw.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")   # what a read-only install gives
        return real(**kw)

    monkeypatch.setattr(numba, "njit", njit)
    try:
        importlib.reload(nk)
        assert True in asked and False in asked
        F, d, dN, inv_n, unc, _ = _case()
        G = F.copy()
        dns = K.KernelWork(np, SHAPE, False).signed_dN(dN, unc)
        nk.KERNELS["modulus"][1](K._f32(G), d.reshape(-1), dns.reshape(-1), inv_n, np.float32(K.TINY),
                                 np.empty(K.NCHUNK))
        ref = F.copy()
        K.project_modulus(K.KernelWork(np, SHAPE, False, impl="numpy"), ref, d, dN, inv_n, unc)
        np.testing.assert_allclose(G, ref, rtol=1e-6)
    finally:
        monkeypatch.undo()
        importlib.reload(nk)
        K._numba_kernels.cache_clear()


def test_reconstruction_with_either_kernel_reaches_the_truth(monkeypatch, small_crystal):
    from cdi_plugins.compute.backend import get_backend
    from cdi_plugins.compute.metrics import compare_to_truth
    from cdi_plugins.core.registry import get_registry
    from cdi_plugins.core.state import Context, Problem
    problem = Problem.from_array(small_crystal["intensity"], truth=small_crystal["truth"], source="sim")
    reg = get_registry()
    errs, chis = {}, {}
    for impl in ("numpy", "numba" if HAVE_NUMBA else "auto"):
        monkeypatch.setenv("CDI_PLUGINS_KERNELS", impl)
        s = None
        for name, n in (("hio", 400), ("er", 50)):
            spec = reg.get(name)
            ctx = Context(backend=get_backend("numpy", fft="scipy", threads=1), rng=np.random.default_rng(0), step=1)
            s = spec.run(problem, s, spec.params.validate({"iterations": n}), ctx)
        errs[impl] = compare_to_truth(np.asarray(s.obj), problem.truth)["error"]
        chis[impl] = s.history[-1]["chi2"]
    assert all(e < 0.10 for e in errs.values()), errs
    assert all(c < 1e-3 for c in chis.values()), chis


@pytest.mark.gpu
@pytest.mark.parametrize("ca,cb", [(None, None), (1.0, -0.9), (0.75, -0.5)])
def test_cupy_kernels_match_the_reference(ca, cb):
    import cupy as cp
    F, d, dN, inv_n, unc, inside = _case()
    ref = F.copy()
    c_ref = K.project_modulus(K.KernelWork(np, SHAPE, False, impl="numpy"), ref, d, dN, inv_n, unc)
    w = K.KernelWork(cp, SHAPE, ca is not None)
    assert w.impl == "cupy"
    G = cp.asarray(F)
    chi = K.project_modulus(w, G, cp.asarray(d), cp.asarray(dN), inv_n, cp.asarray(unc))
    np.testing.assert_allclose(cp.asnumpy(G), ref, rtol=1e-6, atol=1e-12)
    assert abs(float(chi) - float(c_ref)) <= 1e-5 * float(c_ref)
    p = np.roll(ref, 3)
    x_ref = F.copy()
    K.update_object(K.KernelWork(np, SHAPE, ca is not None, impl="numpy"), x_ref, p, ca, cb, inside)
    x = cp.asarray(F)
    K.update_object(w, x, cp.asarray(p), ca, cb, cp.asarray(inside))
    np.testing.assert_allclose(cp.asnumpy(x), x_ref, rtol=1e-6, atol=1e-12)
