"""The elementwise passes of one projection iteration: fused kernels for the CPU and the GPU.

An iteration of every projection algorithm is an FFT pair plus two elementwise passes:

* :func:`project_modulus` replaces the Fourier amplitudes by the measured ones
  (in place on ``F``) and returns chi^2 over the constrained pixels;
* :func:`update_object` forms the next iterate from the projection ``p`` with
  the feedback ``x <- ca * x + cb * p`` outside the support and ``p`` inside.

Algorithms call these functions rather than spelling the passes out, so a
faster implementation of a pass serves every algorithm at once.  Three
implementations, chosen per :class:`KernelWork` (``work.impl``):

* ``numba`` (CPU, arrays above 64^3, when numba is installed): each pass is one multi-threaded
  sweep over the arrays (|F|, chi^2 and the new F in one read and one write of
  F; the update with the support read as a byte mask).  chi^2 is summed in
  float64 over a fixed number of chunks (independent of the thread count) and
  the chunk sums are added in a fixed order, so the result is the same bits on
  1 or 64 threads and under any load.  Compiled on first use and cached on disk
  (``cache=True``); where the cache cannot be written the kernels are compiled
  in memory, once per process.
* ``cupy`` (GPU): the same passes as CuPy ``ElementwiseKernel``s; chi^2 is a
  float64 CuPy sum of the per-pixel residuals (deterministic, no atomics).
* ``numpy``: the reference, a few whole-array NumPy operations on one thread;
  used up to 64^3 (where numba's start-up costs more than its passes save over
  a recipe), without numba, or with ``CDI_PLUGINS_KERNELS=numpy``.

All three compute every pixel of ``F`` and ``x`` with the same float32
operations; they differ in the last bit of |F| (NumPy uses hypot) and in the
summation order of chi^2.
"""

from __future__ import annotations

import functools
import logging
import os
import threading

import numpy as np

__all__ = ["KernelWork", "project_modulus", "update_object", "abs_into", "scale_by", "scale_separable",
           "above_fraction", "smoothed_support", "kernel_impl", "requested_kernels", "numba_status",
           "effective_threads",
           "TINY"]

log = logging.getLogger("cdi_plugins.kernels")

TINY = 1e-20      # added to |F| before dividing: no division by zero, the same for any |F| > 1e-13
NCHUNK = 256      # chi^2 partial sums: a fixed count, so the sum does not depend on the thread count (numba)
IMPLS = ("auto", "numba", "numpy", "cupy")


# --------------------------------------------------------------------------------------------
# numba kernels (compute/_numba_kernels.py), imported on first use: importing numba costs ~0.5 s,
# which `cdi validate` and runs up to 64^3 never need

_NUMBA_LOCK = threading.Lock()
_numba_error: str | None = None


@functools.lru_cache(maxsize=None)
def _numba_kernels():
    """{name: (parallel, serial)} compiled kernels, or None without numba."""
    global _numba_error
    try:
        from cdi_plugins.compute import _numba_kernels as nk
    except Exception as exc:  # not installed, or a broken install
        _numba_error = f"numba is not usable ({exc.__class__.__name__}: {exc}); pip install 'cdi-plugins[fast]'"
        return None
    return nk.KERNELS


def numba_status() -> str:
    """``"ok"`` or why the numba kernels cannot be used (imports numba)."""
    return "ok" if _numba_kernels() is not None else (_numba_error or "numba unavailable")


def effective_threads(impl: str, threads: int) -> int:
    """Threads the *impl* kernels really run on when asked for *threads* (numba caps at NUMBA_NUM_THREADS)."""
    if impl != "numba":
        return 1 if impl == "numpy" else threads
    import numba
    return max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))


def _call_numba(work, name, *args):
    """Run kernel *name* on ``work.threads`` threads.

    numba's default threading layer (workqueue) must not be entered from two threads at
    once (a thread-pool executor runs two reconstructions side by side): a call that finds
    the parallel kernels busy runs the serial build instead, which gives the same bits.
    """
    par, ser = _numba_kernels()[name]
    if work.threads > 1 and _NUMBA_LOCK.acquire(blocking=False):
        try:
            import numba
            numba.set_num_threads(effective_threads("numba", work.threads))
            return par(*args)
        finally:
            _NUMBA_LOCK.release()
    return ser(*args)


