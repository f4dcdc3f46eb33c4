"""What the `cdi` command prints: progress bars rendered from solver events, and run summaries."""

from __future__ import annotations

import sys

__all__ = ["Progress", "preparation_lines", "run_with_progress", "summary"]


class Progress:
    """Renders solver progress events as one tqdm bar per dataset."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.done_steps = 0
        self.offset = 0
        self.last = (0, 0)
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=label, unit="it", leave=False, dynamic_ncols=True,
                            file=sys.stderr, disable=None)

    def __call__(self, step=0, algorithm="", iteration=0, total=0, chi2=None, **_):
        if self.bar is None:
            return
        if step != self.last[0]:
            self.offset += self.last[1]
            self.last = (step, 0)
        self.bar.update(iteration - self.last[1])
        self.last = (step, iteration)
        post = f"{step}:{algorithm}"
        if chi2 is not None:
            post += f" chi2={chi2:.3e}"
        self.bar.set_postfix_str(post, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def preparation_lines(md: dict) -> list[str]:
    lines = []
    prep = md.get("preparation")
    if prep:
        what = []
        for key, label in (("saturated", "saturated"), ("gaps", "in gaps"), ("aliens", "in aliens"),
                           ("hot_pixels", "hot")):
            if key in prep:
                what.append(f"{prep[key]} {label}")
        if "below_threshold" in prep:
            what.append(f"{prep['below_threshold']} below threshold set to 0")
        if prep.get("bin") and prep["bin"] != [1, 1, 1]:
            what.append("binned " + "x".join(map(str, prep["bin"])))
        if prep.get("centre", "none") != "none":
            what.append(f"centred on the {'maximum' if prep['centre'] == 'max' else 'centre of mass'} "
                        f"(moved {', '.join(f'{v:+d}' for v in prep['shift'])})")
        if prep.get("outside_data"):
            what.append(f"{prep['outside_data']} padded (masked)")
        shape = "x".join(map(str, prep["input_shape"])) + " -> " + "x".join(map(str, prep["shape"]))
        lines.append(f"  prepared {shape}: {'; '.join(what) or 'unchanged'}; {prep['masked']} pixels masked")
    sg = md.get("scan_geometry")
    if sg:
        sc = sg["scan"]
        lines.append(f"  scan: {sc['energy_keV']:g} keV, detector at {sc['distance_m']:g} m, {sc['rocking']} step "
                     f"{sc['step_deg']:g} deg; B at the peak (frame, row, column) "
                     f"{', '.join(f'{v:g}' for v in sg['peak_raw'])}: |q| {sg['q_norm_per_nm']:.3f} /nm, voxel "
                     f"{' x '.join(f'{v:.2f}' for v in sg['voxel_nm'])} nm (array axes); maps in the "
                     f"{(sg.get('lab') or {}).get('frame', 'lab')} frame")
    os_ = md.get("oversampling_estimate")
    if os_:
        line = f"  oversampling estimate (autocorrelation): {', '.join(f'{v:.2f}' for v in os_)} per axis"
        low = [i for i, v in enumerate(os_) if v < 2]
        if low:
            line += (f"; below 2 on axis {', '.join(map(str, low))}: the pattern may be undersampled there "
                     "(bin less, or expect ambiguous results)")
        lines.append(line)
    return lines


def run_with_progress(plan, problem, label: str, *, quiet: bool):
    """Run one dataset plan behind a progress bar; returns (Result, wall seconds)."""
    from cdi_plugins.pipeline import run_timed
    return run_timed(plan, problem, Progress(plan.iterations * plan.total_runs, label, enabled=not quiet))


def summary(result, path, seconds, extra_paths=()) -> str:
    lines = []
    n = "x".join(map(str, result.obj.shape))
    md = result.metadata
    lines.append(f"dataset {result.dataset}: {n} from {md.get('source')}, backend {md.get('backend')} "
                 f"(fft {md.get('fft')}, {md.get('threads')} FFT thread{'s' if md.get('threads') != 1 else ''}), "
                 f"seed {md.get('seed')}")
    lines += preparation_lines(md)
    if result.runs > 1:
        scores = ", ".join(f"{v:.3e}" for v in md.get("run_scores", []))
        metric = md.get("select") or ("chi2_free" if result.history and "chi2_free" in result.history[-1]
                                      else "chi2")
        workers = f", {md['workers']} worker processes" if md.get("workers") else ""
        ga = md.get("ga")
        if ga:
            best = ", ".join(f"{v:.3e}" for v in ga["best"])
            lines.append(f"  genetic algorithm: {ga['generations']} generations of {result.runs} runs (breeding "
                         f"{', '.join(ga['breed'])}), best {ga['metric']} so far after each: {best}")
        lines.append(f"  best of {result.runs} runs{' (last generation and the best of all)' if ga else ''}: kept "
                     f"run {md.get('best_run')} (final {metric} of each: {scores}){workers}; "
                     "seconds are totals over all runs")
    if md.get("averaged_runs"):
        lines.append(f"  object written: mean of runs {', '.join(map(str, md['averaged_runs']))} aligned to the best "
                     f"(its chi2 {md['average_chi2']:.3e}; the table is the best run's)")
    lines.append(f"  {'step':>4}  {'algorithm':<10} {'iterations':>10} {'seconds':>9}  {'final chi2':>10}")
    for st in result.steps:
        recs = [h for h in result.history if h.get("step") == st["step"]]
        chi = f"{recs[-1]['chi2']:.3e}" if recs and "chi2" in recs[-1] else "-"
        lines.append(f"  {st['step']:>4}  {st['algorithm']:<10} {len(recs):>10} {st['seconds']:>9.3f}  {chi:>10}")
    final = f"{result.chi2:.3e}" if result.chi2 is not None else "n/a"
    err = result.error()
    done = (f"{result.iterations} iterations" if result.runs == 1 else
            f"{result.runs} runs of {result.iterations} iterations")
    if md.get("ga"):
        done = (f"{sum(len(s) for s in md['ga']['scores'])} runs ({md['ga']['generations']} generations) of "
                f"{result.iterations} iterations")
    what = "final chi2" if not md.get("averaged_runs") else "chi2 of the averaged object"
    tail = f"  total: {done} in {result.seconds:.2f} s (wall {seconds:.2f} s), {what} {final}"
    if err is not None:
        tail += f", error vs truth {err:.4f}"
    lines.append(tail)
    if path:
        lines.append(f"  wrote {', '.join([path, *extra_paths])}")
    return "\n".join(lines)
