"""The cache-blocked iteration: an FFT pair, the modulus projection and the update in two passes over memory.

On the CPU above 64^3 an iteration of the unfused loop is two 3-D FFTs (each two or three sweeps over the
array), the modulus pass and the update pass: every pass streams the whole object through the caches, and
at 128^3 the two passes alone cost ~0.5 of an FFT pair.  A 3-D FFT is separable, so this loop splits it where
the elementwise work can ride along while the data are in cache (see docs/design-notes.md).  Between
iterations the work buffer ``w`` holds the iterate transformed along axis 0; then

1. *planes* (one per index i of axis 0, ``n1 * n2`` contiguous elements): the 2-D FFT of ``w[i]`` completes
   the forward transform, the modulus projection (and chi^2) runs on it, and the inverse 2-D FFT starts the
   inverse transform;
2. *tiles* (one per index j of axis 1: ``n0`` rows of ``n2`` elements): the inverse 1-D FFTs along axis 0
   give the projection p, the update writes ``x[:, j, :]``, and the 1-D FFTs of the new ``x[:, j, :]`` along
   axis 0 are the first part of the next iteration.

The transforms are Intel MKL's (plans of its FFTW3 interface, compute/_mkl.py), one plane or tile at a time
on one thread, called from numba kernels running on every core.  The result does not depend on the thread
count (each plane and tile is transformed by the same single-thread plan, and chi^2 is summed plane by plane
in order) but differs from the unfused loop's in the last bits (the transforms are split differently; HIO
then amplifies that, as it does any rounding).  Used by ER, HIO, RAAR, SF and ASR on
the mkl engine with the numba kernels and no option active, from 256^3 on (``FUSED_MIN``: below it MKL's own
3-D transforms win); ``CDI_PLUGINS_FUSED=on`` uses it at every size the mkl engine runs, ``off`` nowhere.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["fused_status", "fused_mode", "fused_enabled", "FusedData", "FusedLoop", "FUSED_MIN"]

_status: str | None = None


# From this many voxels on the cache-blocked loop is the faster one.  2-core VM, one HIO iteration against the
# unfused one, interleaved (benchmarks/bench_iteration.py --ab), medians in FFT pairs, 2026-12-01:
#   256^3: 1.26 against 1.39 (1 thread: 1.24 against 1.35);
#   160^3 and 192^3: within the noise of each other;
#   128^3: 1.55 against 1.60, and worse on 1 thread (1.56 against 1.41): MKL's own 3-D transform beats its
#   strided batches of 1-D transforms there.
FUSED_MIN = 256 ** 3
_MODES = {"auto": "auto", "": "auto", "1": "on", "on": "on", "true": "on", "yes": "on",
          "0": "off", "off": "off", "false": "off", "no": "off"}


def fused_mode() -> str:
    """``CDI_PLUGINS_FUSED``: ``auto`` (default: from FUSED_MIN voxels on), ``on`` (every size the mkl engine
    runs) or ``off``.  Raises CDIError for anything else."""
    raw = os.environ.get("CDI_PLUGINS_FUSED", "auto")
    mode = _MODES.get(raw.strip().lower())
    if mode is None:
        raise CDIError(f"CDI_PLUGINS_FUSED={raw!r}: use auto, on or off")
    return mode


def fused_enabled(size: int | None = None) -> bool:
    """Whether the cache-blocked loop is wanted for *size* voxels (None: at some size) under
    ``CDI_PLUGINS_FUSED``."""
    mode = fused_mode()
    if mode == "off":
        return False
    return mode == "on" or size is None or size >= FUSED_MIN


@functools.lru_cache(maxsize=None)
def _mkl():
    """MKL's handle (compute/_mkl.py, loaded by backend.import_mkl), or None (reason in _status)."""
    global _status
    from cdi_plugins.compute.backend import import_mkl
    try:
        return import_mkl()
    except CDIError as exc:
        _status = str(exc)
        return None


def fused_status() -> str:
    """``"ok"`` or why the cache-blocked loop cannot run here (loads MKL)."""
    if not fused_enabled():
        return "turned off (CDI_PLUGINS_FUSED)"
    return "ok" if _mkl() is not None else (_status or "unavailable")


class _Plans:
    """One set of single-thread plans per worker thread (a plan must not run on two threads at once)."""

    def __init__(self, mkl, shape, x, w, threads: int):
        from cdi_plugins.compute._mkl import FFTW_BACKWARD, FFTW_FORWARD
        n0, n1, n2 = shape
        q = n1 * n2
        xa, wa = x.ctypes.data, w.ctypes.data
        self._all = plans = mkl.plans()      # destroyed with this object

        def per_thread(n, src, dst, sign, **kw):
            return np.array([plans.make(n, src, dst, sign, **kw) for _ in range(threads)], dtype=np.uintp)

        # a plane w[i]: the 2-D transform in place
        self.plane_fwd = per_thread((n1, n2), wa, wa, FFTW_FORWARD)
        self.plane_bwd = per_thread((n1, n2), wa, wa, FFTW_BACKWARD)
        # a tile [:, j, :]: n2 transforms of length n0 along axis 0 (stride n1 * n2), x -> w and w in place
        self.tile_fwd = per_thread((n0,), xa, wa, FFTW_FORWARD, howmany=n2, stride=q, dist=1)
        self.tile_bwd = per_thread((n0,), wa, wa, FFTW_BACKWARD, howmany=n2, stride=q, dist=1)


