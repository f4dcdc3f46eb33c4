"""Support estimation shared by every algorithm: autocorrelation start and shrink-wrap.

All functions work on arrays of the given backend and are layout-agnostic where
they are convolutions (circular Gaussian smoothing is the same in centred and
FFT order).  The Gaussian is applied in Fourier space with one real FFT pair:
a spatial filter costs as much as a full FFT pair per call, which is where
cohere spends 26-62 % of its time.

Besides the support, the other things every iterative start needs: the seeded
random object (:func:`random_start`) and the data a step derives from a
Problem once and reuses in every later step (:func:`problem_cache`).
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["gaussian_kernel_rfft", "gaussian_factors", "smooth", "shrink_wrap", "shrink_wrap_kept",
           "autocorrelation_support", "support_fraction", "check_support_fraction", "random_start", "problem_cache"]


def _factor(freq: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-2 pi^2 sigma^2 f^2) of the frequencies *freq* in float32: one axis of the Fourier-space Gaussian."""
    c = np.float32(-2.0 * np.pi ** 2 * sigma ** 2)
    f = freq.astype(np.float32)
    return np.exp(c * f ** 2)


@functools.lru_cache(maxsize=32)
def _kernel_numpy(shape: tuple[int, int, int], sigma: float) -> np.ndarray:
    """exp(-2 pi^2 sigma^2 f^2) on the rfft grid of *shape* (float32)."""
    g0 = _factor(np.fft.fftfreq(shape[0]), sigma)
    g1 = _factor(np.fft.fftfreq(shape[1]), sigma)
    g2 = _factor(np.fft.rfftfreq(shape[2]), sigma)
    return (g0[:, None, None] * g1[None, :, None] * g2[None, None, :]).astype(np.float32)


@functools.lru_cache(maxsize=32)
def gaussian_factors(shape: tuple[int, int, int], sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Fourier-space Gaussian of :func:`gaussian_kernel_rfft` as its three 1-D factors on the full FFT grid
    (float32, host arrays): the kernel is ``(g0[i] * g1[j]) * g2[k]``, which fused passes form on the fly
    instead of reading (and building, once per sigma: ~140 ms at 256^3) a 3-D array."""
    return tuple(_factor(np.fft.fftfreq(int(n)), float(sigma)) for n in shape)


def gaussian_kernel_rfft(backend, shape, sigma: float):
    """Fourier-space Gaussian of standard deviation *sigma* pixels on *backend*."""
    k = _kernel_numpy(tuple(int(s) for s in shape), float(sigma))
    return k if backend.name == "numpy" else backend.asarray(k)


def smooth(backend, a, sigma: float):
    """Circular Gaussian smoothing of a real array (float32 out)."""
    if sigma <= 0:
        return a.astype(backend.xp.float32, copy=False)
    spec = backend.rfftn(a)
    spec *= gaussian_kernel_rfft(backend, a.shape, sigma)
    return backend.irfftn(spec, a.shape).astype(backend.xp.float32, copy=False)


def shrink_wrap(backend, obj, sigma: float, threshold: float):
    """New support: Gaussian-smoothed |obj| above *threshold* times its maximum.

    Where the backend's hot loop already holds a pyFFTW, mkl or torch :class:`Workspace` for this shape, the
    smoothing uses that workspace's transforms (:meth:`Workspace.smooth_abs`): at 128^3 a shrink-wrap then
    costs ~8 ms (pyFFTW) or ~15 ms (MKL: complex transforms, fused passes) instead of ~20 ms through
    scipy.fft.
    """
    xp = backend.xp
    ws = backend.existing_workspace(obj.shape)
    if ws is not None and ws.engine in ("pyfftw", "mkl", "torch") and sigma > 0:
        support = ws.smoothed_support(obj, gaussian_factors(tuple(obj.shape), float(sigma)), threshold)
        if support is not None:
            return support
        s = ws.smooth_abs(obj, gaussian_kernel_rfft(backend, obj.shape, sigma))
    else:
        s = smooth(backend, xp.abs(obj), sigma)
    return s > (threshold * s.max())


def shrink_wrap_kept(ws, sigma: float, threshold: float):
    """Shrink-wrap's new support from ``|obj| + 0j`` already in ``ws.smoothing_buffer()`` (the cache-blocked
    loop, :class:`~cdi_plugins.compute.fused.FusedLoop`, writes |p| there on the iterations that need it):
    the same smoothing and threshold as :func:`shrink_wrap`, without a pass to form |obj|."""
    factors = gaussian_factors(tuple(ws.shape), float(sigma)) if sigma > 0 else None
    support = ws.smoothed_support(None, factors, threshold)
    if support is None:
        raise RuntimeError("shrink_wrap_kept needs an mkl workspace with the numba kernels")
    return support


def autocorrelation_support(backend, intensity, threshold: float = 0.1, sigma: float = 1.0):
    """Initial support from the intensity autocorrelation.

    The autocorrelation of the object is |IFFT(I)|; its support is the object's
    support dilated to about twice the size, a safe starting point that
    shrink-wrap then tightens.  *intensity* is in FFT order (peak at index 0) and
    so is the returned support.  Masked pixels must already be zero.
    """
    xp = backend.xp
    ac = xp.abs(backend.ifftn(intensity.astype(xp.complex64)))
    ac = smooth(backend, ac, sigma)
    return ac > threshold * ac.max()


def support_fraction(support) -> float:
    return float(support.sum()) / support.size


def check_support_fraction(frac: float, min_fraction: float, max_fraction: float, where: str) -> None:
    """Stop a diverging support with a message that says which parameter to change.

    Raises
    ------
    CDIError
        If *frac* (support voxels / array voxels) is below *min_fraction*
        (collapsed) or above *max_fraction* (grew), located at *where*.
    """
    if frac < min_fraction:
        raise CDIError(f"the support collapsed to {frac:.2e} of the array (below support_min_fraction "
                       f"{min_fraction:g}); lower shrink_wrap_threshold or raise shrink_wrap_sigma", where)
    if frac > max_fraction:
        raise CDIError(f"the support grew to {frac:.2f} of the array (above support_max_fraction "
                       f"{max_fraction:g}); the reconstruction is diverging: raise shrink_wrap_threshold "
                       "or check the data's oversampling", where)


def random_start(rng: np.random.Generator, shape) -> np.ndarray:
    """A random complex object on the host (complex64): amplitude uniform in [0, 1), phase uniform.

    Drawn on the host from the step's seeded *rng* (``ctx.rng``), so that a seed gives the same
    start on every backend and device; move it to the device afterwards.
    """
    amp = rng.random(shape, dtype=np.float32)
    phase = rng.uniform(-np.pi, np.pi, shape).astype(np.float32)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


_problem_caches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def problem_cache(problem, key, build):
    """``build()`` the first time *key* is asked for on *problem*, the same object afterwards.

    For what a step derives from a Problem's data and every later step on it reuses (the data in
    FFT order on a device, say): best-of-N runs and multi-step recipes prepare it once.  The cache
    lives as long as *problem* (weakly keyed); *key* must be hashable and should name the caller
    (``("iterative", backend)``), since every plugin shares it.
    """
    per_problem = _problem_caches.setdefault(problem, {})
    value = per_problem.get(key)
    if value is None:
        value = per_problem[key] = build()
    return value
