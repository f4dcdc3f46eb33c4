"""Which shrink-wrap, HIO and recipe settings get real crystals right: the study behind configs/real_bcdi.yaml.

Three parts, each a table printed as it is measured:

real  the measured Au(111) pattern of ../shared/data (prepared as configs/real_au.yaml does), the
      classic recipe "3*(20*ER+180*HIO)+20*ER" with one setting changed per row: support size
      (voxels, face-connected parts), final chi^2 and chi^2 on 5 % held-out pixels (the truth is
      unknown there), for each random start;
sim   atomistic gold crystals (cdi_plugins.physics.atomistic) at 64^3 with realistic oversampling (the
      smallest per-axis ratio drawn in 3-11) and Poisson noise of 1e6-1e9 photons: error against the
      true object (aligned, scale fitted, over the true support), support size against the true one;
ga    the genetic algorithm against independent runs on a hard start (a short recipe on a 48^3
      crystal): the error of the kept result for GA (4 runs x 3 generations), the best of 4 independent
      runs (the same population) and the best of 12 (the same number of runs of the steps).

    python benchmarks/study_defaults.py                 # all three
    python benchmarks/study_defaults.py --part real --seeds 2
    python benchmarks/study_defaults.py --part sim --sim-starts 1

Every run uses fft: scipy and one FFT thread, so the figures reproduce bit for bit on one machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REAL = os.path.join(ROOT, "..", "shared", "data", "au_3dcdinn_ft_crop_64.tif")
CLASSIC = "3*(20*ER+180*HIO)+20*ER"
PINNED = {"fft": "scipy", "threads": 1, "workers": 1}

# one setting changed per row; "params" go to both er and hio (shrink-wrap) or to hio alone (beta)
VARIANTS = [
    ("threshold 0.2 (built-in)", {}, CLASSIC),
    ("threshold 0.15", {"sw": {"shrink_wrap_threshold": 0.15}}, CLASSIC),
    ("threshold 0.1", {"sw": {"shrink_wrap_threshold": 0.1}}, CLASSIC),
    ("threshold 0.1, sigma 1.0 fixed", {"sw": {"shrink_wrap_threshold": 0.1, "shrink_wrap_sigma_final": None}},
     CLASSIC),
    ("threshold 0.1, HIO beta 0.7", {"sw": {"shrink_wrap_threshold": 0.1}, "hio": {"beta": 0.7}}, CLASSIC),
    ("threshold 0.1, 1240 iterations", {"sw": {"shrink_wrap_threshold": 0.1}}, "6*(20*ER+180*HIO)+20*ER"),
]


def recipe(change: dict, steps: str, seed: int, **extra) -> dict:
    sw = change.get("sw", {})
    params = {"er": dict(sw), "hio": {**sw, **change.get("hio", {})}}
    return {**PINNED, "seed": seed, "params": params, "steps": steps, **extra}


def support_line(support) -> tuple[int, int]:
    from cdi_plugins.compute.metrics import support_stats
    st = support_stats(support)
    return st["voxels"], st["components"]


def part_real(seeds: int, out) -> None:
    import cdi_plugins
    data = {"path": os.path.abspath(REAL), "free_fraction": 0.05,
            "prepare": {"threshold": 2, "hot_pixels": 20, "centre": "max", "shape": "auto"}}
    out("\n## real: measured Au(111), 64^3, classic recipe (one row per setting and random start)\n")
    out("| setting | seed | support voxels | parts | chi2 | chi2_free |")
    out("|---|---|---|---|---|---|")
    rows = {}
    for label, change, steps in VARIANTS:
        for seed in range(seeds):
            r = cdi_plugins.run(recipe(change, steps, seed, data=data), write=False)
            vox, parts = support_line(r.support)
            last = r.history[-1]
            rows.setdefault(label, []).append((vox, last["chi2"], last["chi2_free"]))
            out(f"| {label} | {seed} | {vox} | {parts} | {last['chi2']:.4f} | {last['chi2_free']:.4f} |")
    out("\nmedians:\n\n| setting | support voxels | chi2 | chi2_free |\n|---|---|---|---|")
    for label, vals in rows.items():
        out(f"| {label} | {statistics.median(v[0] for v in vals):.0f} | "
            f"{statistics.median(v[1] for v in vals):.4f} | {statistics.median(v[2] for v in vals):.4f} |")


SIM_CASES = [   # (crystal seed, smallest oversampling, photons): the ends and the middle of the ranges
    (11, 3.0, 1e9), (12, 6.0, 1e6), (13, 10.0, 1e7),
]


def part_sim(seeds: int, out) -> None:
    import cdi_plugins
    from cdi_plugins.compute.metrics import compare_to_truth
    from cdi_plugins.physics.atomistic import atomistic_crystal
    out("\n## sim: atomistic gold crystals, 64^3, Poisson noise (error vs truth, support vs true support)\n")
    out("| setting | crystal | oversampling | photons | error | support / true | chi2 |")
    out("|---|---|---|---|---|---|---|")
    rows = {}
    for cseed, os_, counts in SIM_CASES:
        c = atomistic_crystal(cseed, shape=64, oversampling=os_, counts=counts, gap_prob=0.0)
        true_vox = int(c["support"].sum())
        for label, change, steps in VARIANTS:
            for seed in range(seeds):
                r = cdi_plugins.run(recipe(change, steps, seed, data={"path": "<array>"}),
                                    data=c["intensity"], write=False)
                err = compare_to_truth(r.obj, c["rho"], support=c["support"], scale=True)["error"]
                ratio = float(r.support.sum()) / true_vox
                rows.setdefault(label, []).append((err, ratio))
                out(f"| {label} | {cseed} | {os_:g} | {counts:.0e} | {err:.3f} | {ratio:.2f} | "
                    f"{r.history[-1]['chi2']:.4f} |")
    out("\nmedians over crystals and starts:\n\n| setting | error | support / true |\n|---|---|---|")
    for label, vals in rows.items():
        out(f"| {label} | {statistics.median(v[0] for v in vals):.3f} | "
            f"{statistics.median(v[1] for v in vals):.2f} |")


def part_ga(seeds: int, out) -> None:
    import cdi_plugins
    from cdi_plugins.physics.simulate import simulate_crystal
    steps = "10*ER+40*HIO+10*ER"          # a hard start: too short for most random starts to converge
    out(f"\n## ga: GA against independent runs, 48^3 crystals, 1e8 photons, steps {steps!r}\n")
    out("| crystal | GA 4 runs x 3 generations | best of 4 runs | best of 12 runs |")
    out("|---|---|---|---|")
    wins4 = wins12 = 0
    diffs = []
    for cseed in range(seeds * 3):
        sim = simulate_crystal(48, seed=100 + cseed, counts=1e8)
        data = {"path": "<array>"}
        base = {**PINNED, "seed": 0, "steps": steps, "data": data}

        def err(doc):
            r = cdi_plugins.run(doc, data=sim["intensity"], write=False)
            from cdi_plugins.compute.metrics import compare_to_truth
            return compare_to_truth(r.obj, sim["truth"], support=sim["support"])["error"]
        ga = err({**base, "runs": 4, "ga": {"generations": 3, "metric": "chi2"}})
        four = err({**base, "runs": 4})
        twelve = err({**base, "runs": 12})
        wins4 += ga < four
        wins12 += ga < twelve
        diffs.append(twelve - ga)
        out(f"| {100 + cseed} | {ga:.3f} | {four:.3f} | {twelve:.3f} |")
    n = len(diffs)
    out(f"\nGA better than the best of 4 runs on {wins4}/{n} crystals, than the best of 12 on {wins12}/{n}; "
        f"median error gain over the best of 12: {statistics.median(diffs):+.3f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("real", "sim", "ga", "all"), default="all")
    p.add_argument("--seeds", type=int, default=2, help="random starts per setting on the real pattern "
                   "(ga: 3 x this many crystals)")
    p.add_argument("--sim-starts", type=int, default=1, help="random starts per setting and simulated crystal")
    args = p.parse_args(argv)

    def out(line):
        print(line, flush=True)
    if args.part in ("real", "all"):
        if not os.path.exists(REAL):
            print(f"{REAL} not found: the real part needs ../shared/data", file=sys.stderr)
            return 2
        part_real(args.seeds, out)
    if args.part in ("sim", "all"):
        part_sim(args.sim_starts, out)
    if args.part in ("ga", "all"):
        part_ga(args.seeds, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