class FusedData:
    """The measured amplitudes as the cache-blocked loop reads them, made once per problem.

    *d* (|measured|, 0 at unconstrained pixels) and *dNs* (d / N, negative at unconstrained pixels:
    :meth:`KernelWork.signed_dN`) are used as they are, in FFT order, without a copy, unless there are free
    pixels: then copies hold the free pixels' |measured| in ``d`` and -2 in ``dNs`` (-1 marks masked ones),
    so that one pass sums their chi^2 apart.
    """

    def __init__(self, d, dNs, free_idx=None, d_free=None):
        self.shape = tuple(d.shape)
        self.free = free_idx is not None and len(free_idx) > 0
        if self.free:
            d = np.array(d, dtype=np.float32, copy=True)
            dNs = np.array(dNs, dtype=np.float32, copy=True)
            d.reshape(-1)[free_idx] = d_free
            dNs.reshape(-1)[free_idx] = -2
        self.d = np.ascontiguousarray(d, dtype=np.float32)
        self.dNs = np.ascontiguousarray(dNs, dtype=np.float32)


class FusedLoop:
    """The cache-blocked iteration on a :class:`~cdi_plugins.compute.backend.Workspace` of the mkl engine.

    Its Fourier-side buffer is the workspace's work buffer, so the workspace's own ``forward``/``backward``
    must not run between :meth:`start` and the last :meth:`iterate` (each step's loop calls :meth:`start`
    first).  ``ws.x`` holds the iterate after every :meth:`iterate`.
    """

    def __init__(self, ws, data: FusedData, work):
        mkl = _mkl()
        if data.shape != ws.shape:
            raise ValueError(f"data of shape {data.shape} for a workspace of shape {ws.shape}")
        self.ws, self.data, self.work = ws, data, work
        self._execute = mkl.execute
        self._plans = _Plans(mkl, ws.shape, ws.x, ws._w, max(1, work.threads))
        self._partial = np.zeros(ws.shape[0], dtype=np.float64)
        self._partial_free = np.zeros(ws.shape[0], dtype=np.float64)
        self._none = np.empty((1, 1, 1), dtype=np.complex64)

    @staticmethod
    def usable(ws, work) -> bool:
        """Whether this loop runs on *ws*: wanted for its size (:func:`fused_enabled`; a misspelt
        ``CDI_PLUGINS_FUSED`` raises here), 3-D, mkl engine, numba kernels, complex64."""
        return (fused_enabled(ws.size) and ws.engine == "mkl" and len(ws.shape) == 3 and work.impl == "numba"
                and ws.x.dtype == np.complex64 and _mkl() is not None)

    def _run(self, name, *args):
        from cdi_plugins.compute.kernels import _call_numba
        return _call_numba(self.work, name, self._execute, *args)

    def start(self) -> None:
        """The first part of the first iteration: ``ws.x`` transformed along axis 0."""
        self._run("fused_start", self._plans.tile_fwd, self.ws.x, self.ws._w)

    def iterate(self, ca, cb, mask, *, keep_abs=None, forward: bool = True):
        """One iteration: ``x <- p`` inside *mask* (flat or shaped bool support) and ``ca * x + cb * p``
        outside (``ca`` None: 0, error reduction), with p the modulus projection of x.

        *keep_abs*: a C-contiguous complex64 array of the workspace's shape that receives ``|p| + 0j``
        (shrink-wrap's input, :meth:`Workspace.smoothed_support` with ``a=None``), or None.
        *forward*: False on a step's last iteration (skips the next iteration's first transforms).
        Returns (chi^2 over the constrained pixels, chi^2 over the free pixels or None), unnormalised.
        """
        if keep_abs is not None and (keep_abs.shape != self.ws.shape or keep_abs.dtype != np.complex64
                                     or not keep_abs.flags.c_contiguous):
            raise ValueError("keep_abs must be a C-contiguous complex64 array of the workspace's shape")
        p, d, ws = self._plans, self.data, self.ws
        chi = self._run("fused_planes", p.plane_fwd, p.plane_bwd, ws._w, d.d, d.dNs, np.float32(1.0 / ws.size),
                        self.work.tiny, d.free, self._partial, self._partial_free)
        chi_free = float(self._partial_free.sum()) if d.free else None
        er = ca is None
        self._run("fused_tiles", p.tile_bwd, p.tile_fwd, ws.x, ws._w, mask.reshape(-1),
                  np.float32(0.0 if er else ca), np.float32(0.0 if er else cb), er,
                  self._none if keep_abs is None else keep_abs, keep_abs is not None, bool(forward))
        return chi, chi_free
