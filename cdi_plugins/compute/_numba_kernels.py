"""numba builds of the two elementwise passes, shrink-wrap's passes and the cache-blocked loop's plane and tile
kernels (compute/fused.py); imported by compute/kernels.py only when they are used.

Complex arrays arrive as float32 views (re, im interleaved): building complex values in numba is
10x slower.  Each pass splits the array into ``NCHUNK`` fixed chunks (independent of the thread
count); a chunk is one call of a serial inner loop on slices starting at 0, the form LLVM
vectorises (the same loop written with a chunk offset runs 2x slower), and the chunks' float64
chi^2 sums are added in chunk order.  The parallel and the serial build call the same inner
loops, so they give the same bits.

Compiled on first use and cached on disk (``cache=True``, next to this file or in numba's user
cache); where no cache can be written they are compiled in memory, once per process.
"""

from __future__ import annotations

import logging
import math
import os
import types

import numba
import numpy as np
from numba import prange

log = logging.getLogger("cdi_plugins.kernels")

# numba's own thread pool ("workqueue") unless the user chose a layer: the OpenMP layer numba would
# otherwise pick (GNU libgomp) aborts a child process forked after a parallel kernel ran (process-pool
# workers, dask's LocalCluster); workqueue survives a fork but must not be entered from two threads at
# once, which kernels.py prevents (a second thread runs the serial build)
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"

NCHUNK = 256

# "reassoc" only: lets LLVM vectorise the float64 sum inside a chunk (2x faster); the order it picks is
# fixed in the compiled code, so the bits repeat.  Nothing else is relaxed (no contraction into FMA, no
# reciprocal for the division): every pixel of F and x is plain IEEE float32 arithmetic.
_OPTS = dict(nogil=True, fastmath={"reassoc"}, error_model="numpy")


def _jit(fn, parallel=False, suffix=""):
    if suffix:
        # numba's disk cache keys a function by qualified name and signature, not by the parallel
        # flag: the serial build of an outer loop needs a name of its own or it loads the parallel one
        fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__,
                                fn.__closure__)
        fn.__qualname__ = fn.__name__
    try:
        return numba.njit(cache=True, parallel=parallel, **_OPTS)(fn)
    except Exception as exc:  # no writable cache next to the package nor in the user's cache
        log.debug("numba cache unavailable (%s): compiling in memory", exc)
        return numba.njit(cache=False, parallel=parallel, **_OPTS)(fn)


# ---- inner loops: one chunk, slices indexed from 0 ------------------------------------------------

def _modulus_chunk(Fr, d, dNs, inv_n, tiny):
    acc = 0.0
    for i in range(d.size):
        re = Fr[2 * i]
        im = Fr[2 * i + 1]
        a = math.sqrt(re * re + im * im)   # float32 (NumPy's hypot may differ in the last bit)
        dn = dNs[i]
        if dn < 0:                         # unconstrained: keep F, undo the 1/N
            s = inv_n
        else:
            r = a - d[i]
            acc += np.float64(r) * np.float64(r)
            s = dn / (a + tiny)
        Fr[2 * i] = re * s
        Fr[2 * i + 1] = im * s
    return acc


def _update_chunk(xr, pr, ca, cb, mask):
    # one pixel per step, re and im spelt out (as in _modulus_chunk): LLVM vectorises this form; one float
    # per step with the mask read as mask[j >> 1] compiled to scalar code (1.6x slower, the same bits)
    for i in range(mask.size):
        pre = pr[2 * i]
        pim = pr[2 * i + 1]
        vre = ca * xr[2 * i] + cb * pre
        vim = ca * xr[2 * i + 1] + cb * pim
        inside = mask[i]
        xr[2 * i] = pre if inside else vre
        xr[2 * i + 1] = pim if inside else vim


def _update_er_chunk(xr, pr, mask):
    z = np.float32(0)
    for i in range(mask.size):
        pre = pr[2 * i]
        pim = pr[2 * i + 1]
        inside = mask[i]
        xr[2 * i] = pre if inside else z
        xr[2 * i + 1] = pim if inside else z


_modulus_chunk = _jit(_modulus_chunk)
_update_chunk = _jit(_update_chunk)
_update_er_chunk = _jit(_update_er_chunk)


# ---- outer loops over the fixed chunks -------------------------------------------------------------

def modulus(Fr, d, dNs, inv_n, tiny, partial):
    n = d.size
    nch = partial.size
    step = (n + nch - 1) // nch
    for c in prange(nch):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        partial[c] = _modulus_chunk(Fr[2 * lo:2 * hi], d[lo:hi], dNs[lo:hi], inv_n, tiny)
    tot = 0.0
    for c in range(nch):
        tot += partial[c]
    return tot


def update(xr, pr, ca, cb, mask):
    n = mask.size
    step = (n + NCHUNK - 1) // NCHUNK
    for c in prange(NCHUNK):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        _update_chunk(xr[2 * lo:2 * hi], pr[2 * lo:2 * hi], ca, cb, mask[lo:hi])