# --------------------------------------------------------------------------------------------
# CuPy kernels


@functools.lru_cache(maxsize=None)
def _cupy_kernels():
    import cupy as cp
    modulus = cp.ElementwiseKernel(
        "float32 d, float32 dNs, float32 inv_n, float32 tiny", "complex64 F, float32 r2",
        """
        float re = F.real(), im = F.imag();
        if (dNs < 0) { F = complex<float>(re * inv_n, im * inv_n); r2 = 0; }
        else {
            float a = sqrtf(re * re + im * im);
            float r = a - d;
            r2 = r * r;
            float s = dNs / (a + tiny);
            F = complex<float>(re * s, im * s);
        }
        """, "cdi_modulus")
    update = cp.ElementwiseKernel(
        "complex64 p, float32 ca, float32 cb, bool m", "complex64 x",
        """
        if (m) { x = p; }
        else { x = complex<float>(ca * x.real() + cb * p.real(), ca * x.imag() + cb * p.imag()); }
        """, "cdi_update")
    update_er = cp.ElementwiseKernel(
        "complex64 p, bool m", "complex64 x", "x = m ? p : complex<float>(0, 0);", "cdi_update_er")
    return {"modulus": modulus, "update": update, "update_er": update_er}


# --------------------------------------------------------------------------------------------


NUMBA_MIN_SIZE = 64 ** 3 + 1   # auto: numba from this many elements on (see kernel_impl)


def requested_kernels(requested: str = "auto") -> str:
    """*requested*, or for ``auto`` ``CDI_PLUGINS_KERNELS`` (``auto`` when unset), checked without importing
    any kernel.

    Raises
    ------
    CDIError
        A value that is not one of :data:`IMPLS`.
    """
    if requested == "auto":
        requested = os.environ.get("CDI_PLUGINS_KERNELS") or "auto"
    if requested not in IMPLS:
        from cdi_plugins.errors import CDIError
        raise CDIError(f"unknown kernel implementation {requested!r} (CDI_PLUGINS_KERNELS); "
                       f"choose one of {', '.join(IMPLS)}")
    return requested


def kernel_impl(xp, requested: str = "auto", size: int | None = None) -> str:
    """The implementation :class:`KernelWork` uses for the array module *xp* and arrays of *size* elements.

    ``auto`` (or ``CDI_PLUGINS_KERNELS``, which overrides ``auto``): CuPy kernels on CuPy arrays;
    numba on the CPU for arrays above 64^3 when it is installed, NumPy otherwise.  At 64^3 numba's
    passes save ~1.1 ms an iteration (0.4 ms against 1.5 ms of CPU), 0.7 s over a 620-iteration
    recipe: about what importing numba and loading its kernels costs a fresh process (~0.5 s of
    CPU, more wall time on a busy machine), so they start above 64^3, where they save ~11 ms an
    iteration at 128^3 on one thread alone.
    ``CDI_PLUGINS_KERNELS=numba`` uses them at every size (many runs in one process).
    """
    requested = requested_kernels(requested)
    if xp is not np:
        return "numpy" if requested == "numpy" else "cupy"   # "numpy" = the reference code on CuPy arrays
    if requested == "cupy":
        from cdi_plugins.errors import CDIError
        raise CDIError("kernel implementation 'cupy' needs the cupy backend")
    if requested == "numba":
        if _numba_kernels() is None:
            from cdi_plugins.errors import CDIError
            raise CDIError(f"kernel implementation 'numba' asked for but {_numba_error}")
        return "numba"
    if requested == "auto" and (size is None or size >= NUMBA_MIN_SIZE):
        from cdi_plugins.compute.backend import _installed
        if _installed("numba") and _numba_kernels() is not None:
            return "numba"
    return "numpy"


