"""The ``cdi`` command line.

Every error a user can cause is printed as one line (``cdi: error: ...``) and
the command exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from cdi_plugins.errors import CDIError

EXIT_USAGE = 2


def _overrides(items):
    from cdi_plugins.recipe import parse_set
    return [parse_set(s) for s in items or ()]


def _out_paths(args, rec, data_paths):
    """(plan, data path or None, output path) for every run this command will do."""
    jobs = []
    for dpath in data_paths:
        for plan in rec[dpath].datasets:
            if args.dataset and plan.name != args.dataset:
                continue
            jobs.append([plan, dpath])
    if args.dataset and not jobs:
        from cdi_plugins.core.params import suggest
        names = [p.name for r in rec.values() for p in r.datasets]
        raise CDIError(f"no dataset named '{args.dataset}'{suggest(args.dataset, names)}", "--dataset")
    multiple = len(jobs) > 1

    def expand(template, name, stem, ext):
        path = template.replace("{dataset}", name).replace("{recipe}", stem)
        if multiple and "{dataset}" not in template:
            root, e = os.path.splitext(path)
            path = f"{root}_{name}{e or ext}"
        return path

    out = []
    for plan, dpath in jobs:
        name = plan.name if dpath is None else (
            os.path.splitext(os.path.basename(dpath))[0] + ("" if len(rec[dpath].datasets) == 1 else f"_{plan.name}"))
        stem = os.path.splitext(os.path.basename(plan.source))[0] if plan.source != "<recipe>" else "recipe"
        path = expand(args.out or plan.output.path or "{recipe}_{dataset}.cxi", name, stem, ".cxi")
        extra = {key: expand(template, name, stem, f".{key}") for key, template in plan.output.reports().items()}
        overwrite = args.overwrite or plan.output.overwrite
        out.append((plan, dpath, path, overwrite, extra))
    paths = [p for _, _, p, _, _ in out] + [p for *_, extra in out for p in extra.values()]
    if len(set(paths)) != len(paths):
        raise CDIError("several runs would write the same output file; put {dataset} in --out or output.path "
                       "(and output.png, output.vti)")
    return out


class _Progress:
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


def _preparation_lines(md: dict) -> list[str]:
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
    os_ = md.get("oversampling_estimate")
    if os_:
        line = f"  oversampling estimate (autocorrelation): {', '.join(f'{v:.2f}' for v in os_)} per axis"
        low = [i for i, v in enumerate(os_) if v < 2]
        if low:
            line += (f"; below 2 on axis {', '.join(map(str, low))}: the pattern may be undersampled there "
                     "(bin less, or expect ambiguous results)")
        lines.append(line)
    return lines


def _run_with_progress(plan, problem, label: str, *, quiet: bool):
    """Run one dataset plan behind a progress bar; returns (Result, wall seconds)."""
    import yaml

    from cdi_plugins.pipeline import run_plan
    bar = _Progress(plan.iterations * plan.runs, label, enabled=not quiet)
    t0 = time.perf_counter()
    try:
        result = run_plan(plan, problem, recipe_text=yaml.safe_dump(plan.doc, sort_keys=False), progress=bar)
    finally:
        bar.close()
    return result, time.perf_counter() - t0


def _summary(result, path, seconds, extra_paths=()) -> str:
    lines = []
    n = "x".join(map(str, result.obj.shape))
    md = result.metadata
    lines.append(f"dataset {result.dataset}: {n} from {md.get('source')}, backend {md.get('backend')} "
                 f"(fft {md.get('fft')}, {md.get('threads')} FFT thread{'s' if md.get('threads') != 1 else ''}), "
                 f"seed {md.get('seed')}")
    lines += _preparation_lines(md)
    if result.runs > 1:
        scores = ", ".join(f"{v:.3e}" for v in md.get("run_scores", []))
        lines.append(f"  best of {result.runs} runs: kept run {md.get('best_run')} (final chi2 of each: {scores}); "
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
    what = "final chi2" if not md.get("averaged_runs") else "chi2 of the averaged object"
    tail = f"  total: {done} in {result.seconds:.2f} s (wall {seconds:.2f} s), {what} {final}"
    if err is not None:
        tail += f", error vs truth {err:.4f}"
    lines.append(tail)
    if path:
        lines.append(f"  wrote {', '.join([path, *extra_paths])}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from cdi_plugins import save
    from cdi_plugins.io import check_writable
    from cdi_plugins.pipeline import build_problem
    from cdi_plugins.recipe import load_recipe

    overrides = _overrides(args.set)
    data_paths = [os.path.abspath(p) for p in args.data] if args.data else [None]
    rec = {d: load_recipe(args.recipe, overrides=overrides, data=d) for d in data_paths}
    jobs = _out_paths(args, rec, data_paths)
    for plan, dpath, path, overwrite, extra in jobs:  # fail on an unwritable output before computing anything
        protect = [p for p in (dpath, plan.data.resolved("path"), plan.data.resolved("mask")) if p]
        for p in (path, *extra.values()):
            check_writable(p, overwrite=overwrite, protect=protect)
        cdir = _cohere_dir(plan, dpath, len(jobs))
        if cdir and os.path.lexists(cdir) and not overwrite:
            raise CDIError("exists; pass --overwrite to replace it", cdir)
    for plan, dpath, path, overwrite, extra in jobs:
        protect = [p for p in (dpath, plan.data.resolved("path"), plan.data.resolved("mask")) if p]
        problem = build_problem(plan, dpath)
        result, wall = _run_with_progress(plan, problem, plan.name, quiet=args.quiet)
        save(result, path, overwrite=overwrite)
        if extra:
            from cdi_plugins.report import report
            report(result, png=extra.get("png"), vti=extra.get("vti"), overwrite=overwrite, protect=protect)
        cdir = _cohere_dir(plan, dpath, len(jobs))
        if cdir:
            from cdi_plugins.io.cohere import write_cohere_results
            write_cohere_results(result, cdir, overwrite=overwrite)
        if not args.quiet:
            print(_summary(result, path, wall, list(extra.values()) + ([cdir + "/"] if cdir else [])), flush=True)
    return 0


def _cohere_dir(plan, dpath, njobs):
    """output.cohere_dir for this run ({dataset} replaced; made unique when several runs share it)."""
    template = plan.output.cohere_dir
    if not template:
        return None
    name = plan.name if dpath is None else os.path.splitext(os.path.basename(dpath))[0]
    path = template.replace("{dataset}", name)
    if njobs > 1 and "{dataset}" not in template:
        path = f"{path.rstrip('/')}_{name}"
    return path


def cmd_validate(args) -> int:
    from cdi_plugins.recipe import load_recipe
    overrides = _overrides(args.set)
    data_paths = [os.path.abspath(p) for p in args.data] if args.data else [None]
    for d in data_paths:
        rec = load_recipe(args.recipe, overrides=overrides, data=d)
        for plan in rec.datasets:
            names = []
            for s in plan.steps:  # compress runs of the same algorithm for a readable line
                label = s.name if not s.iterations else f"{s.iterations}*{s.name}"
                names.append(label)
            src = d or (plan.data.resolved("path") or "simulated crystal")
            print(f"ok: {rec.source} dataset '{plan.name}' ({src}): {len(plan.steps)} steps, "
                  f"{plan.iterations} iterations, backend {plan.backend}")
            if args.list_steps or args.verbose:
                print("    " + " + ".join(names))
    return 0


def cmd_algorithms(args) -> int:
    from cdi_plugins.core.registry import get_registry
    reg = get_registry()
    if args.name:
        spec = reg.get(args.name)
        print(f"{spec.name} ({spec.kind}, plugin '{spec.plugin}'): {spec.summary}")
        print(f"backends: {', '.join(spec.backends)}")
        if spec.unavailable:
            print(f"UNAVAILABLE: {spec.unavailable}")
        rows = spec.params.schema()
        if not rows:
            print("no parameters")
            return 0
        w = max(len(r["name"]) for r in rows)
        print(f"{'parameter':<{w}}  {'type':<5}  {'default':<10}  {'range':<16}  description")
        for r in rows:
            default = "null" if r["default"] is None else str(r["default"])
            print(f"{r['name']:<{w}}  {r['type']:<5}  {default:<10}  {r['range']:<16}  {r['doc']}")
        return 0
    if not reg.algorithms:
        print("no algorithms registered (is cdi-plugins installed? see `cdi plugins`)")
        return 1
    w = max(len(n) for n in reg.algorithms)
    for name in reg.names():
        spec = reg.algorithms[name]
        note = f"  [unavailable: {spec.unavailable}]" if spec.unavailable else ""
        print(f"{name:<{w}}  {spec.kind:<9}  {spec.summary}{note}")
    return 0


def cmd_plugins(args) -> int:
    from cdi_plugins.core.registry import get_registry
    reg = get_registry()
    if not reg.plugins:
        print("no plugins found in the 'cdi_plugins' entry-point group")
        return 1
    for p in reg.plugins:
        algs = ", ".join(p.algorithms) or "-"
        ver = f" ({p.version})" if p.version else ""
        cmds = f"  commands: {', '.join(p.commands)}" if p.commands else ""
        print(f"{p.name}{ver}: {p.status}  {p.source}  algorithms: {algs}{cmds}")
        if p.error:
            print(f"    error: {p.error}")
    return 0


def cmd_simulate(args) -> int:
    import numpy as np
    from cdi_plugins.io import atomic_path
    from cdi_plugins.physics.simulate import simulate_crystal
    sim = simulate_crystal(args.shape, seed=args.seed, counts=args.counts, noise=not args.no_noise)
    root, ext = os.path.splitext(args.out)
    if ext != ".npy":
        raise CDIError("simulate writes .npy files (intensity, and <name>_truth.npy)", args.out)
    truth_path = f"{root}_truth.npy"
    for path, arr in ((args.out, sim["intensity"]), (truth_path, sim["truth"])):
        with atomic_path(path, overwrite=args.overwrite) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    print(f"wrote {args.out} (intensity, {sim['intensity'].dtype}, shape {sim['intensity'].shape}, "
          f"total {float(sim['intensity'].sum()):.3g}) and {truth_path} (true object)")
    return 0


def _geometry_from_args(args, stored):
    """The geometry for `cdi report`: the one stored with the result, updated by the command's options."""
    from cdi_plugins.physics.postprocess import validate_geometry
    geo = dict(stored or {})
    given = {"hkl": args.hkl, "lattice_constant": args.lattice, "energy": args.energy,
             "voxel_size": (args.voxel_size[0] if args.voxel_size and len(args.voxel_size) == 1 else args.voxel_size),
             "q_direction": (None if args.q_direction is None else
                             (int(args.q_direction[0]) if len(args.q_direction) == 1 and
                              float(args.q_direction[0]).is_integer() else args.q_direction))}
    flags = {"hkl": "--hkl", "lattice_constant": "--lattice", "energy": "--energy", "voxel_size": "--voxel-size",
             "q_direction": "--q-direction", None: "geometry"}
    for k, v in given.items():
        if v is not None:
            geo[k] = v
    if not geo:
        return None
    return validate_geometry(geo, lambda key=None: flags.get(key, str(key)))


