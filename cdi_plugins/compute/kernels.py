"""The elementwise passes of one projection iteration, written once for NumPy and CuPy.

An iteration of every projection algorithm is an FFT pair plus two elementwise passes:

* :func:`project_modulus` replaces the Fourier amplitudes by the measured ones
  (in place on ``F``) and returns chi^2 over the constrained pixels;
* :func:`update_object` forms the next iterate from the projection ``p`` with
  the feedback ``x <- ca * x + cb * p`` outside the support and ``p`` inside.

Algorithms call these functions rather than spelling the passes out, so a
faster implementation of a pass serves every algorithm at once.  The results
of this reference implementation are what the golden hashes record.
"""

from __future__ import annotations

__all__ = ["KernelWork", "project_modulus", "update_object"]


class KernelWork:
    """Scratch buffers for one array shape (allocated once per step, reused every iteration)."""

    def __init__(self, xp, shape, feedback: bool):
        self.xp = xp
        self.a = xp.empty(shape, dtype=xp.float32)
        self.r = xp.empty(shape, dtype=xp.float32)
        self.tmp = xp.empty(shape, dtype=xp.complex64) if feedback else None
        self.tiny = xp.float32(1e-20)


def project_modulus(work: KernelWork, F, d, dN, inv_n, unc_idx):
    """In place: ``F <- F * dN / |F|`` where constrained, ``F * inv_n`` at ``unc_idx``.

    ``d`` is the measured amplitude (zero at unconstrained pixels) and ``dN = d / N``
    folds the 1/N of the unnormalised inverse FFT in.  Returns sum((|F| - d)^2) over
    the constrained pixels as a device scalar (no host sync).
    """
    xp, a, r = work.xp, work.a, work.r
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


def update_object(work: KernelWork, x, p, ca, cb, inside):
    """Next iterate: ``x <- ca * x + cb * p`` outside the support (``ca is None``: 0) and ``p`` inside.

    ``inside`` holds the flat indices of the support: the support is a few percent of the
    array, so writing ``p`` there by index after a whole-array update costs less than any
    masked update (NumPy's copyto(where=) is as slow as an FFT pair at 128^3).
    """
    xp = work.xp
    if ca is None:  # ER: x = p inside S, 0 outside
        x.fill(0)
    else:
        if ca != 1.0:
            x *= xp.complex64(ca)
        xp.multiply(p, xp.complex64(cb), out=work.tmp)
        x += work.tmp
    x.reshape(-1)[inside] = p.reshape(-1)[inside]
