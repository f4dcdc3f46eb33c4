"""The cache-blocked iteration (compute/fused.py): MKL's transforms of planes and tiles with the modulus and the
update riding along.  Checked against a float64 NumPy iteration, across thread counts, and inside whole steps.
Skipped where Intel MKL (the pip package mkl) is not installed."""

import numpy as np
import pytest

from cdi_plugins.errors import CDIError

SHAPE = (72, 80, 90)      # above 64^3, so the mkl engine; not a cube, so no axis mix-up goes unseen


def _fused_or_skip():
    from cdi_plugins.compute import fused
    from cdi_plugins.compute.kernels import numba_status
    if fused._mkl() is None or numba_status() != "ok":
        pytest.skip(f"the cache-blocked loop cannot run here: {fused._status or numba_status()}")
    return fused


def _problem(shape, seed=1):
    """Random object, amplitudes, masked and free pixels, support (FFT order), as the iterative plugin
    prepares them: d is 0 at unconstrained pixels, dN = d / N."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    x0 = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    amp = np.abs(np.fft.fftn(rng.standard_normal(shape))).astype(np.float32)
    masked = rng.random(shape) < 0.05
    free = (rng.random(shape) < 0.05) & ~masked
    d = amp.copy()
    d[masked | free] = 0
    dN = (d / np.float32(n)).astype(np.float32)
    support = rng.random(shape) < 0.3
    return x0, amp, d, dN, masked, free, support


def _reference(x0, amp, d, unc, free, support, ca, cb):
    """One iteration in float64: x <- p inside, ca x + cb p outside (ER: 0), p = P_M(x)."""
    x = x0.astype(np.complex128)
    F = np.fft.fftn(x)
    a = np.abs(F)
    chi = float(((a - d) ** 2)[~unc].sum())
    chi_free = float(((a - amp) ** 2)[free].sum())
    F = np.where(unc, F, F * d / (a + 1e-20))
    p = np.fft.ifftn(F)
    out = np.where(support, p, 0 if ca is None else ca * x + cb * p)
    return out, p, chi, chi_free


def _loop(fused, shape, threads, d, dN, masked, free, amp):
    from cdi_plugins.compute.backend import Backend
    from cdi_plugins.compute.kernels import KernelWork
    be = Backend("numpy", fft="mkl", threads=threads)
    ws = be.workspace(shape)
    work = KernelWork(np, shape, feedback=True, threads=threads, impl="numba")
    unc_idx = np.flatnonzero(masked | free)
    fidx = np.flatnonzero(free)
    data = fused.FusedData(d, work.signed_dN(dN, unc_idx), fidx, amp.reshape(-1)[fidx])
    return ws, fused.FusedLoop(ws, data, work)


@pytest.mark.parametrize("ca,cb", [(None, None), (1.0, -0.9), (0.75, -0.5)])
def test_one_iteration_is_the_float64_iteration(ca, cb):
    fused = _fused_or_skip()
    x0, amp, d, dN, masked, free, support = _problem(SHAPE)
    ws, loop = _loop(fused, SHAPE, 2, d, dN, masked, free, amp)
    ws.x[...] = x0
    loop.start()
    kept = np.zeros(SHAPE, dtype=np.complex64)
    chi, chi_free = loop.iterate(ca, cb, support, keep_abs=kept, forward=False)
    want, p, chi_ref, free_ref = _reference(x0, amp, d, masked | free, free, support, ca, cb)
    scale = np.abs(want).max()
    assert np.abs(ws.x - want).max() / scale < 2e-6
    if ca is None:
        assert not np.any(ws.x[~support])            # ER: nothing outside the support
    assert chi == pytest.approx(chi_ref, rel=1e-5)
    assert chi_free == pytest.approx(free_ref, rel=1e-5)
    assert np.abs(kept.real - np.abs(p)).max() / np.abs(p).max() < 2e-6 and not np.any(kept.imag)


def test_iterations_chain_and_do_not_depend_on_the_thread_count():
    fused = _fused_or_skip()
    x0, amp, d, dN, masked, free, support = _problem(SHAPE, seed=2)
    results = []
    for threads in (1, 2, 3):
        ws, loop = _loop(fused, SHAPE, threads, d, dN, masked, free, amp)
        ws.x[...] = x0
        loop.start()
        chis = [loop.iterate(1.0, -0.9, support, forward=k < 2) for k in range(3)]
        results.append((ws.x.copy(), chis))
    for x, chis in results[1:]:
        assert np.array_equal(x.view(np.uint32), results[0][0].view(np.uint32))
        assert chis == results[0][1]
    # three chained iterations, against three float64 ones
    want = x0
    for _ in range(3):
        want, *_ = _reference(want, amp, d, masked | free, free, support, 1.0, -0.9)
    assert np.abs(results[0][0] - want).max() / np.abs(want).max() < 1e-5


def test_the_mode_follows_the_environment(monkeypatch):
    from cdi_plugins.compute import fused
    monkeypatch.delenv("CDI_PLUGINS_FUSED", raising=False)
    assert fused.fused_mode() == "auto"
    assert not fused.fused_enabled(fused.FUSED_MIN - 1) and fused.fused_enabled(fused.FUSED_MIN)
    monkeypatch.setenv("CDI_PLUGINS_FUSED", "on")
    assert fused.fused_enabled(72 ** 3)
    monkeypatch.setenv("CDI_PLUGINS_FUSED", "off")
    assert not fused.fused_enabled(fused.FUSED_MIN) and fused.fused_status().startswith("turned off")
    monkeypatch.setenv("CDI_PLUGINS_FUSED", "fast")
    with pytest.raises(CDIError, match="CDI_PLUGINS_FUSED='fast': use auto, on or off"):
        fused.fused_enabled(72 ** 3)


def _run_steps(problem, steps, monkeypatch, mode, params=None):
    """Run *steps* [(name, iterations)] with CDI_PLUGINS_FUSED=*mode*; returns (state, iterations the
    cache-blocked loop ran)."""
    from cdi_plugins.compute import fused
    from cdi_plugins.compute.backend import get_backend
    from cdi_plugins.core.registry import get_registry
    from cdi_plugins.core.state import Context
    monkeypatch.setenv("CDI_PLUGINS_FUSED", mode)
    calls = []
    real = fused.FusedLoop.iterate
    monkeypatch.setattr(fused.FusedLoop, "iterate", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    reg = get_registry()
    s = None
    for name, n in steps:
        spec = reg.get(name)
        ctx = Context(backend=get_backend("numpy", fft="mkl", threads=2), rng=np.random.default_rng(0), step=1)
        s = spec.run(problem, s, spec.params.validate({"iterations": n, **(params or {})}), ctx)
    return s, len(calls)


@pytest.fixture(scope="module")
def crystal72():
    from cdi_plugins.physics.simulate import simulate_crystal
    return simulate_crystal(72, seed=1, counts=1e9, noise=False)


def test_a_recipe_on_the_cache_blocked_loop_reaches_the_truth_as_the_unfused_one_does(monkeypatch, crystal72):
    _fused_or_skip()
    from cdi_plugins.compute.metrics import compare_to_truth
    from cdi_plugins.core.state import Problem
    problem = Problem.from_array(crystal72["intensity"], truth=crystal72["truth"], source="sim", free_fraction=0.05)
    steps = [("er", 20), ("hio", 200), ("er", 40)]     # shrink-wrap every 20: HIO's from the kept |p|
    out = {}
    for mode in ("on", "off"):
        s, n_fused = _run_steps(problem, steps, monkeypatch, mode)
        assert n_fused == (260 if mode == "on" else 0)
        out[mode] = (compare_to_truth(np.asarray(s.obj), problem.truth)["error"], s.history[-1])
    # measured: error 0.0131 (on) and 0.0132 (off), chi2 3.91e-5 and 3.93e-5, chi2_free 4.97e-5 and 5.03e-5
    for mode, (err, last) in out.items():
        assert err < 0.03, (mode, err)
        assert last["chi2"] < 1e-4 and 0 < last["chi2_free"] < 2e-4, (mode, last)
    assert out["on"][1]["chi2"] == pytest.approx(out["off"][1]["chi2"], rel=0.2)


def test_dm_and_active_options_run_unfused(monkeypatch, crystal72):
    _fused_or_skip()
    from cdi_plugins.core.state import Problem
    problem = Problem.from_array(crystal72["intensity"], source="sim")
    _, n = _run_steps(problem, [("dm", 3)], monkeypatch, "on")
    assert n == 0
    _, n = _run_steps(problem, [("hio", 3)], monkeypatch, "on", {"phc_iterations": 2})
    assert n == 0
    _, n = _run_steps(problem, [("raar", 3)], monkeypatch, "on")
    assert n == 3