def cmd_report(args) -> int:
    from cdi_plugins import load
    from cdi_plugins.physics.postprocess import POSTPROCESS
    from cdi_plugins.report import format_summary, report, summarize
    result = load(args.result)
    geometry = _geometry_from_args(args, (result.metadata or {}).get("geometry"))
    opts = dict((result.metadata or {}).get("postprocess") or {})
    opts = POSTPROCESS.validate(opts)
    for flag, key in (("keep_ramp", "remove_ramp"), ("no_unwrap", "unwrap"), ("no_crop", "crop"),
                      ("no_centre", "centre")):
        if getattr(args, flag):
            opts[key] = False
    if args.margin is not None:
        opts["margin"] = POSTPROCESS.params["margin"].check(args.margin, "--margin")
    protect = [args.result]
    from cdi_plugins.io import check_writable
    for p in (args.png, args.vti, args.html):  # fail before computing anything
        if p:
            check_writable(p, overwrite=args.overwrite, protect=protect)
    processed = report(result, png=args.png, vti=args.vti, html=args.html, geometry=geometry, options=opts,
                       overwrite=args.overwrite, protect=protect)
    print(f"{args.result}: dataset {result.dataset}, {'x'.join(map(str, result.obj.shape))} from "
          f"{(result.metadata or {}).get('source')}")
    print("  " + format_summary(result, summarize(result)))
    info = processed.info
    if "ramp" in info:
        print(f"  phase ramp removed: {', '.join(f'{v:+.4f}' for v in info['ramp'])} rad/voxel")
    if processed.geometry is not None:
        print(f"  geometry: {processed.geometry.describe()}")
    if processed.strain is not None:
        print(f"  strain along Q inside the support: mean {info['strain_mean']:+.2e}, rms {info['strain_std']:.2e}")
    if processed.displacement is not None:
        u = processed.displacement[processed.support]
        print(f"  displacement along Q: {float(u.min()):+.3f} to {float(u.max()):+.3f} Angstrom")
    if info.get("note"):
        print(f"  note: {info['note']}")
    written = [p for p in (args.png, args.vti, args.html) if p]
    if written:
        print(f"  wrote {', '.join(written)}")
    return 0


