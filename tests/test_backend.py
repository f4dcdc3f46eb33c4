"""Array backends and FFT engines."""

import json
import os
import pickle

import numpy as np
import pytest
import scipy.fft

from cdi_plugins import CDIError
from cdi_plugins.compute.backend import available_backends, fft_engines, get_backend

from tests.conftest import HAVE_GPU


def test_auto_is_numpy_without_a_gpu():
    be = get_backend("auto")
    assert be.name == ("cupy" if HAVE_GPU else "numpy")


@pytest.mark.skipif(HAVE_GPU, reason="only meaningful without a GPU")
def test_cupy_without_a_gpu_is_a_clear_error():
    with pytest.raises(CDIError, match="cupy") as e:
        get_backend("cupy")
    assert "GPU" in str(e.value) or "CUDA" in str(e.value)
    assert available_backends()["cupy"] != "ok"


def test_unknown_names_are_errors():
    with pytest.raises(CDIError, match="unknown backend"):
        get_backend("jax")
    with pytest.raises(CDIError, match="unknown fft"):
        get_backend("numpy", fft="numpy")


@pytest.mark.parametrize("engine", [e for e, why in fft_engines().items() if why == "ok" and e != "cupy"])
@pytest.mark.parametrize("shape", [(16, 16, 16), (24, 20, 18)])
def test_workspace_fft_matches_scipy_and_round_trips(engine, shape):
    be = get_backend("numpy", fft=engine, threads=1)
    ws = be.workspace(shape)
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ws.x[...] = a
    F = ws.forward()
    assert F.dtype == np.complex64
    assert np.allclose(F, scipy.fft.fftn(a), atol=1e-3 * np.abs(F).max())
    assert np.array_equal(ws.x, a), "the forward transform must leave the iterate intact"
    back = ws.backward(F) / ws.size
    assert np.allclose(back, a, atol=1e-5 * np.abs(a).max())
    assert be.workspace(shape) is ws  # plans and buffers are reused


def test_small_ffts_use_one_thread_unless_told():
    be = get_backend("numpy")
    assert be.threads_for(32 ** 3) == 1
    assert be.threads_for(128 ** 3) == be.threads
    assert get_backend("numpy", threads=2).threads_for(32 ** 3) == 2


def test_fftw_wisdom_is_cached_on_disk(tmp_path, monkeypatch):
    if fft_engines()["pyfftw"] != "ok":
        pytest.skip("pyFFTW not installed")
    from cdi_plugins.compute import backend as bk
    monkeypatch.setenv("CDI_PLUGINS_CACHE", str(tmp_path))
    bk.Workspace(get_backend("numpy", fft="pyfftw", threads=1, planner_effort="FFTW_MEASURE"), (20, 22, 26))
    doc = json.loads((tmp_path / "fftw_wisdom.json").read_text())
    assert doc["format"] == bk.WISDOM_FORMAT and doc["wisdom"][1].startswith("(fftw-")  # single precision
    assert bk._read_wisdom(str(tmp_path / "fftw_wisdom.json"))[1] == doc["wisdom"][1].encode()
    assert [p.name for p in tmp_path.iterdir()] == ["fftw_wisdom.json"]           # no temporary file left


class _Payload:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_crafted_wisdom_cache_cannot_run_code(tmp_path, monkeypatch):
    if fft_engines()["pyfftw"] != "ok":
        pytest.skip("pyFFTW not installed")
    from cdi_plugins.compute import backend as bk
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    # the old pickle name, and the JSON name holding a pickle or foreign JSON: none is executed or imported
    (tmp_path / "fftw_wisdom.pickle").write_bytes(payload)
    monkeypatch.setenv("CDI_PLUGINS_CACHE", str(tmp_path))
    for content in (payload, b'{"format": "x", "wisdom": []}', b'{"format": "%s", "wisdom": ["a", "b", "c"]}'
                    % bk.WISDOM_FORMAT.encode()):
        (tmp_path / "fftw_wisdom.json").write_bytes(content)
        assert bk._read_wisdom(str(tmp_path / "fftw_wisdom.json")) is None
        monkeypatch.setattr(bk, "_wisdom_loaded", False)
        bk.Workspace(get_backend("numpy", fft="pyfftw", threads=1, planner_effort="FFTW_MEASURE"), (18, 20, 22))
        assert not marker.exists()
    pickle.loads(payload)              # the payload is real: unpickling it does create the marker
    assert marker.exists()