def update_er(xr, pr, mask):
    n = mask.size
    step = (n + NCHUNK - 1) // NCHUNK
    for c in prange(NCHUNK):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        _update_er_chunk(xr[2 * lo:2 * hi], pr[2 * lo:2 * hi], mask[lo:hi])


# ---- shrink-wrap on the mkl engine: |a| into a complex buffer, the Fourier-space kernel, the threshold --------

def _abs_chunk(cr, ar):
    for i in range(cr.size // 2):
        re = ar[2 * i]
        im = ar[2 * i + 1]
        cr[2 * i] = math.sqrt(re * re + im * im)
        cr[2 * i + 1] = np.float32(0)


def _scale_chunk(cr, k):
    # one pixel per step, as in _update_chunk (k[j >> 1] per float compiles to scalar code)
    for i in range(k.size):
        g = k[i]
        cr[2 * i] = cr[2 * i] * g
        cr[2 * i + 1] = cr[2 * i + 1] * g


def _max_chunk(cr):
    m = cr[0]
    for i in range(1, cr.size // 2):
        v = cr[2 * i]
        if v > m:
            m = v
    return m


def _above_chunk(out, cr, thr):
    for i in range(out.size):
        out[i] = cr[2 * i] > thr


_abs_chunk = _jit(_abs_chunk)
_scale_chunk = _jit(_scale_chunk)
_max_chunk = _jit(_max_chunk)
_above_chunk = _jit(_above_chunk)


def abs_complex(cr, ar):
    """``c <- |a| + 0j`` (float32 views of two complex arrays)."""
    n = cr.size // 2
    step = (n + NCHUNK - 1) // NCHUNK
    for c in prange(NCHUNK):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        _abs_chunk(cr[2 * lo:2 * hi], ar[2 * lo:2 * hi])


def scale_real(cr, k):
    """``c <- c * k`` (a complex array's float32 view, a real float32 array)."""
    n = k.size
    step = (n + NCHUNK - 1) // NCHUNK
    for c in prange(NCHUNK):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        _scale_chunk(cr[2 * lo:2 * hi], k[lo:hi])


def _scale_row(cr, gij, g2):
    for k in range(g2.size):
        g = gij * g2[k]
        cr[2 * k] = cr[2 * k] * g
        cr[2 * k + 1] = cr[2 * k + 1] * g


_scale_row = _jit(_scale_row)


def scale_separable(cr, g0, g1, g2):
    """``c <- c * ((g0[i] * g1[j]) * g2[k])`` (a 3-D complex array's float32 view, three float32 factors)."""
    n1, n2 = g1.size, g2.size
    for i in prange(g0.size):
        for j in range(n1):
            base = 2 * n2 * (i * n1 + j)
            _scale_row(cr[base:base + 2 * n2], g0[i] * g1[j], g2)


def above_fraction(out, cr, frac, partial):
    """``out <- c.real > frac * max(c.real)`` (frac * max in float32, as NumPy computes it)."""
    n = out.size
    step = (n + NCHUNK - 1) // NCHUNK
    for c in prange(NCHUNK):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        partial[c] = _max_chunk(cr[2 * lo:2 * hi]) if hi > lo else -np.inf
    m = partial[0]
    for c in range(1, NCHUNK):
        if partial[c] > m:
            m = partial[c]
    thr = frac * np.float32(m)
    for c in prange(NCHUNK):
        lo = min(n, c * step)
        hi = min(n, lo + step)
        _above_chunk(out[lo:hi], cr[2 * lo:2 * hi], thr)


# ---- the cache-blocked iteration (compute/fused.py): MKL's transforms of one plane or one tile, called here ---------
#
# x and the Fourier-side buffer W are (n0, n1, n2).  Between iterations W holds x transformed along axis 0.  A
# plane W[i] (contiguous) completes the forward FFT with a 2-D transform, takes the modulus projection while in
# cache and starts the inverse; a tile W[:, j, :] (n0 rows of n2, n1 * n2 apart) finishes the inverse along
# axis 0, updates x[:, j, :] and transforms the new x[:, j, :] along axis 0 for the next iteration.
# *ex* is MKL's fftwf_execute_dft (a ctypes function passed in, so the compiled code caches); plans[t] is the
# plan of worker t (a plan must not run on two threads at once); each runs one transform on one thread.

def _modulus_free_chunk(Fr, d, dNs, inv_n, tiny, out1):
    # as _modulus_chunk; dNs < -1.5 marks a free pixel (unconstrained, its d in d): its residual goes to out1[0]
    acc = 0.0
    accf = 0.0
    for i in range(d.size):
        re = Fr[2 * i]
        im = Fr[2 * i + 1]
        a = math.sqrt(re * re + im * im)
        dn = dNs[i]
        r = a - d[i]
        if dn < 0:
            s = inv_n
            if dn < -1.5:
                accf += np.float64(r) * np.float64(r)
        else:
            acc += np.float64(r) * np.float64(r)
            s = dn / (a + tiny)
        Fr[2 * i] = re * s
        Fr[2 * i + 1] = im * s
    out1[0] = accf
    return acc


_modulus_free_chunk = _jit(_modulus_free_chunk)


def fused_start(ex, plans, x, w):
    """w[:, j, :] <- the 1-D FFTs along axis 0 of x[:, j, :], for every j."""
    n0, n1, n2 = x.shape
    nt = plans.size
    per = (n1 + nt - 1) // nt
    xa, wa = x.ctypes.data, w.ctypes.data
    for t in prange(nt):
        for j in range(t * per, min(n1, (t + 1) * per)):
            ex(plans[t], xa + 8 * j * n2, wa + 8 * j * n2)


def fused_planes(ex, fplans, bplans, w, d, dNs, inv_n, tiny, free, partial, partial_free):
    """Per plane i: the 2-D FFT of w[i] (completing F), the modulus projection, the inverse 2-D FFT.  Returns
    chi^2, summed plane by plane in order; with *free*, each plane's free-pixel sum goes to partial_free."""
    n0, n1, n2 = w.shape
    q = n1 * n2
    nt = fplans.size
    per = (n0 + nt - 1) // nt
    wa = w.ctypes.data
    wr = w.reshape(-1).view(np.float32)
    dr = d.reshape(-1)
    nr = dNs.reshape(-1)
    for t in prange(nt):
        for i in range(t * per, min(n0, (t + 1) * per)):
            ex(fplans[t], wa + 8 * i * q, wa + 8 * i * q)
            lo = i * q
            if free:
                partial[i] = _modulus_free_chunk(wr[2 * lo:2 * (lo + q)], dr[lo:lo + q], nr[lo:lo + q], inv_n, tiny,
                                                 partial_free[i:i + 1])
            else:
                partial[i] = _modulus_chunk(wr[2 * lo:2 * (lo + q)], dr[lo:lo + q], nr[lo:lo + q], inv_n, tiny)
            ex(bplans[t], wa + 8 * i * q, wa + 8 * i * q)
    tot = 0.0
    for i in range(n0):
        tot += partial[i]
    return tot


def fused_tiles(ex, bplans, fplans, x, w, mask, ca, cb, er, pabs, keep, forward):
    """Per tile j: the inverse 1-D FFTs along axis 0 of w[:, j, :] (giving the projection p), |p| + 0j into
    pabs[:, j, :] if *keep* (shrink-wrap's input), the update of x[:, j, :] (er: p inside the support, 0
    outside; else ca * x + cb * p outside) and, if *forward*, the next iteration's 1-D FFTs of x[:, j, :]."""
    n0, n1, n2 = x.shape
    q = n1 * n2
    nt = fplans.size
    per = (n1 + nt - 1) // nt
    xa, wa = x.ctypes.data, w.ctypes.data
    xr = x.reshape(-1).view(np.float32)
    wr = w.reshape(-1).view(np.float32)
    pr = pabs.reshape(-1).view(np.float32)
    m = mask.reshape(-1)
    for t in prange(nt):
        for j in range(t * per, min(n1, (t + 1) * per)):
            ex(bplans[t], wa + 8 * j * n2, wa + 8 * j * n2)
            for i in range(n0):
                lo = i * q + j * n2
                if keep:
                    _abs_chunk(pr[2 * lo:2 * (lo + n2)], wr[2 * lo:2 * (lo + n2)])
                if er:
                    _update_er_chunk(xr[2 * lo:2 * (lo + n2)], wr[2 * lo:2 * (lo + n2)], m[lo:lo + n2])
                else:
                    _update_chunk(xr[2 * lo:2 * (lo + n2)], wr[2 * lo:2 * (lo + n2)], ca, cb, m[lo:lo + n2])
            if forward:
                ex(fplans[t], xa + 8 * j * n2, wa + 8 * j * n2)


# numba fuses adjacent prange loops of equal length into one (no barrier between them): the plane and tile
# loops above must not be, so the fused kernels are built with fusion off
_FUSED = {"fused_start": fused_start, "fused_planes": fused_planes, "fused_tiles": fused_tiles}


KERNELS = {name: (_jit(fn, parallel=True), _jit(fn, suffix="_serial"))
           for name, fn in (("modulus", modulus), ("update", update), ("update_er", update_er),
                            ("abs_complex", abs_complex), ("scale_real", scale_real),
                            ("scale_separable", scale_separable),
                            ("above_fraction", above_fraction))}
KERNELS.update({name: (_jit(fn, parallel={"fusion": False}), _jit(fn, suffix="_serial"))
                for name, fn in _FUSED.items()})