def _is_recipe(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))


def cmd_compare(args) -> int:
    kinds = {_is_recipe(p) for p in args.results}
    if len(kinds) > 1:
        raise CDIError("give either recipes (.yaml) to run or results (.cxi) to compare, not both")
    if kinds == {True}:
        return _compare_recipes(args)
    if args.data or args.png:
        raise CDIError("--data and --png apply when comparing recipes (.yaml)")
    from cdi_plugins import load
    from cdi_plugins.report import compare, format_summary, summarize
    results = [load(p) for p in args.results]
    for p, r in zip(args.results, results):
        print(f"{p}: " + format_summary(r, summarize(r)))
    ref = results[0]
    for p, r in zip(args.results[1:], results[1:]):
        try:
            c = compare(r, ref)
        except CDIError as e:
            raise e.at(p) from None
        print(f"{p} vs {args.results[0]}: normalised difference after alignment {c['difference']:.4f} "
              f"(twin: {'yes' if c['twin'] else 'no'}, shift {', '.join(f'{v:+.2f}' for v in c['shift'])} voxels)")
    return 0


def _compare_recipes(args) -> int:
    """Run several recipes on the same data and print one table (and a chi^2-vs-time PNG)."""
    from cdi_plugins.io import check_writable
    from cdi_plugins.pipeline import build_problem
    from cdi_plugins.recipe import load_recipe

    data = os.path.abspath(args.data) if args.data else None
    plans = []
    for path in args.results:
        rec = load_recipe(path, overrides=_overrides(args.set), data=data)
        if len(rec.datasets) != 1:
            raise CDIError("compare runs recipes with one dataset; pass --data to choose the data", path)
        plans.append((path, rec.datasets[0]))
    if data is None:  # without --data every recipe must describe the same measurement
        ref = plans[0][1]
        for path, plan in plans[1:]:
            same = (plan.data.simulate == ref.data.simulate
                    and plan.data.resolved("path") == ref.data.resolved("path"))
            if not same:
                raise CDIError(f"this recipe's data differs from {plans[0][0]}'s; pass --data PATH "
                               "to run every recipe on the same data", path)
    if args.png:
        inputs = [data, *args.results, *(plan.data_path(k) for _, plan in plans for k in ("path", "mask"))]
        check_writable(args.png, overwrite=args.overwrite, protect=[p for p in inputs if p])
    problem = build_problem(plans[0][1], data)
    results = {}
    for path, plan in plans:
        label = os.path.splitext(os.path.basename(path))[0]
        if label in results:
            label = path
        res, wall = _run_with_progress(plan, problem, label, quiet=args.quiet)
        res.metadata["wall_seconds"] = wall
        results[label] = res
    has_truth = problem.truth is not None
    w = max(12, max(len(k) for k in results))
    head = f"{'recipe':<{w}}  {'wall s':>8}  {'iterations':>10}  {'final chi2':>10}"
    if has_truth:
        head += f"  {'error vs truth':>14}"
    print(f"data: {problem.source} {'x'.join(map(str, problem.shape))}")
    print(head)
    for label, res in results.items():
        row = (f"{label:<{w}}  {res.metadata['wall_seconds']:>8.2f}  {res.iterations:>10}  "
               f"{res.chi2 if res.chi2 is not None else float('nan'):>10.3e}")
        if has_truth:
            row += f"  {res.error():>14.4f}"
        print(row)
    if args.png:
        from cdi_plugins.report.plots import write_convergence_png
        write_convergence_png(args.png, results, overwrite=args.overwrite)
        print(f"wrote {args.png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from cdi_plugins import __version__
    p = argparse.ArgumentParser(prog="cdi", description="Phase retrieval for Bragg CDI with interchangeable plugins.")
    p.add_argument("--version", action="version", version=f"cdi-plugins {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback behind an error (also with CDI_DEBUG=1 in the environment)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="run a recipe and write the result (CXI)")
    r.add_argument("recipe", help="recipe YAML file")
    r.add_argument("--data", nargs="+", metavar="PATH", help="data file(s) replacing the recipe's data (one run each)")
    r.add_argument("--out", metavar="PATH", help="output file; {dataset} is replaced by the dataset name")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. steps.1.beta=0.8")
    r.add_argument("--dataset", metavar="NAME", help="run only this dataset of the recipe")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a recipe without computing anything")
    v.add_argument("recipe")
    v.add_argument("--data", nargs="+", metavar="PATH")
    v.add_argument("--set", action="append", metavar="KEY=VALUE")
    # its own dest: a subparser default would otherwise reset the global `cdi -v` (logging) to False
    v.add_argument("-v", "--verbose", dest="list_steps", action="store_true", help="also list the expanded steps")
    v.set_defaults(func=cmd_validate)

    a = sub.add_parser("algorithms", help="list registered algorithms, or the parameters of one")
    a.add_argument("name", nargs="?")
    a.set_defaults(func=cmd_algorithms)

    pl = sub.add_parser("plugins", help="list loaded plugins and the errors of any that failed")
    pl.set_defaults(func=cmd_plugins)

    s = sub.add_parser("simulate", help="write a simulated crystal's diffraction pattern (.npy) and its truth")
    s.add_argument("out", help="output .npy file for the intensity")
    s.add_argument("--shape", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--counts", type=float, default=1e8)
    s.add_argument("--no-noise", action="store_true", help="noise-free intensity")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_simulate)

    rp = sub.add_parser("report", help="post-process a result: phase, displacement, strain; write a PNG and/or VTK file")
    rp.add_argument("result", help="a result file written by cdi run (.cxi)")
    rp.add_argument("--png", metavar="PATH", help="picture: central slices of amplitude, phase, strain; chi2 history")
    rp.add_argument("--vti", metavar="PATH", help="VTK image file for ParaView: amplitude, phase, support, strain")
    rp.add_argument("--html", metavar="PATH", help="self-contained web page: the crystal in 3-D coloured by phase "
                    "or strain, central slices, chi2 history (opens offline in any browser)")
    rp.add_argument("--hkl", type=int, nargs=3, metavar=("H", "K", "L"), help="the Bragg reflection")
    rp.add_argument("--lattice", type=float, metavar="A", help="cubic lattice constant (Angstrom)")
    rp.add_argument("--energy", type=float, metavar="KEV", help="X-ray energy (keV)")
    rp.add_argument("--voxel-size", type=float, nargs="+", metavar="NM",
                    help="real-space voxel size of the reconstruction (nm): one value or one per axis")
    rp.add_argument("--q-direction", type=float, nargs="+", metavar="Q",
                    help="Q along this array axis (0, 1 or 2; default 0) or a vector Q0 Q1 Q2")
    rp.add_argument("--keep-ramp", action="store_true", help="keep the linear phase (and the mean strain)")
    rp.add_argument("--no-unwrap", action="store_true", help="leave the phase wrapped in (-pi, pi]")
    rp.add_argument("--no-centre", action="store_true", help="do not move the object to the array centre")
    rp.add_argument("--no-crop", action="store_true", help="keep the whole array instead of cropping to the object")
    rp.add_argument("--margin", type=int, metavar="N", help="voxels kept around the support when cropping (default 4)")
    rp.add_argument("--overwrite", action="store_true")
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="run recipes (.yaml) on the same data in one table, or compare finished results (.cxi)")
    c.add_argument("results", nargs="+", metavar="RESULT_OR_RECIPE",
                   help="result files (.cxi; the first is the reference), or recipes (.yaml) to run on the same data")
    c.add_argument("--data", metavar="PATH", help="recipes: the data every recipe runs on")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="recipes: override a value in every recipe")
    c.add_argument("--png", metavar="PATH", help="recipes: write chi^2 against wall time for all recipes")
    c.add_argument("--overwrite", action="store_true", help="replace an existing --png file")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_compare)

    _add_plugin_commands(sub)
    return p


