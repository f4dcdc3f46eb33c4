"""numba kernels of the AD refiner's CPU fast path (imported by ``model`` only when that path runs).

The conventions of ``cdi_plugins/compute/_numba_kernels.py``: complex arrays arrive as float32 views
(re, im interleaved); a pass with sums splits the array into chunks of ``CHUNK`` voxels, a chunk being
one call of a serial inner loop on slices starting at 0 (the form LLVM vectorises), and the chunks'
float64 sums are added in chunk order, so the bits do not depend on anything but the input (a chunk
count fixed whatever the size, as compute's kernels use for their threads, cost 20 us per pass at 32^3,
more than half of the pass); ``fastmath`` is
``reassoc`` only (the float64 sums inside a chunk may be vectorised; every pixel is plain IEEE
float32 arithmetic).  Serial builds only: the AD step runs one thread up to 64^3, where this path
pays, and a parallel build would have to share the framework's guard of numba's thread pool.

Unconstrained pixels (masked or free) are marked by a negative amplitude ``d`` (the measured
amplitudes are never negative), so one array carries both.

Compiled on first use and cached on disk (``cache=True``); where no cache can be written they are
compiled in memory, once per process.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

log = logging.getLogger("cdi_plugins.ad")

CHUNK = 8192                        # voxels per chunk: the sums' order depends on the array size only
TINY = 1.1754943508222875e-38       # float32's smallest normal: the torch path's clamp of sum |F|^2
_OPTS = dict(nogil=True, fastmath={"reassoc"}, error_model="numpy")


def _jit(fn):
    try:
        return numba.njit(cache=True, **_OPTS)(fn)
    except Exception as exc:  # no writable cache next to the package nor in the user's cache
        log.debug("numba cache unavailable (%s): compiling in memory", exc)
        return numba.njit(cache=False, **_OPTS)(fn)


# ---- inner loops (one chunk, slices indexed from 0) and the passes without sums ----------------
# Written per complex voxel i (re at 2i, im at 2i + 1), with the constraint and the support as 0/1
# factors or selects rather than branches around stores: the forms LLVM vectorises here (a mask read
# per float, mask[j >> 1], or a conditional store was not vectorised and ran 2-10x slower).

@_jit
def _sums_chunk(Fr, d):
    """sum |F| d and sum |F|^2 over the constrained pixels."""
    ad = 0.0
    aa = 0.0
    for i in range(d.size):
        re = Fr[2 * i]
        im = Fr[2 * i + 1]
        a2 = re * re + im * im
        a = math.sqrt(a2)
        di = d[i]
        w = np.float32(1) if di >= 0 else np.float32(0)
        ad += np.float64(a) * np.float64(di * w)
        aa += np.float64(a2 * w)
    return ad, aa


@_jit
def _gradient_chunk(Fr, d, inten, s, s2, eps, k, poisson):
    """The loss's gradient in place, F <- dL/dF times the gain (0 where unconstrained); returns
    sum (s|F| - d)^2 and, for the Poisson deviance, sum I log m.

    amplitude: ``k (s|F| - d) / |F| F`` (0 where |F| = 0); poisson: ``k (1 - I / m) F`` with
    ``m = s2 |F|^2 + eps``.  *poisson* is the same for the whole loop (LLVM hoists the test).
    """
    rr = 0.0
    lg = 0.0
    for i in range(d.size):
        re = Fr[2 * i]
        im = Fr[2 * i + 1]
        a = math.sqrt(re * re + im * im)
        di = d[i]
        f = np.float32(0)
        if di >= 0:
            r = s * a - di
            rr += np.float64(r) * np.float64(r)
            if poisson:
                m = (a * a) * s2 + eps
                lg += np.float64(inten[i]) * np.float64(math.log(m))
                f = (np.float32(1) - inten[i] / m) * k
            elif a > 0:
                f = (r / a) * k
        Fr[2 * i] = re * f
        Fr[2 * i + 1] = im * f
    return rr, lg


@_jit
def _free_sum(Fr, fi, dfree, s):
    """sum (s|F| - d)^2 over the free pixels (indices *fi* into the complex array)."""
    acc = 0.0
    for j in range(fi.size):
        i = fi[j]
        re = Fr[2 * i]
        im = Fr[2 * i + 1]
        e = s * math.sqrt(re * re + im * im) - dfree[j]
        acc += np.float64(e) * np.float64(e)
    return acc


@_jit
def feedback(xr, gr, mask, c, fix, beta):
    """HIO-style feedback on the real view *xr* of the object, from the gradient view *gr*:
    ``P = (c g + x) fix``; ``x <- P`` where *mask* (one bool per complex voxel), ``x - beta P`` elsewhere."""
    for i in range(mask.size):
        m = mask[i]
        p0 = (gr[2 * i] * c + xr[2 * i]) * fix
        p1 = (gr[2 * i + 1] * c + xr[2 * i + 1]) * fix
        q0 = xr[2 * i] - beta * p0
        q1 = xr[2 * i + 1] - beta * p1
        xr[2 * i] = p0 if m else q0
        xr[2 * i + 1] = p1 if m else q1


@_jit
def project(gr, mask):
    """Zero the gradient view *gr* outside *mask* (in place)."""
    for i in range(mask.size):
        w = np.float32(1) if mask[i] else np.float32(0)
        gr[2 * i] = gr[2 * i] * w
        gr[2 * i + 1] = gr[2 * i + 1] * w


# ---- the passes: outer loops over the fixed chunks -------------------------------------------------

@_jit
def _chunks(n):
    """How many chunks an array of *n* voxels is split into."""
    return (n + CHUNK - 1) // CHUNK


@_jit
def _chunk(n, c):
    """Voxels [lo, hi) of chunk *c* of an array of *n*."""
    lo = c * CHUNK
    return lo, min(n, lo + CHUNK)


@_jit
def _sums(Fr, d):
    ad = 0.0
    aa = 0.0
    for c in range(_chunks(d.size)):
        lo, hi = _chunk(d.size, c)
        x, y = _sums_chunk(Fr[2 * lo:2 * hi], d[lo:hi])
        ad += x
        aa += y
    return ad, aa


@_jit
def amplitude_scale(Fr, d):
    """The least-squares amplitude scale ``sum |F| d / sum |F|^2`` of the far field *Fr* (float64)."""
    ad, aa = _sums(Fr, d)
    return ad / max(aa, TINY)


@_jit
def evaluate(Fr, d, inten, fi, dfree, big_d, eps, kscale, poisson):
    """The loss's evaluation on the far field ``F`` (float32 view *Fr*), in one call.

    Fits the least-squares amplitude scale ``s = sum |F| d / sum |F|^2`` (and, for the Poisson
    deviance, the intensity scale ``s2 = big_d / sum |F|^2``) and replaces ``F`` by the gain times
    ``dL/dF`` (see :func:`_gradient_chunk`; ``k = kscale`` times ``s``, or ``s2`` for Poisson).
    *inten* (the intensity) is read only for Poisson.  Returns ``(sum (s|F| - d)^2, sum I log m,
    sum |F|^2, s, s2, free sum)``: float64 sums over the constrained pixels, the free one over *fi*.
    """
    ad, aa = _sums(Fr, d)
    aa_safe = max(aa, TINY)
    s64 = ad / aa_safe
    s2_64 = big_d / aa_safe
    s = np.float32(s64)
    ff = _free_sum(Fr, fi, dfree, s)
    k = np.float32((s2_64 if poisson else s64) * kscale)
    s2 = np.float32(s2_64)
    e = np.float32(eps)
    rr = 0.0
    lg = 0.0
    for c in range(_chunks(d.size)):
        lo, hi = _chunk(d.size, c)
        x, y = _gradient_chunk(Fr[2 * lo:2 * hi], d[lo:hi], inten[lo:hi], s, s2, e, k, poisson)
        rr += x
        lg += y
    return rr, lg, aa, s64, s2_64, ff


@_jit
def gd(pr, gr, vr, idx, k, mu):
    """gd's momentum step on float32 views at the voxels *idx* (the support; elsewhere p and v stay 0,
    so the gradient there need not be projected away): ``v <- mu v + k g``, ``p <- p + k g + mu v``."""
    for j in range(idx.size):
        for h in range(2 * idx[j], 2 * idx[j] + 2):
            kg = gr[h] * k
            v = vr[h] * mu + kg
            vr[h] = v
            pr[h] = (pr[h] + kg) + mu * v