@pytest.mark.gpu
def test_cupy_workspace_round_trip():
    import cupy as cp
    be = get_backend("cupy")
    ws = be.workspace((32, 32, 32))
    a = cp.random.standard_normal((32, 32, 32)).astype(cp.complex64)
    ws.x[...] = a
    back = ws.backward(ws.forward()) / ws.size
    assert float(cp.abs(back - a).max()) < 1e-4


@pytest.mark.gpu
def test_cupy_and_numpy_give_the_same_reconstruction():
    import cdi_plugins
    from cdi_plugins.compute.metrics import compare_to_truth
    recipe = {"data": {"simulate": {"shape": 48, "seed": 1}}, "steps": "2*(20*ER+100*HIO)+20*ER"}
    gpu = cdi_plugins.run({**recipe, "backend": "cupy"})
    cpu = cdi_plugins.run({**recipe, "backend": "numpy"})
    assert gpu.obj.dtype == np.complex64 and isinstance(gpu.obj, np.ndarray)
    assert compare_to_truth(gpu.obj, gpu.truth)["error"] < 0.1
    assert abs(gpu.chi2 - cpu.chi2) < 0.2 * cpu.chi2 + 1e-5


def test_arrays_above_64_cubed_loop_on_mkl_with_auto(monkeypatch):
    # MKL's FFT (MKL's own, else torch.fft) beats FFTW's rule-made FFTW_ESTIMATE plans from 128^3 on
    # (bench_iteration), and importing it pays for itself there: with fft: auto and the reproducible planner
    # the hot loop switches above 64^3; an explicit engine or timed plans stay
    from cdi_plugins.compute import backend as B
    big = "mkl" if fft_engines()["mkl"] == "ok" else "torch"
    auto = B.Backend("numpy", fft="auto")
    small = "pyfftw" if fft_engines()["pyfftw"] == "ok" else "scipy"
    assert auto.loop_engine(64 ** 3) == small
    assert auto.loop_engine(64 ** 3 + 1) == big and auto.loop_engine(256 ** 3) == big
    assert B.Backend("numpy", fft="scipy").loop_engine(256 ** 3) == "scipy"
    assert B.Backend("numpy", fft="torch").loop_engine(256 ** 3) == "torch"
    if small == "pyfftw":
        assert B.Backend("numpy", fft="pyfftw").loop_engine(256 ** 3) == "pyfftw"
        assert B.Backend("numpy", fft="auto", planner_effort="FFTW_MEASURE").loop_engine(256 ** 3) == "pyfftw"
    assert auto.workspace((8, 8, 8)).engine == small
    assert auto.workspace((66, 64, 64)).engine == big
    # without MKL the loop falls back on torch.fft, without either it stays
    monkeypatch.setattr(B, "_have_mkl", lambda: False)
    assert auto.loop_engine(256 ** 3) == "torch"
    with pytest.raises(CDIError, match="Intel MKL is not installed"):
        B.Backend("numpy", fft="mkl")
    real = B._installed
    monkeypatch.setattr(B, "_installed", lambda m: False if m == "torch" else real(m))
    assert auto.loop_engine(256 ** 3) == small


def _mkl_or_skip():
    from cdi_plugins.compute.backend import fft_engines
    if fft_engines()["mkl"] != "ok":
        pytest.skip(fft_engines()["mkl"])


_PYFFTW_HASH = r"""
import hashlib, sys
import numpy as np
from cdi_plugins.compute.backend import get_backend, import_mkl
if sys.argv[1] == "mkl-first":
    import_mkl()
    get_backend("numpy", fft="mkl", threads=1).workspace((64, 64, 64)).forward()
ws = get_backend("numpy", fft="pyfftw", threads=1).workspace((64, 64, 64))
ws.x[...] = np.random.default_rng(0).standard_normal((64, 64, 64))
print(hashlib.sha256(ws.forward().tobytes()).hexdigest())
"""


