"""Intel MKL's FFT through the FFTW3 interface of ``libmkl_rt``, loaded privately (``RTLD_LOCAL``) with ctypes.

The mkl engine's transforms (compute/backend.py) and the cache-blocked loop's (compute/fused.py) are plans of
MKL's FFTW3 interface, made and run through this module's handle on ``libmkl_rt`` (the library of the pip
package ``mkl``).  Not mkl_fft and mkl-service: both load ``libmkl_rt`` with ``RTLD_GLOBAL``, and it exports
FFTW3's function names and the BLAS's besides MKL's own, so libraries loaded after it bind to it.  A pyFFTW
imported afterwards ran MKL's transforms under FFTW's name (a 64^3 transform's SHA-256 changed), and a torch
imported afterwards gave the AD refiner other bits (golden hashes changed with the import order).  Loaded
locally, ``libmkl_rt`` serves only the calls made through this handle; its transforms are the same bits as
mkl_fft's (both are MKL's DFTI underneath; checked at 128^3).

Import this module only through :func:`backend.import_mkl`, which loads the library with MKL's OpenMP
threads set to sleep, not spin, between two transforms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import site
import sys
import threading
import weakref

FFTW_FORWARD, FFTW_BACKWARD = -1, +1
FFTW_ESTIMATE = 1 << 6
# FFTW3's planner (MKL's interface too) is not thread-safe, and the thread count of the next plan is global.
# Reentrant: a plan set's finalizer (which destroys under this lock) may run from the garbage collector on a
# thread that holds it while making a plan; with a plain Lock that thread waited for itself forever (a test
# run hung once that way).
_PLAN_LOCK = threading.RLock()
_error: str | None = None


@functools.lru_cache(maxsize=None)
def rt_path() -> str | None:
    """Where ``libmkl_rt`` is (the environment's lib/, the user's, then the loader's search), without loading
    it; None where it is not installed.  Looked up once per process: where it is missing, the loader's search
    (``ctypes.util.find_library``, which runs ``ldconfig``) takes ~40 ms, and every workspace asks."""
    prefixes = dict.fromkeys((sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or sys.prefix))
    for prefix in prefixes:
        for pattern in (os.path.join(prefix, "lib", "libmkl_rt.so*"), os.path.join(prefix, "Library", "bin",
                                                                                  "mkl_rt*.dll")):
            found = sorted(glob.glob(pattern), reverse=True)
            if found:
                return found[0]
    return ctypes.util.find_library("mkl_rt")


class MKL:
    """The handle: plans (:meth:`plan`), their execution (:meth:`run`, or :attr:`execute` from compiled code)
    and MKL's thread count of the calling thread."""

    def __init__(self, path: str):
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        ip = ctypes.POINTER(ctypes.c_int)
        lib.fftwf_plan_many_dft.restype = ctypes.c_void_p
        lib.fftwf_plan_many_dft.argtypes = [ctypes.c_int, ip, ctypes.c_int, ctypes.c_void_p, ip, ctypes.c_int,
                                            ctypes.c_int, ctypes.c_void_p, ip, ctypes.c_int, ctypes.c_int,
                                            ctypes.c_int, ctypes.c_uint]
        lib.fftwf_plan_with_nthreads.argtypes = [ctypes.c_int]
        lib.fftwf_plan_with_nthreads.restype = None
        lib.fftwf_destroy_plan.argtypes = [ctypes.c_void_p]
        lib.fftwf_destroy_plan.restype = None
        lib.fftwf_execute.argtypes = [ctypes.c_void_p]      # ctypes releases the GIL for the call
        lib.fftwf_execute.restype = None
        lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
        lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
        lib.MKL_Get_Max_Threads.restype = ctypes.c_int
        self.lib, self.path = lib, path
        # numba kernels take execute-on-new-arrays as an argument (pointers as size_t: the same registers),
        # so their compiled code caches on disk
        proto = ctypes.CFUNCTYPE(None, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t)
        self.execute = proto(ctypes.cast(lib.fftwf_execute_dft, ctypes.c_void_p).value)
        self.run = lib.fftwf_execute

    def max_threads(self) -> int:
        return int(self.lib.MKL_Get_Max_Threads())

    def set_threads_local(self, n: int) -> int:
        """MKL's threads on the calling thread only (0: back to the global setting); returns the previous."""
        return int(self.lib.MKL_Set_Num_Threads_Local(int(n)))

    def plans(self) -> "Plans":
        return Plans(self)


def _ints(v):
    return None if v is None else (ctypes.c_int * len(v))(*v)


class Plans:
    """Plans made through one :class:`MKL` handle, destroyed together when this object goes."""

    def __init__(self, mkl: MKL):
        self._mkl = mkl
        self._made: list[int] = []
        self._finalizer = weakref.finalize(self, _destroy, mkl.lib, self._made)

    def make(self, n, src, dst, sign: int, *, threads: int = 1, howmany: int = 1, stride: int = 1,
             dist: int = 0) -> int:
        """A plan of ``howmany`` complex64 transforms of shape *n* from address *src* to *dst* (equal: in
        place), elements *stride* apart, transforms *dist* apart, run on up to *threads* threads; unnormalised
        both ways.  Raises RuntimeError where MKL refuses it."""
        lib = self._mkl.lib
        dims = _ints(n)
        with _PLAN_LOCK:
            lib.fftwf_plan_with_nthreads(int(threads))
            p = lib.fftwf_plan_many_dft(len(n), dims, howmany, src, None, stride, dist, dst, None, stride, dist,
                                        sign, FFTW_ESTIMATE)
        if not p:
            raise RuntimeError(f"MKL refused a plan of {howmany} transforms of shape {tuple(n)}")
        self._made.append(p)
        return p

    def destroy(self) -> None:
        self._finalizer()


def _destroy(lib, plans) -> None:
    with _PLAN_LOCK:
        for p in plans:
            lib.fftwf_destroy_plan(p)
        plans.clear()


@functools.lru_cache(maxsize=None)
def load() -> MKL | None:
    """The handle (loaded once), or None where ``libmkl_rt`` is missing or lacks the FFTW3 interface (why:
    :func:`error`).  Call it through :func:`backend.import_mkl`."""
    global _error
    path = rt_path()
    if path is None:
        _error = "Intel MKL is not installed (libmkl_rt not found); pip install 'cdi-plugins[fast]' (x86-64)"
        return None
    try:
        mkl = MKL(path)
        mkl.max_threads()        # starts MKL's OpenMP runtime now (it reads its wait policy once, when it starts)
    except (OSError, AttributeError) as exc:
        _error = f"{path} cannot serve as MKL's FFT ({exc.__class__.__name__}: {exc})"
        return None
    return mkl


def error() -> str | None:
    """Why :func:`load` returned None."""
    return _error
