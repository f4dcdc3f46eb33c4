"""NN-seeded vs random-start phase retrieval on held-out atomistic crystals (64^3, Poisson noise).

    python benchmarks/nn_seeded_vs_random.py [--crystals 3] [--counts 1e8]

For each crystal (seed [3, 1000 + k]: the held-out seed, never used in training) the random-start recipe
"3*(20*ER+180*HIO)+20*ER" (620 iterations, configs/demo.yaml) sets the error to beat; the NN-seeded recipe
(nn, then N*RAAR+40*ER, configs/nn_seeded.yaml) is run for growing N and the first total iteration count that
reaches the same error is printed.  Error: compare_to_truth (global phase, scale, shift and twin removed)
inside the true support.
"""

import argparse

import numpy as np

import cdi_plugins
from cdi_plugins.physics.atomistic import atomistic_crystal
from cdi_plugins.compute.metrics import compare_to_truth

RANDOM = "3*(20*ER+180*HIO)+20*ER"


def run(intensity, steps, seed=0):
    rec = {"name": "cmp", "data": {"path": "unused.npy"}, "backend": "numpy", "seed": seed,
           "params": {"er": {"shrink_wrap_period": 20}, "hio": {"beta": 0.9}, "raar": {"beta": 0.9}},
           "steps": steps}
    return cdi_plugins.run(rec, data=intensity, write=False)


def error(res, truth, support):
    return compare_to_truth(res.obj, truth, support=support, scale=True)["error"]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--crystals", type=int, default=3)
    p.add_argument("--counts", type=float, default=1e8)
    p.add_argument("--weights", default="au32_w025_ft")
    args = p.parse_args(argv)
    ratios = []
    for k in range(args.crystals):
        s = atomistic_crystal([3, 1000 + k], shape=64, counts=args.counts)
        inten, truth, sup = s["intensity"], s["rho"], s["support"]
        r = run(inten, RANDOM)
        e_rand = error(r, truth, sup)
        n_rand = len(r.history)
        nn_only = run(inten, [{"algorithm": "nn", "weights": args.weights}])
        e_nn = error(nn_only, truth, sup)
        found = None
        rows = []
        for n_raar in (0, 20, 40, 60, 100, 160, 240, 360, 560):
            steps = [{"algorithm": "nn", "weights": args.weights}]
            if n_raar:
                steps.append({"algorithm": "raar", "iterations": n_raar})
            steps.append({"algorithm": "er", "iterations": 40})
            try:
                res = run(inten, steps)
            except cdi_plugins.CDIError as exc:
                print(f"  nn + {n_raar + 40} its failed: {exc}")
                continue
            e = error(res, truth, sup)
            its = n_raar + 40
            rows.append((its, e))
            if e <= e_rand * 1.0001:
                found = its
                break
        print(f"crystal {k}: random start {n_rand} iterations -> error {e_rand:.4f}; nn alone {e_nn:.4f}; "
              + "nn + " + ", ".join(f"{i} its -> {e:.4f}" for i, e in rows))
        if found:
            ratios.append(found / n_rand)
            print(f"  nn-seeded reaches it in {found} iterations ({found / n_rand:.2f} of {n_rand})")
        else:
            print("  nn-seeded did not reach it within the lengths tried")
    if ratios:
        print(f"iterations needed, nn-seeded / random start: mean {np.mean(ratios):.2f}, worst {max(ratios):.2f} "
              f"over {len(ratios)} of {args.crystals} crystals")


if __name__ == "__main__":
    main()
