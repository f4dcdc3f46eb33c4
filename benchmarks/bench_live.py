"""Latency of `cdi watch`: from the last frame written to the first preview and to the final result.

    .venv/bin/python benchmarks/bench_live.py [--shape 64] [--pace 0.05]

Frames of a simulated 64^3 pattern are written one TIFF at a time into a folder (inotify observer, the
default); the preview is the nn step, the final run the recipe's steps in this process (one thread)."""

import argparse
import io
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, default=64)
    ap.add_argument("--pace", type=float, default=0.05, help="seconds between frames")
    ap.add_argument("--steps", default="50*ER+100*HIO+50*ER")
    ap.add_argument("--settle", type=float, default=0.5)
    a = ap.parse_args()
    import tifffile

    from cdi_plugins.batch.live import watch
    from cdi_plugins.core.registry import get_registry
    from cdi_plugins.physics.simulate import simulate_crystal
    vol = simulate_crystal(a.shape, seed=4)["intensity"]
    with tempfile.TemporaryDirectory() as d:
        frames = os.path.join(d, "scan_0001")
        os.makedirs(frames)
        with open(f"{d}/r.yaml", "w") as fh:
            fh.write(f'data: {{simulate: {{shape: 8}}}}\nfft: scipy\nthreads: 1\nsteps: "{a.steps}"\n')
        stamps = {}

        def writer():
            for i, f in enumerate(vol):
                buf = io.BytesIO()
                tifffile.imwrite(buf, f)
                with open(os.path.join(frames, f"f_{i:05d}.tif"), "wb") as fh:
                    fh.write(buf.getvalue())
                stamps[i] = time.perf_counter()
                time.sleep(a.pace)
        first_preview = {}

        def log(line):
            if line.startswith("preview") and "t" not in first_preview:
                first_preview["t"], first_preview["line"] = time.perf_counter(), line
        th = threading.Thread(target=writer)
        th.start()
        rep = watch(f"{d}/r.yaml", frames, source=get_registry().frame_source("folder"),
                    options={"settle": a.settle}, expected=a.shape, timeout=30, preview_every=8,
                    out_dir=f"{d}/out", log=log)
        t_end = time.perf_counter()
        th.join()
        last = stamps[a.shape - 1]
        peak = int(max(range(a.shape), key=lambda i: rep.curve[i]))
        print(f"{a.shape} frames of {a.shape}x{a.shape}, one every {a.pace} s; peak at frame {peak + 1}")
        print(f"first preview: from {rep.previews[0][0]} frames, {first_preview['t'] - stamps[rep.previews[0][0] - 1]:.2f} s "
              f"after its last frame was written ({len(rep.previews)} previews)")
        print(f"final result: {t_end - last:.2f} s after the last frame (steps {a.steps}, settle {a.settle} s); "
              f"ok={rep.batch.ok}")


if __name__ == "__main__":
    main()
