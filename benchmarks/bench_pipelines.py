"""Pipelines against the classic iterative recipe on held-out simulated crystals.

For each simulated 64^3 crystal (Poisson noise, 1e8 counts; seeds not used by
the demo or by training) every recipe runs on the same data; the script prints
per-recipe medians of the reconstruction time (the sum of the recipe's step
times: simulating the data, loading the recipe and writing nothing are left
out), final chi^2 and error against the truth, the speed-up over the baseline
measured in the same run, and how many crystals reach a chi^2 at least as low
as the baseline's.

    python benchmarks/bench_pipelines.py                                  # classic vs AD alone
    python benchmarks/bench_pipelines.py --recipes configs/nn_ad.yaml configs/nn_ad_er.yaml
    python benchmarks/bench_pipelines.py --seeds 101 102 103 104 105 --source atomistic

The first recipe given with --baseline (default configs/classic_iterative.yaml,
cohere's "3*(20*ER+180*HIO)+20*ER") is the reference.  Every recipe first runs
once on an extra crystal that is not counted (imports, FFTW plans, the
network's weights: costs a long-running session pays once).  Medians, because
this machine is shared and noisy.  ``--threads`` (default 1) is applied as a batch worker applies it:
the recipes' ``threads`` and OMP/MKL/OPENBLAS_NUM_THREADS.

--source blob (default): cdi_plugins.physics.simulate's faceted crystals, the data of
the recipes' own ``data.simulate``; --source atomistic: the atomistic gold
crystals the network was trained on (cdi_plugins.physics.atomistic), at 64^3, from
seeds that training never used.

Two speed-ups are printed for every recipe against the baseline: "x faster" (warm: the
median per-dataset time after the warm-up, as a batch worker runs datasets one after
another in one process) and "x incl. warm-up" (the first call, which pays the imports --
torch for the network and AD --, FFT plans and the network's weights, added to the
times of all the datasets).  Each dataset's line also gives the recipe's ratio against
the baseline on that dataset.  Importing torch is timed first and added to the first call
of every recipe with an nn or ad step.  "cpu s" is this process's CPU time for the recipe
(median), which a busy machine disturbs much less than the wall-clock times, and "x by
cpu" the speed-up from those medians.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def crystal(source: str, shape: int, seed: int, counts: float) -> tuple:
    """(intensity, truth) of one held-out crystal."""
    if source == "atomistic":
        from cdi_plugins.physics.atomistic import atomistic_crystal
        s = atomistic_crystal([1000 + seed, 0], shape=shape, counts=counts)
        return s["intensity"], s["rho"]
    from cdi_plugins.physics.simulate import simulate_crystal
    s = simulate_crystal(shape, seed=seed, counts=counts)
    return s["intensity"], s["truth"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=os.path.join(ROOT, "configs", "classic_iterative.yaml"))
    ap.add_argument("--recipes", nargs="+", default=[os.path.join(ROOT, "configs", "ad_only.yaml")])
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    ap.add_argument("--source", choices=("blob", "atomistic"), default="blob")
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--counts", type=float, default=1e8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    # as a batch worker of that many threads runs (cdi_plugins.batch.worker): OpenMP, MKL and OpenBLAS limited
    # before they load.  Without it the error metric's BLAS calls (np.vdot) between two timed runs leave
    # OpenBLAS's second thread spinning (~0.1 s) on the core the next run is timed on.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    # torch is imported by the first step that needs it (nn, ad), so only the first such recipe's warm-up
    # would pay for it: it is timed here, first, and added to the first call of every recipe that uses it
    t0 = time.perf_counter()
    importlib.import_module("torch")
    torch_import = time.perf_counter() - t0

    import cdi_plugins
    from cdi_plugins.compute.metrics import compare_to_truth

    recipes = [args.baseline] + [r for r in args.recipes if r != args.baseline]
    over = [("threads", args.threads)]
    warm, _ = crystal(args.source, args.shape, 99, args.counts)
    # every crystal made, and every error computed, outside the timed runs: both leave a worker thread
    # of theirs spinning for ~0.1 s after they return, which the next run's CPU time would count
    data = {seed: crystal(args.source, args.shape, seed, args.counts) for seed in args.seeds}
    first = {}
    for r in recipes:                               # imports, plans, weights: the warm-up
        res = cdi_plugins.run(r, data=warm, overrides=over, write=False)
        uses_torch = any(h.get("algorithm") in ("nn", "ad") for h in res.history)
        first[r] = float(sum(res.timings)) + (torch_import if uses_torch else 0.0)
    rows = {r: {"time": [], "wall": [], "cpu": [], "chi2": [], "error": [], "beats": 0} for r in recipes}
    done = []
    for seed in args.seeds:
        for r in recipes:
            c0, t0 = time.process_time(), time.perf_counter()
            res = cdi_plugins.run(r, data=data[seed][0], overrides=over, write=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            d = rows[r]
            d["time"].append(float(sum(res.timings)))
            d["wall"].append(wall)
            d["cpu"].append(cpu)
            d["chi2"].append(res.chi2)
            done.append((seed, r, len(d["time"]) - 1, res.obj))
    for seed, r, k, obj in done:
        d = rows[r]
        t, chi2 = d["time"][k], d["chi2"][k]
        # the atomistic truth is in atoms per voxel, not on the data's scale: fit the scale too
        err = compare_to_truth(obj, data[seed][1], scale=args.source == "atomistic")["error"]
        d["error"].append(err)
        if r == args.baseline:
            base_chi2, base_t, vs = chi2, t, ""
        else:
            d["beats"] += chi2 <= base_chi2
            vs = f"  {base_t / t:6.2f}x faster, chi2 {chi2 / base_chi2:.2f} of the baseline's"
        print(f"  seed {seed:>4}  {os.path.basename(r):<24} {t:7.3f} s  chi2 {chi2:.3e}  error {err:.4f}{vs}",
              flush=True)
    base = statistics.median(rows[args.baseline]["time"])
    base_total = first[args.baseline] + sum(rows[args.baseline]["time"])
    n = len(args.seeds)
    print(f"\n{args.shape}^3 {args.source} crystals, {args.counts:.0e} counts, {n} held out (seeds {args.seeds}), "
          f"{args.threads} thread(s); medians; time = sum of the step times, wall = the whole cdi_plugins.run, "
          "cpu = this process's CPU time; first call = the warm-up run (imports, plans, weights; "
          f"with importing torch, {torch_import:.2f} s, for recipes with an nn or ad step); "
          f"x incl. warm-up = (first call + the {n} datasets) against the baseline's")
    base_cpu = statistics.median(rows[args.baseline]["cpu"])
    print(f"{'recipe':<24} {'time s':>8} {'x faster':>9} {'first call s':>12} {'x incl. warm-up':>15} "
          f"{'wall s':>8} {'cpu s':>7} {'x by cpu':>8} {'final chi2':>11} {'error':>8} {'max error':>9} "
          f"{'chi2 <= baseline':>17}")
    for r in recipes:
        d = rows[r]
        t = statistics.median(d["time"])
        beats = "-" if r == args.baseline else f"{d['beats']}/{n}"
        total = first[r] + sum(d["time"])
        print(f"{os.path.basename(r):<24} {t:>8.3f} {base / t:>9.2f} {first[r]:>12.3f} {base_total / total:>15.2f} "
              f"{statistics.median(d['wall']):>8.3f} {statistics.median(d['cpu']):>7.3f} "
              f"{base_cpu / statistics.median(d['cpu']):>8.2f} "
              f"{statistics.median(d['chi2']):>11.3e} {statistics.median(d['error']):>8.4f} {max(d['error']):>9.4f} "
              f"{beats:>17}")
    # with N datasets the ratio including the warm-up is (F_b + N t_b) / (F + N t): the N from which it reaches
    # 10x, from these medians (what a batch of that many scans in one worker would see)
    for r in recipes[1:]:
        t, f = statistics.median(rows[r]["time"]), first[r]
        if base > 10 * t:
            need = max(1, math.ceil((10 * f - first[args.baseline]) / (base - 10 * t)))
            print(f"{os.path.basename(r)}: 10x the baseline including the warm-up from {need} datasets on")
        else:
            print(f"{os.path.basename(r)}: never 10x the baseline (warm {base / t:.2f}x)")
    print("command: python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
