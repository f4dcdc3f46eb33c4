"""Iteration cost of ER / HIO / RAAR against the FFT pair they are built on.

Prints, for each size, the median time of one FFT pair (forward + inverse, the
engine in use), of one iteration of each algorithm (shrink-wrap every 20
iterations included, as in the default recipe), and the ratio iteration /
FFT pair.  The goal is an iteration within 1.5x of an FFT pair.  Also prints
numpy.fft and scipy.fft pairs measured in the same run as reference points,
and (pyFFTW installed) pyFFTW's pair with its reproducible FFTW_ESTIMATE plans
and with timed FFTW_MEASURE plans, and (torch installed) torch.fft's pair (the
hot loop runs on mkl_fft above 64^3 with fft: auto, on torch.fft without it, on
pyFFTW up to 64^3).
Each row says the threads actually used at that size: the FFT's (the backend
runs arrays up to 64^3 on one thread) and the elementwise kernels' (the same),
with the kernel implementation (numba, numpy, cupy); the header says the
pyFFTW planner.

    python benchmarks/bench_iteration.py                 # 64, 128, 256 on the default backend
    python benchmarks/bench_iteration.py --sizes 64 128 --repeats 7 --backend numpy --fft scipy
    CDI_PLUGINS_KERNELS=numpy python benchmarks/bench_iteration.py     # the NumPy reference kernels
    python benchmarks/bench_iteration.py --passes --sizes 64 128 --repeats 7   # CPU ms of each pass
    python benchmarks/bench_iteration.py --cpu --threads 1      # CPU-time ratios, one thread: robust to load
    python benchmarks/bench_iteration.py --breakdown --sizes 128 --iterations 300   # where an iteration goes
                                          # (from 256^3: the blocked loop's planes and tiles passes instead)
    python benchmarks/bench_iteration.py --fused on --sizes 128 256   # the cache-blocked loop at every size
    python benchmarks/bench_iteration.py --ab --sizes 128 256 --threads 1   # cache-blocked against unfused

The row label says "mkl+fused" where the iterations run in the cache-blocked loop (compute/fused.py; by
default from 256^3, ``--fused on`` at every size the mkl engine runs, ``--fused off`` nowhere).  ``--ab``
times one HIO iteration both ways and the FFT pair, interleaved round by round in one process (minimum and
median of 25 rounds): the comparison FUSED_MIN was chosen by.

Ratios are measured in one process, round by round: each round times the FFT pair next to each step, and
the printed ratio is the median of the rounds' ratios (the times printed are medians too), so that the
machine's drift moves both sides of a ratio; still, run it on a quiet machine and quote medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


CLOCK = time.perf_counter   # --cpu: time.process_time (CPU of all threads: moves less with the machine's load)


def median_time(fn, repeats: int, inner: int = 1) -> float:
    fn()  # warm up (plans, caches)
    ts = []
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(inner):
            fn()
        ts.append((CLOCK() - t0) / inner)
    return statistics.median(ts)


def once(fn, inner: int = 1) -> float:
    """Seconds per call of *fn*, over *inner* calls (no warm-up)."""
    t0 = CLOCK()
    for _ in range(inner):
        fn()
    return (CLOCK() - t0) / inner


def passes(sizes, repeats: int) -> None:
    """CPU time (one thread, so the machine's load matters little) of each elementwise pass, per implementation."""
    from cdi_plugins.compute import kernels as K
    impls = ["numpy"] + (["numba"] if K.numba_status() == "ok" else [])
    print(f"elementwise passes, one thread, CPU ms (min of {repeats}): " + ", ".join(impls))
    print(f"{'size':>6} " + " ".join(f"{i + ' ' + p:>16}" for i in impls for p in ("modulus", "HIO update")))
    for n in sizes:
        shape = (n, n, n)
        rng = np.random.default_rng(0)
        F = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        d = np.abs(rng.standard_normal(shape)).astype(np.float32)
        dN, inv_n = d / np.float32(d.size), np.float32(1.0 / d.size)
        inside = np.flatnonzero(rng.random(d.size) < 0.05)
        x, p = F.copy(), F.copy()
        row = f"{n:>5}^3"
        for impl in impls:
            w = K.KernelWork(np, shape, True, threads=1, impl=impl)
            for fn in (lambda: K.project_modulus(w, F, d, dN, inv_n, None),
                       lambda: K.update_object(w, x, p, 1.0, -0.9, inside)):
                fn()
                ts = []
                for _ in range(repeats):
                    t0 = time.thread_time()
                    fn()
                    ts.append(time.thread_time() - t0)
                row += f" {min(ts) * 1e3:>16.2f}"
        print(row, flush=True)


def breakdown(args) -> None:
    """Where the time of an iteration goes inside a recipe: each call of the loop's FFTs, of the two
    elementwise passes and of shrink-wrap is timed (wall) in a run of ``20*ER + N*HIO`` on a simulated
    crystal, after a warm-up run of the same recipe in this process."""
    import collections
    import importlib

    import cdi_plugins
    from cdi_plugins.compute import backend as B
    from cdi_plugins.physics.simulate import simulate_crystal
    it = importlib.import_module("cdi_plugins.algorithms.iterative")   # the plugin's own names are patched
    total, calls, saved = collections.defaultdict(float), collections.Counter(), []

    def timed(owner, name, label):
        fn = getattr(owner, name)
        saved.append((owner, name, fn))

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                total[label] += time.perf_counter() - t0
                calls[label] += 1
        setattr(owner, name, wrapper)

    labels = ("FFT forward", "FFT inverse", "modulus pass", "update pass", "shrink-wrap")
    for owner, name, label in zip((B.Workspace, B.Workspace, it, it, it),
                                  ("forward", "backward", "project_modulus", "update_object", "shrink_wrap"), labels):
        timed(owner, name, label)
    # the cache-blocked loop (from 256^3): its two passes, each FFT stage with the elementwise work it carries
    from cdi_plugins.compute import fused as FU
    blocked = {"fused_planes": "planes pass (2-D FFTs + modulus)", "fused_tiles": "tiles pass (1-D FFTs + update)"}
    run_kernel = FU.FusedLoop._run
    saved.append((FU.FusedLoop, "_run", run_kernel))

    def timed_run(self, name, *a):
        t0 = time.perf_counter()
        try:
            return run_kernel(self, name, *a)
        finally:
            label = blocked.get(name, "blocked start")
            total[label] += time.perf_counter() - t0
            calls[label] += 1
    FU.FusedLoop._run = timed_run
    timed(it, "shrink_wrap_kept", "shrink-wrap (blocked)")
    all_labels = labels + tuple(blocked.values()) + ("shrink-wrap (blocked)",)
    try:
        print(f"where an iteration goes: 20*ER+{args.iterations}*HIO on a simulated crystal, fft {args.fft}, "
              "wall ms (per call, and per iteration over the whole run)")
        for n in args.sizes:
            sim = simulate_crystal(n, seed=0, counts=1e9, noise=False)
            recipe = {"data": {"path": "<array>"}, "seed": 0, "fft": args.fft, "threads": args.threads,
                      "steps": f"20*ER+{args.iterations}*HIO"}
            cdi_plugins.run(recipe, data=sim["intensity"], write=False)          # warm-up: imports, plans
            total.clear()
            calls.clear()
            t0 = time.perf_counter()
            r = cdi_plugins.run(recipe, data=sim["intensity"], write=False)
            wall = time.perf_counter() - t0
            its = 20 + args.iterations
            parts = "  ".join(f"{k} {1e3 * total[k] / max(calls[k], 1):.2f} ({1e3 * total[k] / its:.2f})"
                              for k in all_labels if calls[k] or k in labels[:4])
            rest = wall - sum(total.values())
            print(f"{n:>5}^3 {r.metadata.get('fft')}, {r.metadata.get('threads')} threads: {parts}  "
                  f"other {1e3 * rest / its:.2f}  whole run {1e3 * wall / its:.2f}", flush=True)
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def fused_ab(args) -> int:
    """One HIO iteration in the cache-blocked loop and unfused, and the FFT pair, interleaved."""
    from cdi_plugins.compute.backend import get_backend
    from cdi_plugins.compute.fused import FusedData, FusedLoop, fused_status
    from cdi_plugins.compute.kernels import KernelWork, project_modulus, update_object
    if fused_status() != "ok":
        print(f"the cache-blocked loop cannot run here: {fused_status()}")
        return 1
    print(f"one HIO iteration (random object, 10 % support), FFT pair / unfused / cache-blocked, {args.repeats} "
          f"x 25 interleaved rounds; ms, minimum and median")
    print(f"{'size':>6} {'threads':>7} {'pair min':>9} {'unfused':>8} {'fused':>8} {'unf/pair':>9} {'fus/pair':>9} "
          f"{'pair med':>9} {'unfused':>8} {'fused':>8} {'unf/pair':>9} {'fus/pair':>9}")
    for n in args.sizes:
        shape = (n, n, n)
        be = get_backend("numpy", fft="mkl", threads=args.threads)
        ws = be.workspace(shape)
        rng = np.random.default_rng(1)
        x0 = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        d = np.abs(np.fft.fftn(rng.standard_normal(shape))).astype(np.float32)
        dN = (d / np.float32(n ** 3)).astype(np.float32)
        mask = (rng.random(shape) < 0.1).reshape(-1)
        ws.x[...] = x0
        threads = be.threads_for(n ** 3)
        work = KernelWork(np, shape, feedback=True, threads=threads, impl="numba")   # both ways the same passes
        loop = FusedLoop(ws, FusedData(d, dN), work)
        inv_n = np.float32(1.0 / n ** 3)

        def unfused():
            F = ws.forward()
            project_modulus(work, F, d, dN, inv_n, None)
            update_object(work, ws.x, ws.backward(F), 1.0, -0.9, mask)

        def fused():
            loop.iterate(1.0, -0.9, mask)

        def pair():
            ws.backward(ws.forward())

        times = {"pair": [], "unfused": [], "fused": []}
        unfused()
        for _ in range(25):
            for name, fn in (("pair", pair), ("unfused", unfused), ("fused", fused)):
                if name == "fused":
                    loop.start()
                t0 = CLOCK()
                for _ in range(args.repeats):
                    fn()
                times[name].append((CLOCK() - t0) / args.repeats * 1e3)
        row = f"{n:>5}^3 {threads:>7}"
        for stat in (min, statistics.median):
            p, u, f = (stat(times[k]) for k in ("pair", "unfused", "fused"))
            row += f" {p:>9.2f} {u:>8.2f} {f:>8.2f} {u / p:>9.2f} {f / p:>9.2f}"
        print(row)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--repeats", type=int, default=5, help="timed repetitions (median is printed)")
    ap.add_argument("--iterations", type=int, default=20, help="iterations per timed repetition")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--fft", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-reference", action="store_true", help="skip the numpy.fft / scipy.fft reference pairs")
    ap.add_argument("--passes", action="store_true",
                    help="only the CPU time of each elementwise pass, NumPy reference against numba")
    ap.add_argument("--breakdown", action="store_true",
                    help="time each FFT, elementwise pass and shrink-wrap inside a 20*ER + ITERATIONS*HIO run")
    ap.add_argument("--cpu", action="store_true",
                    help="process CPU time instead of wall time (with --threads 1: the work ratio, robust to load)")
    ap.add_argument("--fused", choices=("auto", "on", "off"), default=None,
                    help="the cache-blocked loop (CDI_PLUGINS_FUSED): auto (from 256^3), on, off")
    ap.add_argument("--ab", action="store_true",
                    help="one HIO iteration, cache-blocked against unfused, interleaved (mkl engine)")
    args = ap.parse_args(argv)
    if args.fused is not None:
        import os
        os.environ["CDI_PLUGINS_FUSED"] = args.fused
    if args.ab:
        return fused_ab(args)
    if args.cpu:
        global CLOCK
        CLOCK = time.process_time
    if args.passes:
        passes(args.sizes, args.repeats)
        return 0
    if args.breakdown:
        breakdown(args)
        return 0

    import scipy.fft

    import cdi_plugins
    from cdi_plugins.compute.backend import fft_engines, get_backend
    from cdi_plugins.compute.fused import fused_enabled, fused_status
    from cdi_plugins.compute.kernels import effective_threads, kernel_impl
    from cdi_plugins.core.registry import get_registry
    from cdi_plugins.physics.simulate import simulate_crystal
    from cdi_plugins.core.state import Context, Problem

    be = get_backend(args.backend, fft=args.fft, threads=args.threads)
    reg = get_registry()
    planner = f" ({be.planner_effort})" if be.fft_engine == "pyfftw" else ""
    print(f"cdi-plugins {cdi_plugins.__version__}: backend {be.name}, fft {be.fft_requested}{planner} "
          "(the loop's engine per size in each row), "
          f"median of {args.repeats} interleaved rounds of {args.iterations} iterations, "
          f"{'CPU' if args.cpu else 'wall'} time")
    head = f"{'size':>6} {'loop fft; kernels, threads fft/kernels':>40} {'FFT pair ms':>11} {'ER ms':>8} {'HIO ms':>8} {'RAAR ms':>8} {'ER/FFT':>7} {'HIO/FFT':>8} {'RAAR/FFT':>9}"
    fftw_ref = not args.no_reference and be.name == "numpy" and fft_engines()["pyfftw"] == "ok"
    torch_ref = not args.no_reference and be.name == "numpy" and fft_engines()["torch"] == "ok"
    if not args.no_reference:
        head += f" {'numpy.fft ms':>12} {'scipy.fft ms':>12}"
        if fftw_ref:
            head += f" {'ESTIMATE pair ms':>17} {'MEASURE pair ms':>16}"
        if torch_ref:
            head += f" {'torch pair ms':>14}"
    print(head)
    for n in args.sizes:
        sim = simulate_crystal(n, seed=0, counts=1e9, noise=False)
        problem = Problem.from_array(sim["intensity"], source="simulated")
        ws = be.workspace(problem.shape)
        ws.x[...] = be.asarray(np.fft.ifftshift(sim["truth"]))

        def fft_pair():
            ws.backward(ws.forward())
            be.synchronize()

        t_ref = {}
        # pyFFTW's pair with rule-made (FFTW_ESTIMATE, reproducible) and timed (FFTW_MEASURE) plans, and
        # torch.fft's, same threads and the same workspace code: what the loop's engine is measured against
        refs = [("pyfftw", e) for e in ("FFTW_ESTIMATE", "FFTW_MEASURE") if fftw_ref] + \
            [("torch", None)] * torch_ref
        for engine, effort in refs:
            wm = get_backend(be.name, fft=engine, threads=args.threads,
                             planner_effort=effort).workspace(problem.shape)
            wm.x[...] = ws.x
            t_ref[effort or engine] = median_time(lambda: wm.backward(wm.forward()), args.repeats,
                                                  inner=max(1, args.iterations // 2))
        # time whole steps and subtract the one-off start (support, random start) measured with 1 iteration;
        # round by round, the pair next to each step, so that the machine's drift moves both sides of a ratio
        runs = {}
        for name in ("er", "hio", "raar"):
            spec = reg.get(name)
            params = spec.params.validate({"iterations": args.iterations, "initial_support": "autocorrelation"})

            def step(spec=spec, params=params):
                ctx = Context(backend=be, rng=np.random.default_rng(0), step=1)
                spec.run(problem, None, params, ctx)
                be.synchronize()

            def start_only(spec=spec, params=dict(params, iterations=1)):
                ctx = Context(backend=be, rng=np.random.default_rng(0), step=1)
                spec.run(problem, None, params, ctx)
                be.synchronize()

            runs[name] = (step, start_only)
        pairs, times, ratios = [], {k: [] for k in runs}, {k: [] for k in runs}
        inner = max(1, args.iterations // 2)
        fft_pair()
        for step, start_only in runs.values():
            step()
            start_only()
        for _ in range(args.repeats):
            for name, (step, start_only) in runs.items():
                t_pair = once(fft_pair, inner)
                t_step = once(step) - once(start_only)
                t_it = max(t_step, 0.0) / (args.iterations - 1)
                pairs.append(t_pair)
                times[name].append(t_it)
                ratios[name].append(t_it / t_pair)
        t_fft = statistics.median(pairs)
        times = {k: statistics.median(v) for k, v in times.items()}
        ratios = {k: statistics.median(v) for k, v in ratios.items()}
        thr = be.threads_for(n ** 3)
        impl = kernel_impl(be.xp, size=n ** 3)
        engine = be.loop_engine(n ** 3)
        if engine == "mkl" and impl == "numba" and fused_enabled(n ** 3) and fused_status() == "ok":
            engine = "mkl+fused"
        label = f"{engine}; {impl}, {thr}/{effective_threads(impl, thr)}"
        row = (f"{n:>5}^3 {label:>40} {t_fft * 1e3:>11.2f} {times['er'] * 1e3:>8.2f} {times['hio'] * 1e3:>8.2f} "
               f"{times['raar'] * 1e3:>8.2f} {ratios['er']:>7.2f} {ratios['hio']:>8.2f} {ratios['raar']:>9.2f}")
        if not args.no_reference:
            a = (np.random.default_rng(0).random((n, n, n)) + 0j).astype(np.complex64)
            t_np = median_time(lambda: np.fft.ifftn(np.fft.fftn(a)), args.repeats)
            t_sp = median_time(lambda: scipy.fft.ifftn(scipy.fft.fftn(a, workers=be.threads), workers=be.threads),
                               args.repeats)
            row += f" {t_np * 1e3:>12.2f} {t_sp * 1e3:>12.2f}"
            if fftw_ref:
                row += f" {t_ref['FFTW_ESTIMATE'] * 1e3:>17.2f} {t_ref['FFTW_MEASURE'] * 1e3:>16.2f}"
            if torch_ref:
                row += f" {t_ref['torch'] * 1e3:>14.2f}"
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
