"""Array backends (NumPy on the CPU, CuPy on a GPU) and their FFT engines.

Iterative kernels are written once against ``backend.xp`` (the ``numpy`` or
``cupy`` module), so the NumPy tests exercise exactly the code that runs on a
GPU.  The hot loop reaches the FFT only through a :class:`Workspace`, which owns
the buffers and the (reused) FFT plans for one array shape:

* NumPy + MKL (the hot loop of ``fft: auto`` above 64^3 when the pip package
  ``mkl`` is installed): Intel MKL's FFT through its FFTW3 interface, called
  with ctypes on a privately loaded ``libmkl_rt`` (compute/_mkl.py), on 64-byte
  aligned NumPy buffers: an out-of-place forward transform into the work buffer
  and an in-place unnormalised inverse; faster than FFTW's rule-made plans and
  than torch.fft here, deterministic (same bits in every process on one machine
  for one thread count, whatever its load), and loaded in ~0.1 s (see MKL_LOOP).
* NumPy + torch.fft (the hot loop of ``fft: auto`` above 64^3 without MKL):
  PyTorch's own MKL FFT on NumPy views of torch tensors, the same two
  transforms; deterministic too, but importing torch costs 1.1-1.5 s.
* NumPy + pyFFTW (default on the CPU when installed, and the hot loop up to
  64^3): FFTW plans made once per shape, an out-of-place forward transform into
  an aligned work buffer and an in-place unnormalised inverse.  Plans are made
  with ``FFTW_ESTIMATE`` by default: chosen without timing anything, so a run
  gives the same bits in every process on one machine (for one thread count)
  whatever its load.  ``FFTW_MEASURE`` (``CDI_PLUGINS_FFTW_PLANNER=FFTW_MEASURE``)
  picks plans by timing them, caches them as wisdom on disk, and gives up that
  guarantee (the hot loop then stays on pyFFTW at every size).
* NumPy + scipy.fft: multi-threaded pocketfft, the fallback without pyFFTW
  (deterministic, and the same bits for any thread count).
* CuPy: cuFFT through ``cupyx.scipy.fft`` (CuPy caches the plans).

``numpy.fft`` is never used: it is 2-10x slower than any of these.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import sys
import tempfile
import threading

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["Backend", "Workspace", "get_backend", "available_backends", "fft_engines", "default_threads",
           "default_planner", "import_mkl", "import_torch", "torch_threads", "step_threads", "preload"]

log = logging.getLogger("cdi_plugins.backend")

BACKENDS = ("auto", "numpy", "cupy")
FFT_ENGINES = ("auto", "pyfftw", "scipy", "mkl", "torch", "cupy")
PLANNER_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")
DETERMINISTIC_PLANNER = "FFTW_ESTIMATE"
# Above this many elements the hot loop of fft: auto runs on an MKL FFT: MKL's own where installed (the pip
# package mkl, compute/_mkl.py; until 2026-12-01 through mkl_fft, the same transforms), else torch.fft
# (PyTorch's own MKL).  Both are deterministic and faster than FFTW's rule-made (FFTW_ESTIMATE) plans on our
# 2-core machine (FFT pair on 2 threads at 128^3: torch 8.4-10.5 ms against 12.3 ms; 256^3: 148-180 against
# 498 ms; bench_iteration, 2026-12-01).  MKL loads in ~0.1 s (mkl_fft took 0.2 s) against torch's 1.1-1.5 s,
# and the 620-iteration classic recipe at 128^3 ran in 10.6 s on mkl_fft against 13.3 s on torch (medians of
# four fresh processes each, alternated, 2026-12-01).  Smaller arrays stay on pyFFTW (MKL is faster there too,
# but the demo's and the README's 64^3 figures were computed on pyFFTW; benchmarks/bench_iteration.py,
# bench_recipe.py)
MKL_LOOP = 64 ** 3
SMALL_FFT = 64 ** 3  # up to this many elements an FFT runs on one thread (see Backend.threads_for)


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=None)
def _cupy_status() -> tuple[bool, str]:
    """(usable, reason) for CuPy: importable *and* a CUDA device that runs a kernel."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a broken CUDA install raising anything
        return False, f"CuPy is not installed ({exc.__class__.__name__}); install the extra: pip install 'cdi-plugins[gpu]'"
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy is installed but no CUDA device is present"
        float((cupy.arange(4, dtype=cupy.float32) ** 2).sum())  # compiles and runs a kernel
    except Exception as exc:
        return False, f"CuPy is installed but no CUDA device works: {exc}"
    return True, "ok"