BUILTIN_COMMANDS = ("run", "validate", "algorithms", "plugins", "simulate", "report", "compare")


def _add_plugin_commands(sub) -> None:
    """The subcommands plugins add through the ``cdi_register_commands`` hook (nn's train, cohere's
    import-cohere, a third party's ...).  One that would shadow a built-in command is refused and shown
    by ``cdi plugins``."""
    from cdi_plugins.core.registry import get_registry
    reg = get_registry()
    for name, spec in list(reg.commands.items()):
        if name in BUILTIN_COMMANDS:
            reg.refuse_command(name, "is a built-in cdi command")
            continue
        sp = sub.add_parser(name, help=spec.help)
        spec.arguments(sp)
        sp.set_defaults(func=spec.run)


@contextlib.contextmanager
def _terminate_as_exit():
    """SIGTERM (a batch system's kill, `kill PID`) unwinds like Ctrl-C, so temporary files are removed."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from cdi_plugins.io.atomic import input_scope
    try:
        with _terminate_as_exit(), input_scope():  # every file this command reads is protected from its writes
            return args.func(args)
    except CDIError as e:
        if args.debug or os.environ.get("CDI_DEBUG", "") not in ("", "0"):
            import traceback
            traceback.print_exception(e, file=sys.stderr)
        print(f"cdi: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cdi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
