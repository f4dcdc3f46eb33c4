"""Where the ``nn`` step's time goes at 64^3: preparation, the network, resampling back, chi^2.

Times each part of the step on held-out simulated crystals in one warm process, as the step runs them
(``cdi_plugins.algorithms.nn.plugin.predict`` and the step's chi^2, ``guess_chi2``), next to the bare prediction that
``cdi nn-bench`` times (the same model on a random input), and a whole ``cdi_plugins.run`` of the step.
Medians of this process's CPU time (``time.process_time``), which a busy machine disturbs much less than
wall-clock time; the step's wall-clock time is printed too.  One torch thread by default, as a recipe
with ``threads: 1`` (and any 64^3 recipe by default) runs the step.

    python benchmarks/bench_nn_step.py
    python benchmarks/bench_nn_step.py --repeat 10 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default="au32_w025_ft2")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import cdi_plugins
    from cdi_plugins.algorithms.nn import mapping, plugin
    from cdi_plugins.compute.fourier import oversampling
    from cdi_plugins.physics.simulate import simulate_crystal

    torch.set_num_threads(args.threads)
    datas = [simulate_crystal(args.shape, seed=s, counts=1e8)["intensity"].astype(np.float32) for s in args.seeds]
    mask = np.zeros(datas[0].shape, bool)
    model, meta, _ = plugin._model(args.weights, "cpu")
    target = meta["oversampling_target"]
    n = meta["arch"]["size"]
    bare_x = torch.rand(1, 1, n, n, n).contiguous(memory_format=torch.channels_last_3d)
    recipe = {"name": "bench", "seed": 0, "steps": [{"algorithm": "nn", "weights": args.weights}]}
    cpu = {k: [] for k in ("oversampling estimate", "pattern -> network grid", "network", "network grid -> data grid",
                           "chi^2 of the guess", "predict()", "bare prediction (cdi nn-bench)",
                           "cdi_plugins.run (nn only)")}
    wall = []

    def clock(key, f):
        t0 = time.process_time()
        out = f()
        cpu[key].append(time.process_time() - t0)
        return out

    for rep in range(args.repeat + 1):                 # the first round warms up
        for d in datas:
            os_ = clock("oversampling estimate", lambda: oversampling(d, mask, preset=mapping.OVERSAMPLING_PRESET))
            x, c, _ = clock("pattern -> network grid",
                            lambda: mapping.to_network(d, mask, target=target, size=n, oversampling=os_))
            xt = torch.from_numpy(x)[None, None].contiguous(memory_format=torch.channels_last_3d)
            with torch.no_grad():
                a, p = clock("network", lambda: model(xt))
                clock("bare prediction (cdi nn-bench)", lambda: model(bare_x))
            obj32 = (a[0].numpy() * np.exp(1j * p[0].numpy())).astype(np.complex64)
            obj = clock("network grid -> data grid", lambda: mapping.from_network(obj32, d.shape, c))
            clock("chi^2 of the guess", lambda: plugin.guess_chi2(obj, d, mask))
            clock("predict()", lambda: plugin.predict(d, mask, weights=args.weights, device="cpu",
                                                      threads=args.threads))
            c0 = time.process_time()
            res = cdi_plugins.run(recipe, data=d, write=False, overrides=[("threads", args.threads)])
            cpu["cdi_plugins.run (nn only)"].append(time.process_time() - c0)
            wall.append(res.timings[0])
        if rep == 0:
            for v in cpu.values():
                v.clear()
            wall.clear()
    med = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    bare = med["bare prediction (cdi nn-bench)"]
    print(f"nn step at {args.shape}^3, {args.threads} torch thread(s), weights {args.weights}; "
          f"medians of CPU time over {args.repeat} x {len(datas)} calls (seeds {args.seeds})")
    print(f"{'part':<32} {'ms':>8} {'x bare':>7}")
    for k, v in med.items():
        print(f"{k:<32} {v:>8.1f} {v / bare:>7.2f}")
    step = med["predict()"] + med["chi^2 of the guess"]
    print(f"{'step = predict() + chi^2':<32} {step:>8.1f} {step / bare:>7.2f}")
    print(f"the step's wall-clock time in cdi_plugins.run (this machine's load included): "
          f"{statistics.median(wall) * 1e3:.1f} ms; cdi_plugins.run also builds the problem and its record")
    print("command: python " + " ".join(["benchmarks/bench_nn_step.py"] + (argv if argv is not None else sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