def _installed(module: str) -> bool:
    """Whether *module* is installed, found without importing it (importing pyFFTW imports scipy.fftpack,
    ~0.3 s, numba ~0.5 s: `cdi validate` and small runs never need them)."""
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _have_mkl() -> bool:
    # Intel MKL's libmkl_rt (the pip package mkl, in the [fast] extra on x86-64), found without loading it
    from cdi_plugins.compute import _mkl
    return _mkl.rt_path() is not None


def _have_pyfftw() -> bool:
    # an installed pyFFTW that fails to import is reported when the first plan is made (_import_pyfftw)
    return _installed("pyfftw")


# FFTW's threads in the pyFFTW wheels are OpenMP threads of the wheel's own libgomp, which by default spins
# for a while after every parallel region: between two FFTs of an iteration that spinning thread holds a
# core that the elementwise kernels (numba's own threads) need, and on a busy machine it competes with
# everyone (128^3 FFT pair on our 2-core machine under load: 32 ms spinning, 17 ms passive).  torch's own
# libgomp (its FFT's threads) does the same.  A libgomp reads the policy once, when it is loaded, so it is
# set for that moment only; a user's own OMP_WAIT_POLICY is kept, and libraries loaded later see the
# environment as it was.
LOAD_OMP_WAIT_POLICY = "PASSIVE"


@contextlib.contextmanager
def _passive_omp_load():
    """``OMP_WAIT_POLICY`` set to LOAD_OMP_WAIT_POLICY for the block (the import of a library with its own
    OpenMP runtime), unless the user set one; the environment is restored afterwards."""
    saved = os.environ.get("OMP_WAIT_POLICY")
    if saved is None:
        os.environ["OMP_WAIT_POLICY"] = LOAD_OMP_WAIT_POLICY
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OMP_WAIT_POLICY", None)


def _import_pyfftw():
    if "pyfftw" in sys.modules:
        return sys.modules["pyfftw"]
    # pyFFTW imports dask.array (0.2-0.6 s, a third of a fresh `cdi run`'s imports) only to offer its dask
    # interface, which nothing here uses: where dask is not loaded yet it is hidden for that one import
    hide_dask = "dask" not in sys.modules
    if hide_dask:
        sys.modules["dask"] = None
    try:
        with _passive_omp_load():
            import pyfftw
    except Exception as exc:
        raise CDIError(f"pyFFTW is installed but cannot be imported ({exc.__class__.__name__}: {exc}); "
                       "reinstall it or use fft: scipy") from None
    finally:
        if hide_dask and sys.modules.get("dask", 0) is None:
            del sys.modules["dask"]
    return pyfftw


def import_mkl():
    """Intel MKL's FFT (:class:`compute._mkl.MKL`: FFTW3-interface plans on a privately loaded ``libmkl_rt``),
    loaded so that MKL's OpenMP threads sleep rather than spin between two FFTs (see LOAD_OMP_WAIT_POLICY).
    Intel's OpenMP runtime reads its wait policy when it starts, which the load makes it do inside the block
    (by default its threads spin 200 ms after every parallel region: a process sleeping between 64^3 FFTs
    used 1.14 CPU seconds per second, 0.24 started this way).  Raises CDIError where MKL is not usable."""
    from cdi_plugins.compute import _mkl
    if _have_pyfftw():
        # MKL loads its computational libraries globally, and they export FFTW3's function names: a pyFFTW
        # imported afterwards would bind to MKL's FFTW3 interface and its "FFTW" plans give MKL's bits (a
        # 64^3 transform's SHA-256 changed with the import order); imported first, it keeps its own FFTW
        _import_pyfftw()
    with _passive_omp_load():
        handle = _mkl.load()
    if handle is None:
        raise CDIError(f"{_mkl.error()}; or use fft: torch or fft: pyfftw")
    return handle


