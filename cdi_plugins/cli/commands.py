"""The built-in `cdi` commands.  Each takes the parsed arguments and returns the exit status; anything the user
got wrong is raised as :class:`~cdi_plugins.errors.CDIError` (printed as one line by :func:`cdi_plugins.cli.main`).
The work itself is done by the API (:mod:`cdi_plugins.pipeline`, :mod:`cdi_plugins.report`): these functions
read arguments and print.
"""

from __future__ import annotations

import os

from cdi_plugins.cli.render import Progress, run_with_progress, summary
from cdi_plugins.errors import CDIError

__all__ = ["cmd_run", "cmd_validate", "cmd_algorithms", "cmd_plugins", "cmd_simulate", "cmd_report", "cmd_compare"]


def _overrides(items):
    from cdi_plugins.recipe import parse_set
    return [parse_set(s) for s in items or ()]


def cmd_run(args) -> int:
    from cdi_plugins.pipeline import (DEFAULT_OUT, build_problem, check_outputs, plan_jobs, preload_steps,
                                      write_outputs)
    from cdi_plugins.recipe import load_recipe

    overrides = _overrides(args.set)
    data_paths = [os.path.abspath(p) for p in args.data] if args.data else [None]
    rec = {d: load_recipe(args.recipe, overrides=overrides, data=d) for d in data_paths}
    jobs = plan_jobs(rec, dataset=args.dataset, out=args.out, overwrite=args.overwrite,
                     default_out=DEFAULT_OUT)
    check_outputs(jobs)  # fail on an unwritable or forbidden output before computing anything
    preload_steps(job.plan for job in jobs)
    for job in jobs:
        problem = build_problem(job.plan, job.data)
        result, wall = run_with_progress(job.plan, problem, job.plan.name, quiet=args.quiet)
        written = write_outputs(result, job)
        if not args.quiet:
            print(summary(result, written[0], wall, written[1:]), flush=True)
    return 0


def cmd_validate(args) -> int:
    from cdi_plugins.pipeline import check_plan
    from cdi_plugins.recipe import load_recipe
    overrides = _overrides(args.set)
    data_paths = [os.path.abspath(p) for p in args.data] if args.data else [None]
    for d in data_paths:
        rec = load_recipe(args.recipe, overrides=overrides, data=d)
        for plan in rec.datasets:
            notes = check_plan(plan, d)
            names = [s.name if not s.iterations else f"{s.iterations}*{s.name}" for s in plan.steps]
            src = d or (plan.data.resolved("path") or (plan.data.scan or {}).get("frames") or "simulated crystal")
            print(f"ok: {rec.source} dataset '{plan.name}' ({src}): {len(plan.steps)} steps, "
                  f"{plan.iterations} iterations, backend {plan.backend}")
            for note in notes:
                print(f"    {note}")
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
        extra = "".join(f"  {label}: {', '.join(names)}" for label, names in (
            ("commands", p.commands), ("executors", p.executors), ("frame sources", p.frame_sources),
            ("beamlines", p.beamlines)) if names)
        print(f"{p.name}{ver}: {p.status}  {p.source}  algorithms: {algs}{extra}")
        if p.error:
            print(f"    error: {p.error}")
    return 0


def cmd_simulate(args) -> int:
    import numpy as np
    from cdi_plugins.io import atomic_path, check_writable
    from cdi_plugins.physics.simulate import simulate_crystal
    root, ext = os.path.splitext(args.out)
    if ext != ".npy":
        raise CDIError("simulate writes .npy files (intensity, and <name>_truth.npy)", args.out)
    truth_path = f"{root}_truth.npy"
    for path in (args.out, truth_path):   # both checked before either is computed or written
        check_writable(path, overwrite=args.overwrite)
    sim = simulate_crystal(args.shape, seed=args.seed, counts=args.counts, noise=not args.no_noise)
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
    from cdi_plugins.pipeline import load
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
    for p in (args.png, args.vti, args.html, args.vts):  # fail before computing anything
        if p:
            check_writable(p, overwrite=args.overwrite, protect=protect)
    lab = {k: v for k, v in (("frame", args.frame), ("q_axis", args.q_axis), ("spacing", args.spacing))
           if v is not None}
    if (lab or args.vts) and not (result.metadata or {}).get("scan_geometry"):
        raise CDIError(f"{args.result} carries no scan geometry (it was not reconstructed from raw frames with "
                       "data.frames and a beamline): --frame, --q-axis, --spacing and --vts need one")
    if args.spacing is not None and not args.spacing > 0:
        raise CDIError(f"--spacing must be a positive number of nm, got {args.spacing:g}")
    processed = report(result, png=args.png, vti=args.vti, html=args.html, geometry=geometry, options=opts,
                       overwrite=args.overwrite, protect=protect, lab=lab or None, vts=args.vts)
    print(f"{args.result}: dataset {result.dataset}, {'x'.join(map(str, result.obj.shape))} from "
          f"{(result.metadata or {}).get('source')}")
    print("  " + format_summary(result, summarize(result)))
    info = processed.info
    if "ramp" in info:
        print(f"  phase ramp removed: {', '.join(f'{v:+.4f}' for v in info['ramp'])} rad/voxel")
    if processed.geometry is not None:
        print(f"  geometry: {processed.geometry.describe()}")
    if info.get("frame") in ("lab", "crystal"):
        print(f"  maps on an orthogonal {info['frame']} grid of {processed.voxel_size[0]:.3g} nm, Q along "
              f"({', '.join(f'{v:+.3f}' for v in processed.geometry.q_direction)}) in x, y, z")
    if processed.strain is not None:
        print(f"  strain along Q inside the support: mean {info['strain_mean']:+.2e}, rms {info['strain_std']:.2e}")
    if processed.displacement is not None:
        u = processed.displacement[processed.support]
        print(f"  displacement along Q: {float(u.min()):+.3f} to {float(u.max()):+.3f} Angstrom")
    if info.get("note"):
        print(f"  note: {info['note']}")
    written = [p for p in (args.png, args.vti, args.html, args.vts) if p]
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
    from cdi_plugins.pipeline import load
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
    from cdi_plugins.pipeline import compare

    if args.png:  # before anything is computed; never over the data or a recipe
        check_writable(args.png, overwrite=args.overwrite,
                       protect=[p for p in (args.data, *args.results) if p])
    table = compare(args.results, data=args.data, overrides=_overrides(args.set),
                    progress_for=lambda label, plan: Progress(plan.iterations * plan.total_runs, label,
                                                              enabled=not args.quiet))
    results, problem = table.results, table.problem
    w = max(12, max(len(k) for k in results))
    head = f"{'recipe':<{w}}  {'wall s':>8}  {'iterations':>10}  {'final chi2':>10}"
    if table.has_truth:
        head += f"  {'error vs truth':>14}"
    print(f"data: {problem.source} {'x'.join(map(str, problem.shape))}")
    print(head)
    for label, res in results.items():
        row = (f"{label:<{w}}  {res.metadata['wall_seconds']:>8.2f}  {res.iterations:>10}  "
               f"{res.chi2 if res.chi2 is not None else float('nan'):>10.3e}")
        if table.has_truth:
            row += f"  {res.error():>14.4f}"
        print(row)
    if args.png:
        from cdi_plugins.report.plots import write_convergence_png
        write_convergence_png(args.png, results, overwrite=args.overwrite)
        print(f"wrote {args.png}")
    return 0