class KernelWork:
    """Scratch buffers for one array shape (allocated once per step, reused every iteration).

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    shape : tuple of int
    feedback : bool
        Whether :func:`update_object` will be called with a feedback (``ca`` not None).
    threads : int, optional
        CPU threads of the numba kernels; pass the FFT's (``backend.threads_for(size)``).
        Default: every core this process may use.  The results do not depend on it.
    impl : {"auto", "numba", "numpy", "cupy"}
        See :func:`kernel_impl`; the environment variable ``CDI_PLUGINS_KERNELS`` (numpy, numba)
        overrides ``auto``.
    """

    def __init__(self, xp, shape, feedback: bool, *, threads: int | None = None, impl: str = "auto"):
        self.xp = xp
        self.shape = tuple(int(s) for s in shape)
        self.impl = kernel_impl(xp, impl, int(np.prod(self.shape)))
        if threads is None:
            from cdi_plugins.compute.backend import default_threads
            threads = default_threads()
        self.threads = max(1, int(threads))
        self.tiny = xp.float32(TINY)
        self._dns = (None, None, None)     # (dN, unc_idx, dN with -1 at unc_idx) of the last call
        self._mask = (None, None)          # (inside, its byte mask) of the last call
        self._idx = (None, None)           # (mask, its flat indices) of the last call (NumPy reference)
        if self.impl == "numpy":
            self.a = xp.empty(shape, dtype=xp.float32)
            self.r = xp.empty(shape, dtype=xp.float32)
            self.tmp = xp.empty(shape, dtype=xp.complex64) if feedback else None
        elif self.impl == "cupy":
            self.r = xp.empty(shape, dtype=xp.float32)
        else:
            self.partial = np.empty(NCHUNK, dtype=np.float64)

    # the unconstrained pixels as a sign in dN (one array read instead of two), made once per (dN, unc_idx)
    def signed_dN(self, dN, unc_idx):
        cdN, cunc, dns = self._dns
        if cdN is dN and cunc is unc_idx:
            return dns
        if unc_idx is None:
            dns = dN
        else:
            dns = dN.copy()
            dns.reshape(-1)[unc_idx] = -1
        self._dns = (dN, unc_idx, dns)
        return dns

    def indices_of(self, mask):
        """Flat indices of a boolean support mask (made once per mask object)."""
        cm, idx = self._idx
        if cm is not mask:
            idx = self.xp.flatnonzero(mask)
            self._idx = (mask, idx)
        return idx

    def mask_of(self, inside):
        """A boolean support mask of the work's shape from flat indices (or a mask, returned as is)."""
        xp = self.xp
        if inside.dtype == xp.bool_:
            return inside.reshape(-1)
        cin, m = self._mask
        if cin is inside:
            return m
        m = xp.zeros(int(np.prod(self.shape)), dtype=xp.bool_)
        m[inside] = True
        self._mask = (inside, m)
        return m


def _f32(a):
    """A C-contiguous complex64 array as a flat float32 view (re, im interleaved)."""
    return a.reshape(-1).view(np.float32)


def project_modulus(work: KernelWork, F, d, dN, inv_n, unc_idx):
    """In place: ``F <- F * dN / |F|`` where constrained, ``F * inv_n`` at ``unc_idx``.

    ``d`` is the measured amplitude (zero at unconstrained pixels) and ``dN = d / N``
    folds the 1/N of the unnormalised inverse FFT in.  Returns sum((|F| - d)^2) over
    the constrained pixels as a scalar (a device scalar on the GPU: no host sync).
    """
    xp = work.xp
    if work.impl == "numba":
        dns = work.signed_dN(dN, unc_idx)
        return _call_numba(work, "modulus", _f32(F), d.reshape(-1), dns.reshape(-1),
                           np.float32(inv_n), work.tiny, work.partial)
    if work.impl == "cupy":
        dns = work.signed_dN(dN, unc_idx)
        _cupy_kernels()["modulus"](d, dns, xp.float32(inv_n), work.tiny, F, work.r)
        return work.r.sum(dtype=xp.float64)
    a, r = work.a, work.r
    xp.abs(F, out=a)
    if unc_idx is not None:
        a.reshape(-1)[unc_idx] = 0
    xp.subtract(a, d, out=r)
    chi = xp.vdot(r, r)
    a += work.tiny  # no division by zero; 6x cheaper than maximum() and the same for any |F| > 1e-13
    xp.divide(dN, a, out=r)
    if unc_idx is not None:
        r.reshape(-1)[unc_idx] = inv_n  # unconstrained: keep F (just undo the 1/N)
    F *= r
    return chi


def _numba_only(work: KernelWork, what: str) -> None:
    if work.impl != "numba":
        from cdi_plugins.errors import CDIError
        raise CDIError(f"{what} runs on the numba kernels only (this KernelWork's are {work.impl!r})")


