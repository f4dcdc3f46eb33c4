"""Does an option or an algorithm help?  The same recipe with and without it on simulated 32^3 crystals.

Three parts, all on crystals of seeds 0..N-1 with fft: scipy and one thread (bitwise reproducible),
error against the truth over the true support:

* ``--part start`` (default): each case runs ``300 <alg> + 50 ER`` (the baseline: ``300 HIO + 50 ER``, or
  ER for the algorithms) from a random start and prints the error for each seed, without / with;
* ``--part refine``: solvent flipping against ER where a start is already roughly phased (a previous run,
  a network's prediction): the truth's amplitude with a smooth random phase error of ``--phase-error`` rad
  rms, on the true support dilated by 2 pixels; ``200 SF + 50 ER`` against ``200 ER + 50 ER`` from the
  same start, ``--starts`` starts per crystal;
* ``--part lowpass``: the low-pass filter as a rescue, counted over crystals x random starts (``--starts``):
  how many runs of ``300 HIO + 50 ER`` end below an error of 0.15, without the filter and with it over the
  first 150 iterations from ``lowpass_start`` 0.15, 0.3 and 0.7;
* ``--part lowpass_real``: the same question on the measured gold pattern (configs/real_bcdi.yaml, its
  defaults), where there is no truth: chi2 on the held-out pixels of ``--starts`` random starts, without the
  filter and with it over the first 120 iterations of the first HIO step (the same starts, paired).

    python benchmarks/options_study.py                 # every case, 6 seeds
    python benchmarks/options_study.py twin_strong --seeds 8
    python benchmarks/options_study.py --part refine --seeds 8 --starts 2
    python benchmarks/options_study.py --part lowpass --seeds 8 --starts 3 [--size 48]
    python benchmarks/options_study.py --part lowpass --seeds 16 --starts 3 --size 64 --oversampling 6
    python benchmarks/options_study.py --part lowpass_real --starts 48
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy import ndimage

from cdi_plugins.compute.backend import get_backend
from cdi_plugins.compute.metrics import compare_to_truth
from cdi_plugins.core.registry import get_registry
from cdi_plugins.core.state import Context, Problem, State
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
    return _error(problem, s)


def _error(problem, state):
    truth = problem.truth
    return compare_to_truth(np.asarray(state.obj), truth, support=np.abs(truth) > 0.5 * np.abs(truth).max())["error"]


def _problem(seed, sim, size=32):
    d = simulate_crystal(size, seed=seed, **{"counts": 1e9, "noise": False, **sim})
    return Problem.from_array(d["intensity"], truth=d["truth"], source="sim")


def study(case: str, seeds: int) -> list[tuple]:
    sim, base, (alg0, alg1), opts = CASES[case]
    rows = []
    for seed in range(seeds):
        p = _problem(seed, sim)
        rows.append((seed, error_of(p, seed, alg0, base), error_of(p, seed, alg1, {**base, **opts})))
    return rows


def partial_phase_start(problem, seed: int, phase_error: float) -> State:
    """The truth's amplitude with a smooth random phase error (rms *phase_error* rad), on the dilated true support."""
    truth = problem.truth
    rng = np.random.default_rng(1000 + seed)
    err = ndimage.gaussian_filter(rng.standard_normal(truth.shape), 2.0)
    err *= phase_error / err.std()
    amp = np.abs(truth)
    support = ndimage.binary_dilation(amp > 0.1 * amp.max(), iterations=2)
    return State(obj=(amp * np.exp(1j * (np.angle(truth) + err))).astype(np.complex64), support=support)


def refine_error(problem, state, seed, alg, iterations=200):
    """Error after *iterations* of *alg* + 50 ER from *state* (shrink-wrap as usual); 1 if a guard stopped it."""
    from cdi_plugins.errors import CDIError
    try:
        s = _run(alg, problem, state, seed, dict(iterations=iterations))
        return _error(problem, _run("er", problem, s, seed, dict(iterations=50)))
    except CDIError:
        return 1.0


