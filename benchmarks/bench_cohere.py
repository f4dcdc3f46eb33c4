"""Side by side: our ER/HIO against cohere-core's NumPy backend, same data, same sequence.

    python benchmarks/bench_cohere.py                       # 128^3, "1*(20*ER+80*HIO)+20*ER"
    python benchmarks/bench_cohere.py --shape 128 --sequence "3*(20*ER+180*HIO)+20*ER"

Both run in this process on the same simulated crystal (its truth known): ours through a recipe
(backend numpy, default FFT engine; with our default shrink-wrap, and with cohere's threshold 0.1 updated
every 5 iterations), cohere through its own ``create_rec`` / ``iterate`` exactly as
cohere-ui runs it (processing np, shrink-wrap every iteration, its defaults), started from its own
random guess.  Printed: time per iteration, total time, final chi^2 (the last recorded value, same
definition for both) and the error against the truth after alignment.  Timings on a shared machine
are noisy: read the ratio, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, default=128)
    ap.add_argument("--sequence", default="1*(20*ER+80*HIO)+20*ER")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--counts", type=float, default=1e8)
    args = ap.parse_args(argv)

    import cdi_plugins
    from cdi_plugins.compute.metrics import compare_to_truth
    from cdi_plugins.physics.simulate import simulate_crystal
    try:
        import cohere_core.controller.phasing as ph
    except ImportError:
        print("cohere-core is not installed: pip install 'cdi-plugins[cohere]'")
        return 1
    import importlib.metadata

    sim = simulate_crystal(args.shape, seed=args.seed, counts=args.counts)
    intensity, truth = sim["intensity"], sim["truth"]
    rows = []
    # ours, default threads and one thread (cohere's scipy.fft runs on one)
    # our defaults, then cohere's shrink-wrap threshold (0.1) updated every 5 iterations (cohere: every one);
    # default threads (all cores at this size) and one thread (cohere's scipy.fft runs on one)
    cohere_like = {"shrink_wrap_threshold": 0.1, "shrink_wrap_period": 5}
    configs = [("defaults", {}, None), ("sw 0.1/5", {"er": cohere_like, "hio": cohere_like}, None),
               ("sw 0.1/5", {"er": cohere_like, "hio": cohere_like}, 1)]
    for name, params, threads in configs:
        recipe = {"data": {"path": "<array>"}, "backend": "numpy", "threads": threads, "seed": args.seed,
                  "params": params, "steps": args.sequence}
        # warm-up: FFTW planning (cached as wisdom afterwards) is not part of an iteration
        cdi_plugins.run({**recipe, "steps": "1*ER"}, data=intensity, write=False)
        t0 = time.perf_counter()
        r = cdi_plugins.run(recipe, data=intensity, write=False)
        wall = time.perf_counter() - t0
        err = compare_to_truth(r.obj, truth)["error"]
        label = f"cdi-plugins ER/HIO {name} ({r.metadata['fft']}, {r.metadata['threads']} thr)"
        rows.append((label, r.iterations, r.seconds, wall, r.chi2, err))
    # cohere-core, NumPy backend, as cohere-ui runs it
    params = {"algorithm_sequence": args.sequence, "hio_beta": 0.9, "shrink_wrap_trigger": [1, 1],
              "shrink_wrap_type": "GAUSS", "shrink_wrap_threshold": 0.1, "shrink_wrap_gauss_sigma": 1.0,
              "initial_support_area": [0.5, 0.5, 0.5]}
    with tempfile.TemporaryDirectory() as tmp:
        f = os.path.join(tmp, "data.npy")
        np.save(f, np.sqrt(intensity).astype(np.float32))  # amplitudes, centred (even size)
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet):
            t0 = time.perf_counter()
            rec = ph.create_rec(params, f, "np", -1, debug=True)
            t1 = time.perf_counter()
            rec.iterate()
            t2 = time.perf_counter()
        obj = np.conj(ph.devlib.to_numpy(rec.ds_image)).astype(np.complex64)
        # iterate() max-normalises the image: give it back the scale that fits the data best
        a = np.abs(np.fft.fftn(np.fft.ifftshift(obj)))
        d = np.fft.ifftshift(np.sqrt(intensity))
        obj *= np.float32(np.sum(a * d) / np.sum(a * a))
        err = compare_to_truth(obj, truth)["error"]
        rows.append((f"cohere-core {importlib.metadata.version('cohere-core')} (np)", rec.iter_no, t2 - t1,
                     t2 - t0, float(rec.errs[-1]), err))

    n = args.shape
    print(f"{n}^3 simulated crystal (seed {args.seed}, {args.counts:.0e} counts), sequence {args.sequence!r}, "
          f"{os.cpu_count()} CPUs")
    print(f"| {'run':<46} | iterations | ms / iteration | total s (wall) | final chi2 | error vs truth |")
    print(f"|{'-' * 48}|------------|----------------|----------------|------------|----------------|")
    for label, its, secs, wall, chi, err in rows:
        print(f"| {label:<46} | {its:>10} | {1000 * secs / its:>14.1f} | {secs:>6.1f} ({wall:>5.1f}) | "
              f"{chi:>10.3e} | {err:>14.4f} |")
    c = rows[-1]
    for label, its, secs, wall, chi, err in rows[:-1]:
        print(f"{label}: {(c[2] / c[1]) / (secs / its):.1f}x less time per iteration than cohere, "
              f"final chi2 {'<=' if chi <= c[4] else '>'} cohere's ({chi:.3e} vs {c[4]:.3e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
