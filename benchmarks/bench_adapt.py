"""Does `cdi adapt` pay?  Shipped weights before and after physics-aware adaptation on a shifted domain.

The shifted domain: atomistic gold crystals (cdi_plugins.physics.atomistic) with a much stronger smooth
strain field than the shipped weights were trained on (peak |Q.u| 3-5 rad instead of 0-1.5 rad; measured
first: on it the shipped network's support IoU falls from ~0.84 to ~0.59 and its phase RMS rises from
~0.25 to ~1.0 rad at 32^3, while larger oversampling or a flat background barely hurt it).  No detector
gaps (``cdi_plugins.run(data=array)`` has no mask), counts log-uniform 1e5-1e9 as in training.

1. ``--n-adapt`` unlabelled patterns (seeds 7000+i) are written as .npy files and adapted on through the
   same code as ``cdi adapt FILES`` (read_patterns + adapt), once per ``--train`` mode;
2. on ``--n-test`` held-out patterns (seeds 8000+i) of the same domain, for the shipped and each adapted
   weights: the physics loss, support IoU and phase RMS of the network's guess against the truth (on the
   data grid, after twin and global phase), the starting chi^2 (the nn step's), and the AD iterations
   NN -> AD (configs/nn_ad.yaml, the AD step extended to --ad-iterations) needs to reach the chi^2 of the
   classic recipe (configs/classic_iterative.yaml, 620 iterations) on the same pattern;
3. with ``--real``: the shared real gold pattern (configs/real_au.yaml's data and preparation), adapted on
   itself (the only pattern there is: this is fitting the network to that one measurement, not
   generalising), starting chi^2 and AD iterations against the classic steps on it (one start).

    python benchmarks/bench_adapt.py                  # ~10-15 min on one CPU core
    python benchmarks/bench_adapt.py --n-adapt 32 --n-test 6 --real
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLASSIC = os.path.join(ROOT, "configs", "classic_iterative.yaml")
NN_AD = os.path.join(ROOT, "configs", "nn_ad.yaml")
REAL = os.path.join(ROOT, "configs", "real_au.yaml")
CLASSIC_STEPS = "3*(20*ER+180*HIO)+20*ER"     # configs/classic_iterative.yaml's
SHIFTED = {"strain_phase": (3.0, 5.0), "gap_prob": 0.0}


RECIPE_AD = 190   # the AD iterations of configs/nn_ad.yaml


def ad_iterations(history, target: float):
    """(start chi^2, first AD iteration whose chi^2 <= target or None, chi^2 after the recipe's 190)."""
    start = next(r["chi2"] for r in history if r["algorithm"] == "nn")
    ad = [r for r in history if r["algorithm"] == "ad"]
    hit = next((r["iteration"] for r in ad if r["chi2"] <= target), None)
    return start, hit, ad[min(RECIPE_AD, len(ad)) - 1]["chi2"]


def nn_ad(data, weights, iterations, *, recipe=NN_AD, ad_set=()):
    """NN -> AD with *weights*, the AD step run for *iterations* (its schedule otherwise the recipe's, with
    the AD parameters *ad_set*, ``(name, value)`` pairs, changed)."""
    import cdi_plugins
    over = [("threads", 1), ("steps.0.weights", weights), ("steps.1.iterations", iterations)]
    over += [(f"steps.1.{k}", v) for k, v in ad_set]
    return cdi_plugins.run(recipe, data=data, overrides=over, write=False)


def real_recipe(steps=None) -> dict:
    """configs/real_au.yaml's data and preparation with the steps of its nn_ad dataset (or *steps*), one run.
    (A dict, because ``--set`` keys apply to every dataset and real_au's others have string steps.)"""
    import yaml
    with open(REAL) as fh:
        doc = yaml.safe_load(fh)
    data = dict(doc["data"])
    data["path"] = os.path.normpath(os.path.join(os.path.dirname(REAL), data["path"]))
    nn_steps = next(d for d in doc["datasets"] if d["name"] == "nn_ad")["steps"]
    return {"name": "real_au", "data": data, "seed": doc.get("seed", 0), "runs": 1,
            "steps": steps if steps is not None else nn_steps}


def guess_figures(intensity, truth, weights):
    from cdi_plugins.algorithms.nn.network import figures
    from cdi_plugins.algorithms.nn.plugin import predict
    obj = predict(intensity, None, weights=weights, device="cpu")["obj"]
    a = np.abs(obj)
    return figures(a / a.max(), np.angle(obj), truth["amplitude"], truth["phase"], truth["support"])


def fmt_it(v, cap):
    return f">{cap}" if v is None else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="au32_w025_ft")
    ap.add_argument("--n-adapt", type=int, default=24)
    ap.add_argument("--n-test", type=int, default=4)
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train", nargs="+", default=["all", "phase", "mix"], choices=("all", "phase", "decoders", "mix"),
                    help="adaptation modes: which parameters adapt (all, phase, decoders); mix: all, plus the "
                         "supervised loss on --mix-n simulated crystals of the training domain (--mix-weight)")
    ap.add_argument("--mix-n", type=int, default=64)
    ap.add_argument("--mix-weight", type=float, default=1.0)
    ap.add_argument("--ad-iterations", type=int, default=400)
    ap.add_argument("--real", action="store_true", help="also the shared real gold pattern")
    ap.add_argument("--real-epochs", type=int, default=30)
    ap.add_argument("--ad-set", nargs="+", default=[], metavar="NAME=VALUE",
                    help="change the AD step's schedule for the simulated domain, e.g. feedback_iterations=0 "
                         "coarse_iterations=0 (gradient descent alone from the network's guess, where the "
                         "start is all there is)")
    args = ap.parse_args(argv)
    import yaml
    ad_set = [(k, yaml.safe_load(v)) for k, v in (a.split("=", 1) for a in args.ad_set)]

    import torch

    import cdi_plugins
    from cdi_plugins.algorithms.nn.adapt import adapt, evaluate_physics, prepare, read_patterns
    from cdi_plugins.algorithms.nn.network import load_weights
    from cdi_plugins.physics.atomistic import atomistic_crystal
    torch.set_num_threads(1)
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="bench_adapt_")
    files = []
    for i in range(args.n_adapt):
        s = atomistic_crystal([7000, i], shape=args.shape, **SHIFTED)
        files.append(os.path.join(tmp, f"pattern_{i:03d}.npy"))
        np.save(files[-1], s["intensity"])
    test = [atomistic_crystal([8000, i], shape=args.shape, **SHIFTED) for i in range(args.n_test)]
    print(f"simulated {args.n_adapt} + {args.n_test} {args.shape}^3 crystals, strain phase 3-5 rad "
          f"({time.time() - t0:.0f} s)", flush=True)

    def mode_settings(mode):
        if mode != "mix":
            return {"train": mode}
        from cdi_plugins.physics.atomistic import make_set
        path = make_set(os.path.join(tmp, "mix.h5"), args.mix_n, 11)    # the shipped weights' domain, 32^3
        return {"train": "all", "mix": path, "mix_weight": args.mix_weight}

    weights = {"shipped": args.weights}
    for mode in args.train:
        out = os.path.join(tmp, f"adapted_{mode}.pt")
        t1 = time.time()
        res = adapt(read_patterns(files), out, weights=args.weights, progress=False, log=lambda *a: None,
                    settings={"epochs": args.epochs, "lr": args.lr, "threads": 1, "seed": 0, **mode_settings(mode)})
        print(f"adapted ({mode}) on {args.n_adapt} patterns, {args.epochs} epochs: physics loss "
              f"{res['loss_before'].mean():.4f} -> {res['loss_after'].mean():.4f} ({time.time() - t1:.0f} s)",
              flush=True)
        weights[f"adapted ({mode})"] = out

    classic = []
    for s in test:
        r = cdi_plugins.run(CLASSIC, data=s["intensity"], overrides=[("threads", 1)], write=False)
        classic.append(r.chi2)
    print(f"classic recipe chi^2 on the held-out patterns: {' '.join(f'{c:.3e}' for c in classic)}", flush=True)

    rows = {}
    for label, w in weights.items():
        model, meta = load_weights(w)
        prep = [prepare(s["intensity"], s["mask"], meta) for s in test]
        phys = evaluate_physics(model, prep)
        row = {"phys": list(phys), "iou": [], "phase": [], "start": [], "iters": [], "final": [], "chi": []}
        for s, target in zip(test, classic):
            f = guess_figures(s["intensity"], s, w)
            res = nn_ad(s["intensity"], w, args.ad_iterations, ad_set=ad_set)
            start, hit, final = ad_iterations(res.history, target)
            row["iou"].append(f["iou"])
            row["phase"].append(f["phase_rms"])
            row["start"].append(start)
            row["iters"].append(hit)
            row["final"].append(final)
            row["chi"].append([r["chi2"] for r in res.history if r["algorithm"] == "ad"])
        rows[label] = row
        print(f"  {label:<18} per pattern: start chi^2 {' '.join(f'{c:.3f}' for c in row['start'])}; "
              f"AD iterations {' '.join(fmt_it(v, args.ad_iterations) for v in row['iters'])}", flush=True)

    cap = args.ad_iterations
    print(f"\nshifted domain (strain phase 3-5 rad), {args.shape}^3, {args.n_test} held-out patterns "
          f"(seeds 8000+i), adapted on {args.n_adapt} others (seeds 7000+i), {args.epochs} epochs, lr {args.lr}; "
          f"NN -> AD: configs/nn_ad.yaml{' with ' + ' '.join(args.ad_set) if args.ad_set else ''}; "
          f"medians (AD iterations: mean with >{cap} counted as {cap})")
    print(f"{'weights':<18} {'physics loss':>12} {'IoU':>6} {'phase RMS':>9} {'start chi2':>10} "
          f"{'AD its to classic':>17} {'reached':>7} {'chi2 @190':>10} {'classic':>10} "
          f"{'its to shipped final':>20} {'chi2 final':>10}")
    # what a better start saves: per pattern, the first AD iteration at which these weights' run is at or below
    # the chi^2 the shipped weights' run ends at after all its iterations (the shipped run itself: its last
    # improvement, at most cap)
    ref = [chi[-1] for chi in rows["shipped"]["chi"]]
    for label, r in rows.items():
        r["to_ref"] = [next((k + 1 for k, c in enumerate(chi) if c <= t), None) for chi, t in zip(r["chi"], ref)]
        print(f"  {label:<18} per pattern: AD iterations to the shipped weights' final chi^2 "
              f"{' '.join(fmt_it(v, args.ad_iterations) for v in r['to_ref'])}")
    for label, r in rows.items():
        its = [cap if v is None else v for v in r["iters"]]
        print(f"{label:<18} {statistics.median(r['phys']):>12.4f} {statistics.median(r['iou']):>6.3f} "
              f"{statistics.median(r['phase']):>9.3f} {statistics.median(r['start']):>10.4f} "
              f"{statistics.mean(its):>17.1f} {sum(v is not None for v in r['iters']):>5}/{len(its)} "
              f"{statistics.median(r['final']):>10.3e} {statistics.median(classic):>10.3e} "
              f"{statistics.mean(cap if v is None else v for v in r['to_ref']):>20.1f} "
              f"{statistics.median(chi[-1] for chi in r['chi']):>10.3e}")

    if args.real:
        pats = read_patterns([REAL])
        base = cdi_plugins.run(real_recipe(CLASSIC_STEPS), overrides=[("threads", 1)], write=False).chi2
        print(f"\nreal gold pattern ({os.path.relpath(REAL, ROOT)}, one pattern), classic steps (one start): "
              f"chi^2 {base:.4e}")
        real_w = {"shipped": args.weights}
        for mode in args.train:
            out = os.path.join(tmp, f"real_{mode}.pt")
            res = adapt(pats, out, weights=args.weights, progress=False, log=lambda *a: None,
                        settings={"epochs": args.real_epochs, "lr": args.lr, "threads": 1, "batch_size": 1,
                                  **mode_settings(mode)})
            real_w[f"adapted ({mode})"] = out
        print(f"{'weights':<18} {'start chi2':>10} {'AD its to classic':>17} {'chi2 @190':>10} "
              f"{'its to shipped final':>20} {'chi2 final':>10}   (adapted on this same pattern, "
              f"{args.real_epochs} epochs)")
        ref_real = None
        for label, w in real_w.items():
            res = nn_ad(None, w, args.ad_iterations, recipe=real_recipe(), ad_set=ad_set)
            start, hit, final = ad_iterations(res.history, base)
            chi = [r["chi2"] for r in res.history if r["algorithm"] == "ad"]
            ref_real = chi[-1] if ref_real is None else ref_real      # the shipped weights' run comes first
            to_ref = next((k + 1 for k, c in enumerate(chi) if c <= ref_real), None)
            print(f"{label:<18} {start:>10.4f} {fmt_it(hit, cap):>17} {final:>10.3e} {fmt_it(to_ref, cap):>20} "
                  f"{chi[-1]:>10.3e}")
    print(f"\n({time.time() - t0:.0f} s in all; weights in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