def refine(seeds: int, starts: int, phase_error: float, counts: float | None) -> None:
    label, sim = ("1e9 photons, no noise", {}) if counts is None else \
        (f"{counts:g} photons, Poisson noise", dict(counts=counts, noise=True))
    er, sf, start = [], [], []
    for seed in range(seeds):
        p = _problem(seed, sim)
        for k in range(starts):
            st = partial_phase_start(p, seed * starts + k, phase_error)
            start.append(_error(p, st))
            er.append(refine_error(p, st, seed, "er"))
            sf.append(refine_error(p, st, seed, "sf"))
    er, sf = np.array(er), np.array(sf)
    print(f"refine {label}, phase error {phase_error} rad rms (start error {np.mean(start):.3f}), "
          f"{seeds} crystals x {starts} starts")
    print(f"  200 ER + 50 ER: {' '.join(f'{v:.3f}' for v in er)}  mean {er.mean():.3f}")
    print(f"  200 SF + 50 ER: {' '.join(f'{v:.3f}' for v in sf)}  mean {sf.mean():.3f}")
    print(f"  SF lower on {(sf < er).sum()} of {er.size}; mean ratio SF/ER {np.mean(sf / er):.2f}", flush=True)

LOWPASS_CASES = {
    "noisy_1e5": dict(counts=1e5, noise=True),
    "strained_1e6": dict(counts=1e6, noise=True, phase_amplitude=3.0),
}


def lowpass(seeds: int, starts: int, size: int, cases=None) -> None:
    variants = [("without", {})] + [(f"start {st}", dict(lowpass_iterations=150, lowpass_start=st))
                                    for st in (0.15, 0.3, 0.7)]
    for case, sim in (cases or LOWPASS_CASES).items():
        probs = [_problem(seed, sim, size) for seed in range(seeds)]
        print(f"lowpass {case}, {size}^3: runs of 300 HIO + 50 ER below error 0.15 "
              f"({seeds} crystals x {starts} starts)")
        for name, opts in variants:
            errs = np.array([[error_of(p, 1000 * seed + k, "hio", opts) or 1.0 for k in range(starts)]
                             for seed, p in enumerate(probs)])
            ok = (errs < 0.15).sum(axis=1)
            print(f"  {name:12s} per crystal {' '.join(map(str, ok))}  total {ok.sum()}/{errs.size}  "
                  f"mean error {errs.mean():.3f}", flush=True)


def lowpass_real(starts: int) -> None:
    import os

    import cdi_plugins
    recipe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "real_bcdi.yaml")
    scores = {}
    for name, start in (("without", None), ("start 0.15", 0.15), ("start 0.3", 0.3)):
        over = {"runs": starts}
        if start is not None:
            over["steps"] = [{"algorithm": "er", "iterations": 20},
                             {"algorithm": "hio", "iterations": 180, "lowpass_iterations": 120, "lowpass_start": start},
                             {"sequence": "20*ER+180*HIO+20*ER+180*HIO+20*ER"}]
        sc = scores[name] = np.array(cdi_plugins.run(recipe, overrides=over, write=False).metadata["run_scores"])
        print(f"  {name:11s} chi2_free of {sc.size} starts: min {sc.min():.5f}  median {np.median(sc):.5f}  "
              f"max {sc.max():.5f}", flush=True)
        if start is not None:
            base = scores["without"]
            print(f"  {'':11s} lower than without on {(sc < base).sum()} of {sc.size}, mean ratio "
                  f"{np.mean(sc / base):.3f}", flush=True)


def _fmt(v):
    return "stopped" if v is None else f"{v:.3f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="of: " + ", ".join(CASES) + " (default: all)")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--part", choices=("start", "refine", "lowpass", "lowpass_real"), default="start")
    ap.add_argument("--starts", type=int, default=2, help="refine, lowpass: starts per crystal")
    ap.add_argument("--phase-error", type=float, default=0.8, help="refine: rms phase error of the start (rad)")
    ap.add_argument("--size", type=int, default=32, help="lowpass: array side")
    ap.add_argument("--counts", type=float, default=None,
                    help="refine, lowpass with --oversampling: photons with Poisson noise (default: none; 1e6)")
    ap.add_argument("--oversampling", type=float, default=None,
                    help="lowpass: one case of this minimum oversampling per axis instead of the two built in")
    ap.add_argument("--phase", type=float, default=1.0, help="lowpass with --oversampling: strain phase (rad)")
    args = ap.parse_args(argv)
    if args.part == "refine":
        refine(args.seeds, args.starts, args.phase_error, args.counts)
        return 0
    if args.part == "lowpass":
        cases = None
        if args.oversampling is not None:
            counts = args.counts or 1e6
            cases = {f"os{args.oversampling:g}_{counts:g}_phase{args.phase:g}":
                     dict(counts=counts, noise=True, oversampling_min=args.oversampling, phase_amplitude=args.phase)}
        lowpass(args.seeds, args.starts, args.size, cases)
        return 0
    if args.part == "lowpass_real":
        print(f"lowpass on the measured gold pattern (configs/real_bcdi.yaml), {args.starts} random starts")
        lowpass_real(args.starts)
        return 0
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
