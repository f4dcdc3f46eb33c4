"""``cdi watch``: follow a scan while its frames are written.

After each frame: the rocking curve so far (summed counts per frame) and its peak.  Once the curve has passed
its maximum, and then every *k* frames: a quick preview (by default the ``nn`` step) of the frames so far,
zero-padded to the expected count, written atomically as PNG (and VTI) so a viewer can reload it.  At the end
(the expected count reached, or no new frame for *timeout* seconds): the frames stacked into one 3-D file and
the full recipe run on it through the same executor and manifest as ``cdi batch``."""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from cdi_plugins.batch.manifest import Manifest
from cdi_plugins.batch.runner import run_batch
from cdi_plugins.batch.tasks import Task
from cdi_plugins.errors import CDIError

__all__ = ["WatchReport", "watch", "passed_peak", "pad_frames"]

PEAK_DROP = 0.5   # passed the maximum: the first and the last frame below half the peak (past the FWHM)


@dataclasses.dataclass
class WatchReport:
    frames: np.ndarray            # (n, h, w), as assembled
    curve: list                   # summed counts per frame
    previews: list                # [(frames used, seconds from that frame to the preview written)]
    stack: str                    # the 3-D data file the full recipe ran on
    batch: object = None          # BatchReport of the final run
    ended: str = ""               # "expected count reached" or "no new frame for N s"


def passed_peak(curve) -> bool:
    """Whether the rocking curve has gone over its maximum (the last value well below the peak)."""
    if len(curve) < 3:
        return False
    peak = int(np.argmax(curve))
    return peak < len(curve) - 1 and max(curve[0], curve[-1]) < PEAK_DROP * curve[peak]


def pad_frames(frames: list, expected: int | None) -> np.ndarray:
    """The frames so far as a 3-D array, zero-padded after the last one to *expected* (or, unknown, to twice
    the peak's distance from the start, so the peak sits in the middle)."""
    vol = np.stack(frames).astype(np.float32)
    n = len(frames)
    total = expected or max(n, 2 * int(np.argmax(vol.sum(axis=(1, 2)))) + 1)
    if total > n:
        vol = np.concatenate([vol, np.zeros((total - n, *vol.shape[1:]), np.float32)])
    return vol


def _preview(recipe, volume, steps, overrides, png, vti, threads):
    from cdi_plugins.pipeline import build_problem, run_plan
    from cdi_plugins.recipe import load_recipe
    from cdi_plugins.report import report
    over = [*overrides, ("steps", steps)]   # the recipe's outputs are for the full run: nothing here writes them
    if threads:
        over.append(("threads", threads))
    plan = load_recipe(recipe, overrides=over, data="<array>").datasets[0]
    result = run_plan(plan, build_problem(plan, volume))
    report(result, png=png, vti=vti, overwrite=True)
    return result


def watch(recipe: str, frames: str, *, source, options: dict | None = None, expected: int | None = None,
          timeout: float = 60.0, preview_every: int = 5, preview_steps: str = "nn", out_dir: str = ".",
          out: str | None = None, vti: bool = False, executor=None, manifest: str | None = None,
          overrides=(), threads: int | None = 1, log=print, progress: bool = False) -> WatchReport:
    """Follow the frames of one scan; see the module text.  *source* is a FrameSourceSpec; *executor* an
    Executor or a function returning one (``None``: the full recipe runs in this process)."""
    name = os.path.splitext(os.path.basename(os.path.normpath(frames)))[0]
    os.makedirs(out_dir, exist_ok=True)
    stack = os.path.abspath(os.path.join(out_dir, f"{name}_data.npy"))
    png = os.path.join(out_dir, f"{name}_preview.png")
    vti_path = os.path.join(out_dir, f"{name}_preview.vti") if vti else None
    from cdi_plugins.io.atomic import atomic_path, check_writable
    check_writable(stack, overwrite=False, protect=[frames])
    src = source.make(frames, dict(options or {}))
    got, curve, times, previews = [], [], [], []
    last_preview = None
    last_new = time.monotonic()
    try:
        while True:
            new = src.poll()
            now = time.monotonic()
            if new:
                last_new = now
            for index, frame in new:
                if got and frame.shape != got[0].shape:
                    raise CDIError(f"frame {index} has shape {frame.shape}, the first one {got[0].shape}", frames)
                got.append(frame)
                times.append(now)
                curve.append(float(frame.sum()))
                peak = int(np.argmax(curve))
                log(f"frame {len(got)}{f'/{expected}' if expected else ''} (#{index}): {curve[-1]:.4g} counts; "
                    f"rocking curve peak at frame {peak + 1} ({curve[peak]:.4g})")
            if new and passed_peak(curve) and (last_preview is None or len(got) - last_preview >= preview_every):
                _preview(recipe, pad_frames(got, expected), preview_steps, overrides, png, vti_path, threads)
                last_preview = len(got)
                previews.append((len(got), time.monotonic() - times[-1]))
                log(f"preview from {len(got)} frames: {png} ({previews[-1][1]:.2f} s after the last frame)")
            if expected and len(got) >= expected:
                ended = "expected count reached"
                break
            if now - last_new > timeout:
                ended = f"no new frame for {timeout:g} s"
                break
            src.wait(max(0.05, min(0.5, timeout / 4)))
    finally:
        src.close()
    if not got:
        raise CDIError(f"no frame arrived ({ended})", frames)
    volume = np.stack(got)
    with atomic_path(stack, protect=[frames]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, volume)
    log(f"scan {name}: {len(got)} frames ({ended}); stacked into {stack}")
    task = Task(scan=name, recipe=os.path.abspath(recipe), data=stack,
                out=out or os.path.join(out_dir, f"{name}.cxi"), overrides=tuple(overrides), threads=threads)
    if executor is None:
        from concurrent.futures import ThreadPoolExecutor
        executor = lambda: ThreadPoolExecutor(1)  # noqa: E731
    man = Manifest(manifest or os.path.join(out_dir, f"{os.path.splitext(os.path.basename(recipe))[0]}_manifest.json"),
                   recipe=os.path.abspath(recipe))
    rep = run_batch([task], executor, man, progress=progress, stream=False)
    return WatchReport(frames=volume, curve=curve, previews=previews, stack=stack, batch=rep, ended=ended)
