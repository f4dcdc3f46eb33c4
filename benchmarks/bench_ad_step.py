"""Where the AD step's time goes: its iterations by kind and grid, and the work around them.

Runs a recipe with an ``ad`` step (default configs/nn_ad_fast.yaml) on simulated 64^3 crystals after one
warm-up run, with the refiner's methods wrapped to time them, and prints per dataset (medians over the
datasets and repeats) the step times, each phase of the AD step and the cost of one iteration of each
kind (``fb``: HIO-style feedback, ``opt``: the optimiser) on each grid.  Times are this thread's CPU
time (``time.thread_time``), which a busy machine disturbs less than wall-clock time.

    python benchmarks/bench_ad_step.py                               # the CPU fast path (numba kernels)
    CDI_PLUGINS_KERNELS=numpy python benchmarks/bench_ad_step.py     # the torch/autograd path
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

PHASES = ("__init__", "_iterate", "_shrink_wrap", "_to_full_grid", "_result")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=os.path.join(ROOT, "configs", "nn_ad_fast.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shape", type=int, default=64)
    args = ap.parse_args(argv)

    import cdi_plugins
    from cdi_plugins.algorithms.ad import refiner
    from cdi_plugins.physics.simulate import simulate_crystal

    spent = collections.defaultdict(float)        # phase -> CPU seconds, over all timed runs
    per_iter = collections.defaultdict(list)      # (kind, grid) -> CPU seconds of each iteration
    timing = [False]

    def wrap(name):
        orig = getattr(refiner.Refiner, name)

        @functools.wraps(orig)
        def timed(self, *a, **k):
            kind = ("fb" if self.trace.done < self.plan.n_fb else "opt") if name == "_iterate" else None
            grid = "x".join(map(str, self.model.shape)) if kind else None
            t0 = time.thread_time()
            try:
                return orig(self, *a, **k)
            finally:
                if timing[0]:
                    dt = time.thread_time() - t0
                    spent[name] += dt
                    if kind:
                        per_iter[(kind, grid)].append(dt)
        setattr(refiner.Refiner, name, timed)

    for name in PHASES:
        wrap(name)
    over = [("threads", 1)]
    data = [simulate_crystal(args.shape, seed=s, counts=1e8)["intensity"] for s in args.seeds]
    cdi_plugins.run(args.recipe, data=simulate_crystal(args.shape, seed=99, counts=1e8)["intensity"],
                    overrides=over, write=False)                    # imports, kernels, weights
    steps, runs = [], 0
    timing[0] = True
    for _ in range(args.repeats):
        for d in data:
            res = cdi_plugins.run(args.recipe, data=d, overrides=over, write=False)
            steps.append(res.timings)
            runs += 1
    kernels = os.environ.get("CDI_PLUGINS_KERNELS") or "auto"
    print(f"{os.path.basename(args.recipe)}, {args.shape}^3, seeds {args.seeds} x {args.repeats}, one thread, "
          f"CDI_PLUGINS_KERNELS={kernels}")
    print("step times (wall, median): " + ", ".join(
        f"step {j + 1} {1e3 * statistics.median(t[j] for t in steps):.1f} ms" for j in range(len(steps[0]))))
    print("AD step, CPU per dataset: " + ", ".join(
        f"{name.strip('_')} {1e3 * spent[name] / runs:.1f} ms" for name in PHASES)
        + "  (init: the data models, the start, the coarse grid; to_full_grid: with its shrink-wrap)")
    for (kind, grid), v in sorted(per_iter.items()):
        print(f"  {kind:>3} iteration on {grid}: {len(v) // runs} per dataset, median "
              f"{1e3 * statistics.median(v):.3f} ms")
    print("command: python " + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
