"""Same recipe, same seed: the same bytes in separate processes, with the default backend settings.

Nothing is pinned here (default FFT engine, planner and thread count, default kernels), so this is what a
user gets who reruns a seed: two processes started side by side (each loading the machine for the other),
one of which first plans the same shape with FFTW_MEASURE (timed plans in memory and on disk), and a third
that finds that timed wisdom on disk.  All must print the same SHA-256 of the result.  At 72^3 the default
hot loop runs on mkl_fft (torch.fft without it); the same holds for torch.fft and for pyFFTW's rule-made
plans, asked for by name, and for the cache-blocked loop (CDI_PLUGINS_FUSED=on; by default from 256^3).
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import hashlib, sys
import numpy as np
import cdi_plugins
from cdi_plugins.compute.backend import get_backend
SHAPE = 72   # above 64^3: the FFT and the kernels run on every core this process may use
if sys.argv[1] == "measure":
    # timed plans for this very shape, in FFTW's memory and in the wisdom file, before the run
    be = get_backend("numpy", planner_effort="FFTW_MEASURE")
    if be.fft_engine == "pyfftw":
        be.workspace((SHAPE,) * 3)
r = cdi_plugins.run({"data": {"simulate": {"shape": SHAPE, "seed": 1}}, "seed": 0, "fft": sys.argv[2],
                     "steps": "10*ER+60*HIO+10*ER"}, write=False)
h = hashlib.sha256()
h.update(np.ascontiguousarray(r.obj, dtype=np.complex64).tobytes())
h.update(np.ascontiguousarray(r.support, dtype=bool).tobytes())
h.update(np.array([rec["chi2"] for rec in r.history], dtype=np.float64).tobytes())
print(r.metadata.get("fft"), r.metadata.get("threads"), h.hexdigest())
"""


def _env(cache, fused="auto"):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CDI_PLUGINS_KERNELS", "CDI_PLUGINS_FFTW_PLANNER", "NUMBA_NUM_THREADS")}
    env["CDI_PLUGINS_CACHE"] = str(cache)
    env["CDI_PLUGINS_FUSED"] = fused
    return env


def _start(mode, cache, fft):
    # "fused": the default engine with the cache-blocked loop (compute/fused.py) at this size too
    fused = "on" if fft == "fused" else "auto"
    fft = "auto" if fft == "fused" else fft
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode, fft], cwd=ROOT, env=_env(cache, fused),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p):
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("fft", ["auto", "torch", "pyfftw", "fused"])
def test_same_seed_same_bytes_in_separate_processes(tmp_path, fft):
    from cdi_plugins.compute.backend import fft_engines
    if fft == "fused":
        if fft_engines()["mkl"] != "ok":      # not importorskip: see test_backend's pyFFTW-after-MKL test
            pytest.skip(fft_engines()["mkl"])
    elif fft != "auto":
        pytest.importorskip(fft)
    a, b = _start("plain", tmp_path, fft), _start("measure", tmp_path, fft)   # side by side: each loads the other
    ha, hb = _finish(a), _finish(b)
    hc = _finish(_start("plain", tmp_path, fft))                               # timed wisdom now on disk
    assert ha == hb == hc
    engine = ha.split()[0]
    big = "mkl" if fft_engines()["mkl"] == "ok" else "torch"
    assert engine == (big if fft in ("auto", "fused") else fft)
    if engine == "pyfftw":
        # the timed plans were really made and saved: the guarantee held in spite of them
        assert (tmp_path / "fftw_wisdom.json").exists()
