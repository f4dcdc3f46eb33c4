"""The classic recipe end to end from a fresh process, against a plain scipy.fft ER/HIO solver.

What a user waits for: ``3*(20*ER+180*HIO)+20*ER`` (configs/classic_iterative.yaml, 620
iterations) on a simulated crystal, each run in a new Python process, so interpreter start,
imports, FFT planning and kernel compilation (or loading from cache) are all counted.  The
plain solver is what one writes with NumPy and ``scipy.fft`` (default: one worker): the same
sequence, autocorrelation start, shrink-wrap every 20 iterations (threshold 0.2, Gaussian sigma
1 -> 0.5 by ``scipy.ndimage.gaussian_filter``), complex64.  Both runs alternate, ``--repeats``
times, in this one run; printed: median wall time of each, their ratio, and the error against
the truth of each (after alignment, compute.metrics.compare_to_truth).

    python benchmarks/bench_recipe.py                      # 128^3, 3 repeats
    python benchmarks/bench_recipe.py --shape 64 --repeats 1

Timings on a shared machine are noisy: read the ratio (both sides measured in the same run).  The CPU
seconds (all threads of each process) are printed too: on a loaded machine they move less than the wall
time, which punishes a multi-threaded process most.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SEQUENCE = "3*(20*ER+180*HIO)+20*ER"

OURS = r"""
import sys, numpy as np, cdi_plugins
inp, out = sys.argv[1], sys.argv[2]
r = cdi_plugins.run({"data": {"path": "<array>"}, "seed": 0, "steps": %(seq)r}, data=np.load(inp), write=False)
np.save(out, np.asarray(r.obj))
print(r.metadata.get("fft"), r.metadata.get("threads"))
"""

# A plain solver, written as a careful user would: scipy.fft, NumPy elementwise in complex64 (no
# promotion to complex128), scipy.ndimage smoothing.
PLAIN = r"""
import re, sys, numpy as np, scipy.fft as sf
from scipy.ndimage import gaussian_filter
inp, out, seq = sys.argv[1], sys.argv[2], sys.argv[3]
I = np.fft.ifftshift(np.load(inp)).astype(np.float32)
d = np.sqrt(I)
ac = np.abs(sf.ifftn(I.astype(np.complex64)))
ac = gaussian_filter(ac, 1.0, mode="wrap")
S = ac > 0.2 * ac.max()
rng = np.random.default_rng(0)
x = (rng.random(I.shape, dtype=np.float32) * np.exp(1j * rng.uniform(-np.pi, np.pi, I.shape))).astype(np.complex64) * S
x *= np.float32(np.sqrt(np.sum(I) / (np.vdot(x, x).real * I.size)))
steps = []
for rep, body in re.findall(r"(\d+)\*\(([^)]*)\)", seq):
    steps += [t for _ in range(int(rep)) for t in body.split("+")]
steps += [t for t in re.sub(r"\d+\*\([^)]*\)", "", seq).split("+") if t]
for step in steps:
    n, name = step.split("*")
    n = int(n)
    for it in range(n):
        F = sf.fftn(x)
        F *= d / np.maximum(np.abs(F), np.float32(1e-20))
        p = sf.ifftn(F)
        if name == "ER":
            x = np.where(S, p, np.complex64(0))
        else:
            x = np.where(S, p, x - np.float32(0.9) * p)
        if (it + 1) % 20 == 0:
            sigma = 1.0 + (0.5 - 1.0) * it / max(1, n - 1)
            sm = gaussian_filter(np.abs(x if name == "ER" else p), sigma, mode="wrap")
            S = sm > 0.2 * sm.max()
np.save(out, np.fft.fftshift(x))
"""


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def fresh(code: str, *args) -> tuple[float, float, str]:
    """(wall s, CPU s of all its threads, stdout) of *code* run in a new Python process."""
    c0, t0 = _children_cpu(), time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if r.returncode:
        raise SystemExit(f"run failed:\n{r.stderr}")
    return wall, cpu, r.stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sequence", default=SEQUENCE)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--counts", type=float, default=1e8)
    args = ap.parse_args(argv)

    from cdi_plugins.compute.kernels import kernel_impl
    from cdi_plugins.compute.metrics import compare_to_truth
    from cdi_plugins.physics.simulate import simulate_crystal

    sim = simulate_crystal(args.shape, seed=args.seed, counts=args.counts)
    t_ours, t_plain, c_ours, c_plain = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "intensity.npy")
        np.save(inp, sim["intensity"].astype(np.float32))
        o1, o2 = os.path.join(tmp, "ours.npy"), os.path.join(tmp, "plain.npy")
        for _ in range(args.repeats):
            w, c, info = fresh(OURS % {"seq": args.sequence}, inp, o1)
            t_ours.append(w)
            c_ours.append(c)
            w, c, _ = fresh(PLAIN, inp, o2, args.sequence)
            t_plain.append(w)
            c_plain.append(c)
        e1 = compare_to_truth(np.load(o1), sim["truth"])["error"]
        e2 = compare_to_truth(np.load(o2), sim["truth"])["error"]
    fft, threads = info.split()
    m1, m2 = statistics.median(t_ours), statistics.median(t_plain)
    print(f"{args.shape}^3 simulated crystal (seed {args.seed}, {args.counts:.0e} counts), {args.sequence!r}, "
          f"fresh process each, median of {args.repeats}, {os.cpu_count()} CPUs")
    k1, k2 = statistics.median(c_ours), statistics.median(c_plain)
    print(f"| {'run':<58} | wall s (median) | CPU s (median) | error vs truth |")
    print(f"|{'-' * 60}|-----------------|----------------|----------------|")
    label = f"cdi-plugins (fft {fft}, {threads} threads, kernels {kernel_impl(np, size=args.shape ** 3)})"
    print(f"| {label:<58} | {m1:>15.2f} | {k1:>14.2f} | {e1:>14.4f} |")
    print(f"| {'plain scipy.fft ER/HIO (1 worker, NumPy, ndimage)':<58} | {m2:>15.2f} | {k2:>14.2f} | {e2:>14.4f} |")
    print(f"time ratio cdi-plugins / plain: {m1 / m2:.3f} wall, {k1 / k2:.3f} CPU   (wall runs: ours "
          f"{[round(t, 2) for t in t_ours]}, plain {[round(t, 2) for t in t_plain]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
