"""Does an option or an algorithm help?  The same recipe with and without it on simulated 32^3 crystals.

Each case runs ``300 <alg> + 50 ER`` (the baseline: ``300 HIO + 50 ER``, or ER for the algorithms) on
crystals of seeds 0..N-1 with fft: scipy and one thread (bitwise reproducible), and prints the error
against the truth over the true support for each seed, without / with.

    python benchmarks/options_study.py                 # every case, 6 seeds
    python benchmarks/options_study.py twin_strong --seeds 8
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from cdi_plugins.compute.backend import get_backend
from cdi_plugins.compute.metrics import compare_to_truth
from cdi_plugins.core.registry import get_registry
from cdi_plugins.core.state import Context, Problem
from cdi_plugins.physics.simulate import simulate_crystal

BOX = dict(initial_support="box", box_fraction=0.6)
NOISY = dict(counts=1e6, noise=True)
# name: (simulate_crystal arguments, step parameters of both runs, (baseline alg, alg), options of the second)
CASES = {
    "sf": ({}, {}, ("er", "sf"), {}),
    "sf_box": ({}, BOX, ("er", "sf"), {}),
    "sf_noisy": (dict(counts=1e7, noise=True), {}, ("er", "sf"), {}),
    "asr_box": ({}, BOX, ("er", "asr"), {}),
    "dm_box": ({}, BOX, ("er", "dm"), {}),
    "lowpass_noisy": (NOISY, {}, ("hio", "hio"), dict(lowpass_iterations=150)),
    "lowpass_noisy_box": (NOISY, BOX, ("hio", "hio"), dict(lowpass_iterations=150)),
    "lowpass_os4": (dict(NOISY, oversampling_min=4.0), {}, ("hio", "hio"), dict(lowpass_iterations=150)),
    "phc_weak": (dict(phase_amplitude=0.5), {}, ("hio", "hio"), dict(phc_iterations=150)),
    "phc_weak_box": (dict(phase_amplitude=0.5), BOX, ("hio", "hio"), dict(phc_iterations=150)),
    "phc_strong": (dict(phase_amplitude=3.0), {}, ("hio", "hio"), dict(phc_iterations=100)),
    "twin": ({}, {}, ("hio", "hio"), dict(twin_trigger=2)),
    "twin_strong": (dict(phase_amplitude=3.0), {}, ("hio", "hio"), dict(twin_trigger=2)),
}


def _run(name, problem, state, seed, params):
    spec = get_registry().get(name)
    ctx = Context(backend=get_backend("numpy", fft="scipy", threads=1), rng=np.random.default_rng(seed), step=1)
    return spec.run(problem, state, spec.params.validate(params), ctx)


def error_of(problem, seed, alg, params):
    """Error after 300 *alg* + 50 ER, or None when a support guard stopped the run."""
    from cdi_plugins.errors import CDIError
    try:
        s = _run(alg, problem, None, seed, dict(iterations=300, **params))
        s = _run("er", problem, s, seed, dict(iterations=50))
    except CDIError:
        return None
    truth = problem.truth
    return compare_to_truth(np.asarray(s.obj), truth, support=np.abs(truth) > 0.5 * np.abs(truth).max())["error"]


def study(case: str, seeds: int) -> list[tuple]:
    sim, base, (alg0, alg1), opts = CASES[case]
    rows = []
    for seed in range(seeds):
        d = simulate_crystal(32, seed=seed, **{"counts": 1e9, "noise": False, **sim})
        p = Problem.from_array(d["intensity"], truth=d["truth"], source="sim")
        rows.append((seed, error_of(p, seed, alg0, base), error_of(p, seed, alg1, {**base, **opts})))
    return rows


def _fmt(v):
    return "stopped" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="of: " + ", ".join(CASES) + " (default: all)")
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    for case in args.cases or CASES:
        rows = study(case, args.seeds)
        without = " ".join(_fmt(r[1]) for r in rows)
        with_ = " ".join(_fmt(r[2]) for r in rows)
        print(f"{case:18s} without: {without}\n{'':18s} with:    {with_}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