def test_pyfftw_gives_its_own_bits_after_mkl_was_loaded():
    """libmkl_rt exports FFTW3's function names: loaded globally (as mkl-service and mkl_fft load it), a pyFFTW
    imported after it ran MKL's transforms under FFTW's name (another SHA-256 for the same 64^3 transform).
    The mkl engine loads it privately (compute/_mkl.py), so the pyfftw engine gives its own bits whatever ran
    before it."""
    pytest.importorskip("pyfftw")
    _mkl_or_skip()
    import subprocess
    import sys
    out = [subprocess.run([sys.executable, "-c", _PYFFTW_HASH, mode], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.strip()
           for mode in ("plain", "mkl-first")]
    assert out[0] == out[1] and len(out[0]) == 64


def test_mkl_workspace_transforms_match_scipy_on_aligned_buffers():
    """The mkl engine: forward is the unnormalised FFT of x, backward the unnormalised inverse in place,
    smooth_abs the smoothed modulus; both buffers start on a 64-byte boundary (MKL's rounding may depend on
    alignment), and the thread setting of the calling thread is left as it was."""
    _mkl_or_skip()
    import scipy.fft
    from cdi_plugins.compute.backend import Backend, import_mkl
    from cdi_plugins.compute.support import gaussian_kernel_rfft, smooth
    be = Backend("numpy", fft="mkl", threads=1)
    shape = (12, 10, 8)
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ws = be.workspace(shape)
    assert ws.engine == "mkl" and ws.x.ctypes.data % 64 == 0 and ws._w.ctypes.data % 64 == 0
    mkl = import_mkl()
    before = mkl.max_threads()
    ws.x[...] = a
    F = ws.forward()
    assert F is ws._w and np.array_equal(ws.x, a)
    np.testing.assert_allclose(F, scipy.fft.fftn(a), rtol=1e-5, atol=1e-4)
    p = ws.backward(F.copy())
    np.testing.assert_allclose(p, a * a.size, rtol=1e-5, atol=1e-3)
    k = gaussian_kernel_rfft(be, shape, 1.0)
    np.testing.assert_allclose(ws.smooth_abs(a, k) / a.size, smooth(be, np.abs(a), 1.0), rtol=1e-5, atol=1e-6)
    assert mkl.max_threads() == before


def test_torch_workspace_transforms_match_scipy_and_restore_torch_threads():
    """The torch engine's buffers are NumPy views of torch tensors: forward is the unnormalised FFT of x,
    backward the unnormalised inverse, smooth_abs the smoothed modulus; torch's thread setting is left as
    it was found."""
    import scipy.fft
    import torch
    from cdi_plugins.compute.backend import Backend
    from cdi_plugins.compute.support import gaussian_kernel_rfft, smooth
    be = Backend("numpy", fft="torch", threads=1)
    shape = (12, 10, 8)
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ws = be.workspace(shape)
        assert ws.engine == "torch" and isinstance(ws.x, np.ndarray)
        ws.x[...] = a
        F = ws.forward()
        np.testing.assert_allclose(F, scipy.fft.fftn(a), rtol=1e-5, atol=1e-4)
        p = ws.backward(F.copy())
        np.testing.assert_allclose(p, a * a.size, rtol=1e-5, atol=1e-3)
        k = gaussian_kernel_rfft(be, shape, 1.0)
        np.testing.assert_allclose(ws.smooth_abs(a, k) / a.size, smooth(be, np.abs(a), 1.0), rtol=1e-5, atol=1e-6)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_importing_pyfftw_leaves_the_environment_and_dask_as_they_were():
    """The FFTW threads' wait policy is set for pyFFTW's own OpenMP runtime only, and dask (hidden while
    pyFFTW is imported, which would load dask.array for nothing) imports normally afterwards."""
    pytest.importorskip("pyfftw")
    import subprocess
    import sys
    code = ("import os, sys\n"
            "from cdi_plugins.compute.backend import get_backend\n"
            "get_backend('numpy', fft='pyfftw', threads=1).workspace((8, 8, 8))\n"
            "print('OMP_WAIT_POLICY' in os.environ, 'dask' in sys.modules, 'dask.array' in sys.modules)\n"
            "import dask.array\n"
            "print(dask.array.ones(3).sum().compute())\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["False", "False", "False", "3.0"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"     # the user's own choice stays
    out = subprocess.run([sys.executable, "-c", code.replace("'OMP_WAIT_POLICY' in os.environ",
                                                             "os.environ['OMP_WAIT_POLICY']")],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.split()[0] == "ACTIVE"


@pytest.mark.parametrize("engine", ["mkl", "torch"])
def test_importing_an_mkl_engine_leaves_the_environment_as_it_was(engine):
    """MKL's and torch's OpenMP runtimes start with the passive wait policy, set for that load only; a
    user's own policy stays.  The mkl engine does not load torch."""
    if engine == "mkl":
        _mkl_or_skip()
    else:
        pytest.importorskip(engine)
    import subprocess
    import sys
    code = ("import os, sys\n"
            "from cdi_plugins.compute.backend import get_backend\n"
            f"ws = get_backend('numpy', fft={engine!r}, threads=1).workspace((8, 8, 8))\n"
            "print(ws.engine, 'torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == [engine, str(engine == "torch"), "None"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == [engine, str(engine == "torch"), "ACTIVE"]


def test_torch_is_loaded_only_by_a_run_that_loops_on_it():
    """The framework's one torch import (the hot loop's FFT engine above 64^3 without MKL) happens inside
    such a run: validating a recipe or a small iterative run never loads torch, nor does a large one on MKL."""
    import subprocess
    import sys
    code = ("import sys, cdi_plugins\n"
            "from cdi_plugins.recipe import load_recipe\n"
            "load_recipe({'data': {'simulate': {'shape': 128, 'seed': 1}}, 'steps': '2*HIO'})\n"
            "cdi_plugins.run({'data': {'simulate': {'shape': 32, 'seed': 1}}, 'steps': '3*ER'}, write=False)\n"
            "print('torch' in sys.modules)\n"
            "r = cdi_plugins.run({'data': {'simulate': {'shape': 66, 'seed': 1}}, 'steps': '2*ER'}, write=False)\n"
            "print('torch' in sys.modules, r.metadata['fft'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    big = "mkl" if fft_engines()["mkl"] == "ok" else "torch"
    assert out.split() == ["False", str(big == "torch"), big]


def _noisy_blob(shape=(24, 20, 18)):
    """A Gaussian blob with a random phase and noise: a support that shrink-wrap can find (complex64)."""
    rng = np.random.default_rng(3)
    z, y, x = np.indices(shape)
    blob = np.exp(-((z - 12) ** 2 / 30 + (y - 10) ** 2 / 20 + (x - 9) ** 2 / 15))
    return (blob * np.exp(1j * rng.uniform(-3, 3, shape)) + 0.05 * rng.standard_normal(shape)).astype(np.complex64)


@pytest.mark.parametrize("engine, kernels", [("pyfftw", None), ("mkl", "numba"), ("mkl", "numpy")])
def test_shrink_wrap_on_the_workspace_matches_scipy(engine, kernels, monkeypatch):
    """Shrink-wrap in the hot loop smooths on the workspace's transforms: pyFFTW's real plans, or on the mkl
    engine complex transforms in a workspace buffer, whose |a|, kernel product and threshold run as fused passes
    on every core with the numba kernels (smoothed_support) and are thresholded from smooth_abs with the NumPy
    ones: the same support as scipy.fft's in every case."""
    if engine == "mkl":
        _mkl_or_skip()
    else:
        pytest.importorskip(engine)
    if kernels:
        pytest.importorskip(kernels)
        monkeypatch.setenv("CDI_PLUGINS_KERNELS", kernels)
    from cdi_plugins.compute.backend import Backend
    from cdi_plugins.compute.support import shrink_wrap
    obj = _noisy_blob()
    fast = Backend("numpy", fft=engine, threads=2)
    ws = fast.workspace(obj.shape)
    ref = shrink_wrap(get_backend("numpy", fft="scipy", threads=1), obj, 1.3, 0.3)
    got = shrink_wrap(fast, obj, 1.3, 0.3)
    assert ws._real is not None                       # the workspace's buffers (and plans) were used
    assert ws._swork is None if engine == "pyfftw" else ws._swork.impl == kernels
    assert got.dtype == bool and got.shape == obj.shape
    assert 0.02 < ref.mean() < 0.9
    assert (got != ref).sum() <= 2                    # rounding may flip a voxel sitting on the threshold
    if engine == "mkl":   # a real input is thresholded from smooth_abs, with the same result
        from cdi_plugins.compute.support import gaussian_factors
        assert ws.smoothed_support(np.abs(obj), gaussian_factors(obj.shape, 1.3), 0.3) is None
        assert (shrink_wrap(fast, np.abs(obj), 1.3, 0.3) != got).sum() <= 2


_ORDER = r"""
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
import cdi_plugins
sim = {"data": {"simulate": {"shape": 72, "seed": 1}}, "seed": 0}
if sys.argv[1] == "iterative-first":     # an earlier run in this process loaded MKL, with no torch step
    cdi_plugins.run({**sim, "steps": "3*ER"}, write=False)
r = cdi_plugins.run({**sim, "steps": [{"algorithm": "er", "iterations": 3}, {"algorithm": "ad", "iterations": 2}]},
                    write=False)
print("engine", r.metadata["fft"])
"""


def test_a_recipe_loads_torch_before_mkl():
    """MKL, once started, exports the MKL functions torch carries inside, and a torch imported later calls
    those instead of its own (the last bits of its results change).  A recipe loads the modules its steps
    name in ``preload`` (torch for nn and ad) before its first step, so even when its iterative step starts
    MKL first, torch is already there; a process that ran an MKL step in an earlier recipe gets a warning."""
    pytest.importorskip("torch")
    _mkl_or_skip()
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {mode: subprocess.run([sys.executable, "-c", _ORDER, mode], capture_output=True, text=True, check=True,
                                cwd=root).stdout for mode in ("plain", "iterative-first")}
    assert "engine mkl" in out["plain"] and "torch is imported after Intel MKL" not in out["plain"]
    assert "torch is imported after Intel MKL" in out["iterative-first"]


_COMPARE = r"""
import hashlib, logging, os, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
import cdi_plugins
d = sys.argv[2]
head = "data: {simulate: {shape: 72, seed: 1}}\nseed: 0\n"
with open(os.path.join(d, "plain.yaml"), "w") as f:
    f.write(head + "steps: 3*ER\n")
with open(os.path.join(d, "polish.yaml"), "w") as f:
    f.write(head + "steps: [{algorithm: er, iterations: 3}, {algorithm: ad, iterations: 2}]\n")
with open(os.path.join(d, "both.yaml"), "w") as f:
    f.write(head + "datasets:\n  - {name: plain, steps: 3*ER}\n"
            "  - {name: polish, steps: [{algorithm: er, iterations: 3}, {algorithm: ad, iterations: 2}]}\n")
if sys.argv[1] == "compare":      # the iterative-only recipe first: it starts MKL
    r = cdi_plugins.compare([os.path.join(d, "plain.yaml"), os.path.join(d, "polish.yaml")]).results["polish"]
elif sys.argv[1] == "run_all":    # a recipe whose first dataset has no torch step
    r = cdi_plugins.run_all(os.path.join(d, "both.yaml"), write=False)["polish"]
else:
    r = cdi_plugins.run(os.path.join(d, "polish.yaml"), write=False)
print("sha", hashlib.sha256(r.obj.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("mode", ["compare", "run_all"])
def test_an_earlier_plan_does_not_load_mkl_before_a_later_plans_torch(tmp_path, mode):
    """``cdi compare plain.yaml polish.yaml`` (and a recipe whose datasets run in that order): the first plan
    starts MKL, and the second's torch would be imported after it, with a warning, and results that may
    differ in the last bits from ``cdi run polish.yaml`` (they did on the real-data nn_ad recipe; at this
    size they happen not to, so the warning is what shows the order).  Every plan's preloads are loaded before
    the first one runs, so the second gives the bits it gives alone."""
    pytest.importorskip("torch")
    _mkl_or_skip()
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {m: subprocess.run([sys.executable, "-c", _COMPARE, m, str(tmp_path)], capture_output=True,
                             text=True, check=True, cwd=root).stdout for m in (mode, "alone")}
    assert "torch is imported after Intel MKL" not in out[mode]
    sha = {m: [ln for ln in text.splitlines() if ln.startswith("sha ")] for m, text in out.items()}
    assert sha[mode] and sha[mode] == sha["alone"]


_WORKERS = r"""
import cdi_plugins
if __name__ == "__main__":
    r = cdi_plugins.run({"data": {"simulate": {"shape": 72, "seed": 1}}, "seed": 0, "runs": 2, "workers": 2,
                         "steps": [{"algorithm": "er", "iterations": 3}, {"algorithm": "ad", "iterations": 2}]},
                        write=False)
    print("runs", r.metadata.get("runs"), "workers", r.metadata.get("workers"))
"""


def test_worker_processes_of_runs_load_torch_before_mkl(tmp_path):
    """``runs: N`` with ``workers`` > 1 runs the steps in fresh worker processes; there the ER step started
    MKL before the ad step imported torch (a warning from each worker).  Workers load the steps' preloads
    first, as run_plan does."""
    pytest.importorskip("torch")
    _mkl_or_skip()
    import subprocess
    import sys
    script = tmp_path / "two_runs.py"
    script.write_text(_WORKERS)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, cwd=root)
    assert "runs 2 workers 2" in done.stdout      # two worker processes, whatever the cores
    assert "torch is imported after Intel MKL" not in done.stderr + done.stdout