def abs_into(work: KernelWork, c, a) -> None:
    """``c <- |a| + 0j`` for C-contiguous complex64 arrays *c* and *a* of one size (numba kernels; |a| as
    ``sqrt(re^2 + im^2)`` in float32)."""
    _numba_only(work, "abs_into")
    _call_numba(work, "abs_complex", _f32(c), _f32(a))


def scale_by(work: KernelWork, c, k) -> None:
    """``c <- c * k`` for a C-contiguous complex64 *c* and a float32 *k* of as many elements (numba kernels)."""
    _numba_only(work, "scale_by")
    _call_numba(work, "scale_real", _f32(c), k.reshape(-1))


def above_fraction(work: KernelWork, c, fraction: float, out=None):
    """``c.real > fraction * max(c.real)`` as a bool array of *c*'s shape (or into *out*): the product in
    float32, as NumPy forms it (numba kernels)."""
    _numba_only(work, "above_fraction")
    if out is None:
        out = np.empty(c.shape, dtype=bool)
    _call_numba(work, "above_fraction", out.reshape(-1), _f32(c), np.float32(fraction), work.partial)
    return out


def scale_separable(work: KernelWork, c, factors) -> None:
    """``c <- c * ((g0[i] * g1[j]) * g2[k])`` for a C-contiguous 3-D complex64 *c* and its three float32
    factors (a separable Fourier-space kernel formed on the fly; numba kernels)."""
    _numba_only(work, "scale_separable")
    g0, g1, g2 = factors
    if (g0.size, g1.size, g2.size) != tuple(c.shape):
        raise ValueError(f"factors of sizes {(g0.size, g1.size, g2.size)} for an array of shape {c.shape}")
    _call_numba(work, "scale_separable", _f32(c), g0, g1, g2)


def smoothed_support(work: KernelWork, a, c, factors, forward, inverse, threshold: float):
    """Shrink-wrap's support through complex FFTs in the buffer *c*: ``c <- |a|``, ``forward(c)``, ``c *=``
    the separable kernel of *factors* (:func:`support.gaussian_factors`; None: no smoothing), ``inverse(c)``,
    then ``c.real > threshold * max(c.real)``.  *a* and *c* are C-contiguous complex64 arrays of one shape
    (*a* None: *c* already holds ``|a| + 0j``, written by the cache-blocked loop); *forward* and *inverse*
    transform *c* in place.  Each pass runs on ``work.threads`` cores (NumPy's strided passes took 12 ms of
    the 18 ms of a 128^3 shrink-wrap, and building the 3-D kernel for a new sigma ~140 ms at 256^3)."""
    if a is not None:
        abs_into(work, c, a)
    if factors is not None:             # None: no smoothing (sigma 0)
        forward(c)
        scale_separable(work, c, factors)
        inverse(c)
    return above_fraction(work, c, threshold)


def update_object(work: KernelWork, x, p, ca, cb, inside):
    """Next iterate: ``x <- ca * x + cb * p`` outside the support (``ca is None``: 0) and ``p`` inside.

    ``inside`` is the support, as flat indices (``xp.flatnonzero(s)``) or as a boolean
    mask of ``x``'s shape.  The fused kernels read it as a mask (made once per support
    from the indices); the NumPy reference writes ``p`` by index after a whole-array
    update, which costs less than any masked NumPy update.
    """
    xp = work.xp
    if work.impl == "numba":
        m = work.mask_of(inside)
        if ca is None:
            _call_numba(work, "update_er", _f32(x), _f32(p), m)
        else:
            _call_numba(work, "update", _f32(x), _f32(p), np.float32(ca), np.float32(cb), m)
        return
    if work.impl == "cupy":
        m = work.mask_of(inside).reshape(x.shape)
        if ca is None:
            _cupy_kernels()["update_er"](p, m, x)
        else:
            _cupy_kernels()["update"](p, xp.float32(ca), xp.float32(cb), m, x)
        return
    if inside.dtype == xp.bool_:
        inside = work.indices_of(inside)
    if ca is None:  # ER: x = p inside S, 0 outside
        x.fill(0)
    else:
        if ca != 1.0:
            x *= xp.complex64(ca)
        xp.multiply(p, xp.complex64(cb), out=work.tmp)
        x += work.tmp
    x.reshape(-1)[inside] = p.reshape(-1)[inside]