def _aligned_zeros(shape, dtype, align: int = 64) -> np.ndarray:
    """Zeros of *shape* and *dtype* whose data start on an *align*-byte boundary: MKL's FFT may round
    differently for differently aligned data, so every process gets the same alignment."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    off = -raw.ctypes.data % align
    return raw[off:off + nbytes].view(dtype).reshape(shape)


@functools.lru_cache(maxsize=None)
def import_torch():
    """PyTorch, imported the way every part of cdi-plugins should first import it.

    * Its OpenMP runtime is loaded with ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set a policy, or torch
      was imported before): by default its threads spin after every parallel region, holding the core that
      the numba kernels between two FFTs of the hot loop need (as pyFFTW's did, see LOAD_OMP_WAIT_POLICY).
    * Its thread count is set once, to the value it has: torch hands it to its FFT library (MKL) only when
      it is set; left at the default, a 128^3 FFT pair on 2 threads took 46 ms against 13.5 ms once set to
      the same 2 (2-core machine).
    """
    if "torch" not in sys.modules and _mkl_loaded():
        log.warning("torch is imported after Intel MKL in this process: torch's own MKL functions now resolve "
                    "to that MKL's, and its results may differ in the last bits from a process that imported "
                    "torch first (recipes load torch before their first step; see AlgorithmSpec.preload)")
    with _passive_omp_load():
        import torch
    torch.set_num_threads(torch.get_num_threads())
    return torch


def _mkl_loaded() -> bool:
    mod = sys.modules.get("cdi_plugins.compute._mkl")
    return mod is not None and mod.load.cache_info().currsize > 0


def preload(modules) -> None:
    """Import *modules* (torch through :func:`import_torch`) unless loaded or not installed, before the
    libraries a run loads on its way: the import order of native libraries decides which of two copies of
    one function (MKL's inside torch, the pip MKL's) a library calls.  Steps name theirs in
    ``AlgorithmSpec.preload``."""
    for name in dict.fromkeys(modules):
        if name in sys.modules or not _installed(name):
            continue
        if name == "torch":
            import_torch()
        else:
            importlib.import_module(name)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with torch's CPU threads set to *n* (None: as they are); torch's setting is process-wide
    and is restored afterwards.  Yields the torch module."""
    torch = import_torch()
    before = torch.get_num_threads()
    if n and int(n) != before:
        torch.set_num_threads(int(n))
    try:
        yield torch
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def step_threads(backend, size: int, requested: int | None = None) -> int | None:
    """CPU threads for a step's own work (torch in the nn and ad steps): *requested* if given, else what
    *backend*'s FFTs use for an array of *size* elements (one up to 64^3: see Backend.threads_for)."""
    if requested:
        return int(requested)
    if hasattr(backend, "threads_for"):
        return backend.threads_for(size)
    return getattr(backend, "threads", None)


def available_backends() -> dict[str, str]:
    """Map each concrete backend to ``"ok"`` or the reason it cannot be used."""
    ok, why = _cupy_status()
    return {"numpy": "ok", "cupy": why if not ok else "ok"}


def fft_engines() -> dict[str, str]:
    """Map each FFT engine to ``"ok"`` or the reason it cannot be used."""
    ok, why = _cupy_status()
    return {
        "pyfftw": "ok" if _have_pyfftw() else "pyFFTW is not installed; pip install 'cdi-plugins[fast]'",
        "scipy": "ok",
        "mkl": "ok" if _have_mkl() else "Intel MKL is not installed (libmkl_rt not found); "
                                         "pip install 'cdi-plugins[fast]' (x86-64)",
        "torch": "ok" if _installed("torch") else "PyTorch is not installed",
        "cupy": "ok" if ok else why,
    }


# --------------------------------------------------------------------------------------------
# FFTW wisdom cache: planning with FFTW_MEASURE costs 0.3 s at 64^3 and seconds at 256^3,
# so plans learnt once are kept on disk and reused by every later run.

_WISDOM_LOCK = threading.Lock()
_wisdom_loaded = False


WISDOM_FORMAT = "cdi-plugins FFTW wisdom 1"


def _wisdom_file() -> str:
    base = os.environ.get("CDI_PLUGINS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cdi_plugins")
    # JSON of FFTW's own wisdom text: reading it cannot run code, unlike the pickle of earlier versions
    # (a shared group cache would let anyone who can write there run code in everyone's `cdi run`)
    return os.path.join(base, "fftw_wisdom.json")


def _read_wisdom(path: str) -> tuple[bytes, ...] | None:
    """FFTW wisdom from *path*, or None when the file is missing or is not wisdom this module wrote."""
    import json
    try:
        with open(path, encoding="ascii") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != WISDOM_FORMAT:
        return None
    wisdom = doc.get("wisdom")
    if (not isinstance(wisdom, list) or len(wisdom) != 3
            or not all(isinstance(w, str) and (w == "" or w.startswith("(fftw-")) for w in wisdom)):
        return None
    return tuple(w.encode("ascii") for w in wisdom)


def _load_wisdom() -> None:
    global _wisdom_loaded
    if _wisdom_loaded:
        return
    _wisdom_loaded = True
    import pyfftw
    wisdom = _read_wisdom(_wisdom_file())
    if wisdom is not None:  # no cache yet, or a stale or foreign one: planning simply starts afresh
        try:
            pyfftw.import_wisdom(wisdom)
        except Exception as exc:  # wisdom FFTW itself refuses
            log.debug("FFTW refused the cached wisdom: %s", exc)


def _save_wisdom() -> None:
    import json

    import pyfftw
    path = _wisdom_file()
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".wisdom-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            json.dump({"format": WISDOM_FORMAT, "wisdom": [w.decode("ascii") for w in pyfftw.export_wisdom()]}, fh)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:  # a read-only home must not stop a reconstruction
        log.debug("could not save FFTW wisdom to %s: %s", path, exc)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


# --------------------------------------------------------------------------------------------


class Workspace:
    """Buffers and FFT plans for one array shape, reused by every step of a run.

    Attributes
    ----------
    x : array of complex64
        The iterate.  Kernels keep the object here in FFT order (origin at index 0).
    shape : tuple of int

    Methods
    -------
    forward() -> array
        Unnormalised FFT of ``x``; returns the buffer holding the result.
    backward(buf) -> array
        Unnormalised inverse FFT of *buf*, in place where the engine allows;
        returns the buffer holding the result.  Divide by ``size`` yourself
        (kernels fold it into the modulus ratio so it costs nothing).
    """

    def __init__(self, backend: "Backend", shape: tuple[int, ...]):
        self.backend = backend
        self.shape = tuple(shape)
        self.size = int(np.prod(shape))
        xp = backend.xp
        self.engine = eng = backend.loop_engine(self.size)
        self._threads = backend.threads_for(self.size)   # the FFT's (and the fused passes') threads
        self._real = None   # smooth_abs()'s buffers (and pyFFTW plans), made on first use
        self._swork = None  # smoothed_support()'s KernelWork (mkl engine), made on first use
        if eng == "mkl":
            from cdi_plugins.compute._mkl import FFTW_BACKWARD, FFTW_FORWARD
            self._mkl = import_mkl()
            self.x = _aligned_zeros(shape, np.complex64)
            self._w = _aligned_zeros(shape, np.complex64)
            self._mkl_plans = self._mkl.plans()       # destroyed with this workspace
            x, w = self.x.ctypes.data, self._w.ctypes.data
            self._fwd = self._mkl_plans.make(self.shape, x, w, FFTW_FORWARD, threads=self._threads)
            self._bwd = self._mkl_plans.make(self.shape, w, w, FFTW_BACKWARD, threads=self._threads)
        elif eng == "torch":
            torch = import_torch()
            # NumPy views of torch tensors (shared memory): the kernels see arrays, torch.fft fills them
            self._xt = torch.zeros(shape, dtype=torch.complex64)
            self._wt = torch.empty(shape, dtype=torch.complex64)
            self.x, self._w = self._xt.numpy(), self._wt.numpy()
        elif eng == "pyfftw":
            pyfftw = _import_pyfftw()
            self.x = pyfftw.empty_aligned(shape, dtype="complex64")
            self._w = pyfftw.empty_aligned(shape, dtype="complex64")
            self.x[...] = 0
            # out-of-place forward must keep x intact; the inverse runs in place on the work buffer
            self._fwd, self._bwd = self._plan(
                (self.x, self._w, "FFTW_FORWARD", (), {}),
                (self._w, self._w, "FFTW_BACKWARD", ("FFTW_DESTROY_INPUT",), {"normalise_idft": False}))
        else:
            self.x = xp.zeros(shape, dtype=xp.complex64)

    def _plan(self, *specs):
        """pyFFTW plans for *specs* ``(input, output, direction, extra flags, keywords)``, made with the
        backend's planner effort and thread count.  FFTW_ESTIMATE plans are made without any wisdom FFTW
        holds (timed plans of an earlier FFTW_MEASURE backend in this process would be taken from it), so
        they are the same in every process; timed plans load and save the wisdom cache."""
        pyfftw = _import_pyfftw()
        backend = self.backend
        effort = backend.planner_effort
        threads = self._threads
        with _WISDOM_LOCK:
            before = pyfftw.export_wisdom()
            if effort == DETERMINISTIC_PLANNER:
                pyfftw.forget_wisdom()
            else:
                _load_wisdom()
            try:
                plans = tuple(pyfftw.FFTW(a, b, axes=(0, 1, 2), direction=direction, flags=(effort, *flags),
                                          threads=threads, **kw) for a, b, direction, flags, kw in specs)
            finally:
                if effort == DETERMINISTIC_PLANNER:
                    pyfftw.forget_wisdom()
                    pyfftw.import_wisdom(before)
            if effort != DETERMINISTIC_PLANNER and pyfftw.export_wisdom() != before:
                _save_wisdom()
        return plans

    def _mkl_run(self, *plans) -> None:
        """Run MKL *plans* with this workspace's threads, set on the calling thread only
        (``mkl_set_num_threads_local``, about 1 microsecond) and restored afterwards."""
        mkl = self._mkl
        before = mkl.set_threads_local(self._threads)
        try:
            for p in plans:
                mkl.run(p)
        finally:
            mkl.set_threads_local(before)

    def _mkl_smoothing(self, kernel=None):
        """mkl engine: ``(c, k_full, forward, inverse)``: the complex buffer of the smoothing and its in-place
        plans (made once), and *kernel* on the full grid (made once per kernel; None: not needed)."""
        if self._real is None:
            from cdi_plugins.compute._mkl import FFTW_BACKWARD, FFTW_FORWARD
            c = _aligned_zeros(self.shape, np.complex64)
            a = c.ctypes.data
            self._real = [c, None, None, self._mkl_plans.make(self.shape, a, a, FFTW_FORWARD, threads=self._threads),
                          self._mkl_plans.make(self.shape, a, a, FFTW_BACKWARD, threads=self._threads)]
        c, k_half, k_full, fwd, bwd = self._real
        if kernel is not None and k_half is not kernel:
            from cdi_plugins.compute.fourier import full_from_half
            k_full = full_from_half(kernel, self.shape)
            self._real[1:3] = [kernel, k_full]
        return c, k_full, fwd, bwd

    def smoothing_buffer(self):
        """mkl engine: the complex64 buffer shrink-wrap smooths in (made on first use)."""
        return self._mkl_smoothing()[0]

    def smoothed_support(self, a, factors, threshold: float):
        """Shrink-wrap's new support, ``smooth_abs(a, kernel) > threshold * max`` for the separable Gaussian
        kernel given by its three 1-D *factors* (:func:`support.gaussian_factors`), in fused multi-threaded
        passes (:func:`kernels.smoothed_support`) where that applies: the mkl engine with the numba kernels and
        a C-contiguous complex64 *a*.  Returns None elsewhere (the caller then thresholds :meth:`smooth_abs`).
        *a* None: :meth:`smoothing_buffer` already holds ``|a| + 0j`` (the cache-blocked loop writes it)."""
        if self.engine != "mkl" or (a is not None and (a.dtype != np.complex64 or not a.flags.c_contiguous
                                                        or a.shape != self.shape)):
            return None
        from cdi_plugins.compute import kernels
        if self._swork is None:
            self._swork = kernels.KernelWork(np, self.shape, feedback=False, threads=self._threads)
        if self._swork.impl != "numba":
            return None
        c, _, cfwd, cbwd = self._mkl_smoothing()
        return kernels.smoothed_support(self._swork, a, c, factors, lambda b: self._mkl_run(cfwd),
                                        lambda b: self._mkl_run(cbwd), threshold)

    def smooth_abs(self, a, kernel):
        """``size * irfftn(rfftn(|a|) * kernel)`` in float32 with this workspace's engine (pyFFTW real plans,
        MKL or torch.fft), for shrink-wrap in the hot loop: scipy.fft's real transforms cost twice FFTW's.
        *a* is real or complex of the workspace's shape, *kernel* a float32 array on the rfft grid.
        Unnormalised (pyFFTW's own 1/N pass costs as much as the transform): a threshold relative to
        the maximum does not need it.  Returns a buffer that the next call overwrites (pyFFTW, mkl) or a new
        array (torch)."""
        if self.engine == "mkl":
            # complex transforms in a buffer of this workspace (mkl_fft's real N-d transforms, used until
            # 2026-12-01, looped over 2-D slices in Python: a 128^3 pair took 37 ms against 8 ms complex)
            c, k_full, fwd, bwd = self._mkl_smoothing(kernel)
            np.abs(a, out=c.real)
            c.imag[...] = 0
            self._mkl_run(fwd)
            c *= k_full
            self._mkl_run(bwd)
            return c.real
        if self.engine == "torch":
            with torch_threads(self._threads) as torch:
                r = torch.from_numpy(np.abs(a))
                spec = torch.fft.rfftn(r)
                spec *= torch.from_numpy(kernel)
                return torch.fft.irfftn(spec, s=self.shape, norm="forward").numpy()
        if self._real is None:
            pyfftw = _import_pyfftw()
            r = pyfftw.empty_aligned(self.shape, dtype="float32")
            c = pyfftw.empty_aligned(self.shape[:-1] + (self.shape[-1] // 2 + 1,), dtype="complex64")
            self._real = (r, c) + self._plan((r, c, "FFTW_FORWARD", (), {}),
                                             (c, r, "FFTW_BACKWARD", ("FFTW_DESTROY_INPUT",),
                                              {"normalise_idft": False}))
        r, c, fwd, bwd = self._real
        np.abs(a, out=r)
        fwd()
        c *= kernel
        bwd()
        return r

    def forward(self):
        b = self.backend
        if self.engine == "mkl":
            self._mkl_run(self._fwd)
            return self._w
        if self.engine == "pyfftw":
            self._fwd()
            return self._w
        if self.engine == "torch":
            with torch_threads(self._threads) as torch:
                torch.fft.fftn(self._xt, out=self._wt)
            return self._w
        return b.fftn(self.x)

    def backward(self, buf):
        if self.engine not in ("mkl", "torch", "pyfftw"):
            return self.backend.ifftn(buf, overwrite=True, normalise=False)
        if buf is not self._w:            # these engines transform their own work buffer in place
            self._w[...] = buf
        if self.engine == "mkl":
            self._mkl_run(self._bwd)           # unnormalised
        elif self.engine == "torch":
            with torch_threads(self._threads) as torch:
                torch.fft.ifftn(self._wt, norm="forward", out=self._wt)
        else:
            self._bwd()
        return self._w


class Backend:
    """An array namespace plus FFT engine.

    Parameters
    ----------
    name : {"numpy", "cupy"}
    fft : {"auto", "pyfftw", "scipy", "mkl", "torch", "cupy"}
    threads : int, optional
        FFT threads on the CPU (default: every core this process may use).
    planner_effort : str
        pyFFTW planner flag: ``FFTW_ESTIMATE`` (default: reproducible), ``FFTW_MEASURE``,
        ``FFTW_PATIENT`` (plans chosen by timing: faster on some shapes, not reproducible).
    """

    def __init__(self, name: str, fft: str = "auto", threads: int | None = None,
                 planner_effort: str = DETERMINISTIC_PLANNER):
        self.name = name
        self.threads = int(threads or default_threads())
        self._threads_explicit = threads is not None
        self.planner_effort = planner_effort
        self.fft_requested = fft
        if name == "cupy":
            import cupy
            import cupyx.scipy.fft as cufft
            self.xp = cupy
            self._fft_module = cufft
            if fft not in ("auto", "cupy"):
                raise CDIError(f"fft engine {fft!r} does not run on the cupy backend; use 'auto' or 'cupy'")
            self.fft_engine = "cupy"
        else:
            self.xp = np
            self._fft_module = None   # scipy.fft, imported on the first transform (validation never needs it)
            if fft == "auto":
                fft = "pyfftw" if _have_pyfftw() else "scipy"
            elif fft == "cupy":
                raise CDIError("fft engine 'cupy' needs the cupy backend")
            elif fft == "pyfftw" and not _have_pyfftw():
                raise CDIError("fft engine 'pyfftw' asked for but pyFFTW is not installed; "
                               "pip install 'cdi-plugins[fast]' or use fft: scipy")
            elif fft == "mkl" and not _have_mkl():
                raise CDIError("fft engine 'mkl' asked for but Intel MKL is not installed (libmkl_rt not found); "
                               "pip install 'cdi-plugins[fast]' (x86-64) or use fft: auto")
            self.fft_engine = fft
        self._workspaces: dict[tuple, Workspace] = {}

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, fft={self.fft_engine!r}, threads={self.threads})"

    @property
    def _fft(self):
        if self._fft_module is None:
            import scipy.fft
            self._fft_module = scipy.fft
        return self._fft_module

    # ---- arrays -----------------------------------------------------------------------
    def asarray(self, a, dtype=None):
        """Move *a* (NumPy, CuPy, or anything DLPack speaks) onto this backend."""
        xp = self.xp
        if self.name == "cupy" and hasattr(a, "__dlpack__") and not isinstance(a, np.ndarray):
            a = xp.from_dlpack(a)  # zero-copy from torch / CuPy on the GPU
        out = xp.asarray(a)
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_numpy(self, a) -> np.ndarray:
        if self.name == "cupy" and not isinstance(a, np.ndarray):
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def threads_for(self, size: int) -> int:
        """FFT threads for an array of *size* elements.

        Unless the user set ``threads``, arrays up to 64^3 use one thread: there a
        2-thread FFTW pair is slower than a 1-thread one (1.8 ms against 1.3 ms at
        64^3 on our 2-core machine) and, on a busy machine, many times slower.
        """
        if self._threads_explicit or size > SMALL_FFT:
            return self.threads
        return 1

    def loop_engine(self, size: int) -> str:
        """The FFT engine of the hot loop for arrays of *size* elements: ``fft_engine``, except that with
        ``fft: auto`` and the deterministic planner arrays larger than 64^3 use an MKL FFT, MKL's own where
        installed, else torch.fft (see MKL_LOOP)."""
        if (self.name == "numpy" and self.fft_requested == "auto" and size > MKL_LOOP
                and self.planner_effort == DETERMINISTIC_PLANNER):
            if _have_mkl():
                return "mkl"
            if _installed("torch"):
                return "torch"
        return self.fft_engine

    def workspace(self, shape) -> Workspace:
        """The cached :class:`Workspace` for *shape* (made on first use)."""
        key = tuple(int(s) for s in shape)
        ws = self._workspaces.get(key)
        if ws is None:
            ws = self._workspaces[key] = Workspace(self, key)
        return ws

    def existing_workspace(self, shape) -> Workspace | None:
        """The :class:`Workspace` for *shape* if one was made, else None (makes nothing)."""
        return self._workspaces.get(tuple(int(s) for s in shape))

    # ---- FFTs outside the hot loop (allocating; plans cached by the library) -----------
    def _kw(self, a, overwrite=False):
        kw = {"axes": (0, 1, 2), "overwrite_x": overwrite}
        if self.name == "numpy":
            kw["workers"] = self.threads_for(a.size)
        return kw

    def fftn(self, a, overwrite=False):
        """Unnormalised forward FFT (FFT order in and out)."""
        return self._fft.fftn(a, **self._kw(a, overwrite))

    def ifftn(self, a, overwrite=False, normalise=True):
        """Inverse FFT; ``normalise=False`` skips the 1/N factor."""
        return self._fft.ifftn(a, norm="backward" if normalise else "forward", **self._kw(a, overwrite))

    def rfftn(self, a):
        return self._fft.rfftn(a, **self._kw(a))

    def irfftn(self, a, shape):
        return self._fft.irfftn(a, s=shape, **self._kw(a))

    def fftshift(self, a):
        return self.xp.fft.fftshift(a)

    def ifftshift(self, a):
        return self.xp.fft.ifftshift(a)

    def synchronize(self) -> None:
        """Wait for queued GPU work (a no-op on the CPU); used only for timing."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()


@functools.lru_cache(maxsize=None)
def _cached_backend(name, fft, threads, planner_effort) -> Backend:
    return Backend(name, fft=fft, threads=threads, planner_effort=planner_effort)


def default_planner() -> str:
    """The pyFFTW planner effort: ``CDI_PLUGINS_FFTW_PLANNER`` if set, else ``FFTW_ESTIMATE``."""
    return os.environ.get("CDI_PLUGINS_FFTW_PLANNER") or DETERMINISTIC_PLANNER


def get_backend(name: str = "auto", *, fft: str = "auto", threads: int | None = None,
                planner_effort: str | None = None) -> Backend:
    """Resolve a backend name to a (cached) :class:`Backend`.

    ``auto`` is CuPy when a CUDA device works, else NumPy.  Asking for ``cupy``
    where it cannot run is a :class:`CDIError` that says why.  *planner_effort*
    defaults to :func:`default_planner`.
    """
    if planner_effort is None:
        planner_effort = default_planner()
    if name not in BACKENDS:
        raise CDIError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if fft not in FFT_ENGINES:
        raise CDIError(f"unknown fft engine {fft!r}; choose one of {', '.join(FFT_ENGINES)}")
    if planner_effort not in PLANNER_EFFORTS:
        raise CDIError(f"unknown FFTW planner effort {planner_effort!r} (CDI_PLUGINS_FFTW_PLANNER or "
                       f"planner_effort); choose one of {', '.join(PLANNER_EFFORTS)}")
    ok, why = _cupy_status()
    if name == "auto":
        name = "cupy" if ok and fft in ("auto", "cupy") else "numpy"
    elif name == "cupy" and not ok:
        raise CDIError(f"backend 'cupy' asked for but it cannot run here: {why}. "
                       "Use backend: numpy (or auto) on a machine without a GPU")
    return _cached_backend(name, fft, None if threads is None else int(threads), planner_effort)
