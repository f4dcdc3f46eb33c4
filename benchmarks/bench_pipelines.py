"""Pipelines against the classic iterative recipe on held-out simulated crystals.

For each simulated 64^3 crystal (Poisson noise, 1e8 counts; seeds not used by
the demo or by training) every recipe runs on the same data; the script prints
per-recipe medians of wall time, final chi^2 and error against the truth, the
wall-time ratio to the baseline measured in the same run, and how many crystals
reach a chi^2 at least as low as the baseline's.

    python benchmarks/bench_pipelines.py                                  # classic vs AD alone
    python benchmarks/bench_pipelines.py --recipes configs/nn_ad.yaml configs/nn_ad_er.yaml
    python benchmarks/bench_pipelines.py --seeds 101 102 103 104 105 --shape 64

The first recipe given with --baseline (default configs/classic_iterative.yaml,
cohere's "3*(20*ER+180*HIO)+20*ER") is the reference. Medians, because this
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=os.path.join(ROOT, "configs", "classic_iterative.yaml"))
    ap.add_argument("--recipes", nargs="+", default=[os.path.join(ROOT, "configs", "ad_only.yaml")])
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--counts", type=float, default=1e8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import cdi_plugins
    from cdi_plugins.metrics import compare_to_truth

    recipes = [args.baseline] + [r for r in args.recipes if r != args.baseline]
    rows = {r: {"wall": [], "chi2": [], "error": [], "beats": 0} for r in recipes}
    for seed in args.seeds:
        over = [("data.simulate", {"shape": args.shape, "seed": seed, "counts": args.counts, "noise": True}),
                ("threads", args.threads)]
        base_chi2 = None
        for r in recipes:
            t0 = time.perf_counter()
            res = cdi_plugins.run(r, overrides=over)
            wall = time.perf_counter() - t0
            err = compare_to_truth(res.obj, res.truth)["error"]
            rows[r]["wall"].append(wall)
            rows[r]["chi2"].append(res.chi2)
            rows[r]["error"].append(err)
            if r == args.baseline:
                base_chi2 = res.chi2
            elif res.chi2 <= base_chi2:
                rows[r]["beats"] += 1
            print(f"  seed {seed:>4}  {os.path.basename(r):<24} {wall:7.2f} s  chi2 {res.chi2:.3e}  error {err:.4f}",
                  flush=True)
    base_wall = statistics.median(rows[args.baseline]["wall"])
    n = len(args.seeds)
    print(f"\n{args.shape}^3, {args.counts:.0e} counts, {n} held-out crystals (seeds {args.seeds}), "
          f"{args.threads} FFT thread(s); medians")
    print(f"{'recipe':<24} {'wall s':>8} {'x faster':>9} {'final chi2':>11} {'error':>8} {'max error':>9} "
          f"{'chi2 <= baseline':>17}")
    for r in recipes:
        d = rows[r]
        wall = statistics.median(d["wall"])
        beats = "-" if r == args.baseline else f"{d['beats']}/{n}"
        print(f"{os.path.basename(r):<24} {wall:>8.2f} {base_wall / wall:>9.2f} {statistics.median(d['chi2']):>11.3e} "
              f"{statistics.median(d['error']):>8.4f} {max(d['error']):>9.4f} {beats:>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
