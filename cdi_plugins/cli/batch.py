"""``cdi batch`` (many scans on an executor) and ``cdi watch`` (one scan while it is written)."""

from __future__ import annotations

import glob
import os

from cdi_plugins.errors import CDIError

__all__ = ["add_batch_parser", "add_watch_parser", "cmd_batch", "cmd_watch"]


def _executor_options(p) -> None:
    p.add_argument("--executor", default="local", metavar="NAME",
                   help="where the scans run: local (Dask LocalCluster, default), dask (--scheduler), slurm, pbs "
                        "(the recipe's cluster: section), or one a plugin registers")
    p.add_argument("--workers", type=int, metavar="N", help="local workers (default: the cores, at most the scans)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (tcp://host:8786) for --executor dask")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="FFT and torch threads per reconstruction (default 1: one reconstruction per core)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value for every scan")
    p.add_argument("--manifest", metavar="PATH",
                   help="the batch manifest (JSON; default: <recipe>_manifest.json next to the results)")


def add_batch_parser(sub) -> None:
    b = sub.add_parser("batch", help="run a recipe over many scans (local workers, a Dask scheduler, Slurm or PBS)")
    b.add_argument("recipe", help="recipe YAML file (one dataset; data.path may hold {scan} or {scan:04d})")
    b.add_argument("--scans", metavar="RANGE", help="scan numbers, e.g. 50-120 or 3,5,9-11, filled into {scan}")
    b.add_argument("--data-template", metavar="PATH", help="the data path with {scan}, instead of the recipe's")
    b.add_argument("--data", nargs="+", metavar="PATH", help="data files or folders, one scan each (globs allowed)")
    b.add_argument("--out", metavar="PATH", help="result template: {dataset} (the data file's stem), {scan}, {recipe}")
    _executor_options(b)
    b.add_argument("--force", action="store_true", help="redo scans the manifest says are complete, replacing outputs")
    b.add_argument("--dry-run", action="store_true", help="say what would run (and print the job script of slurm/pbs)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)


def add_watch_parser(sub) -> None:
    w = sub.add_parser("watch", help="follow a scan while it is written: rocking curve, previews, full run at the end")
    w.add_argument("recipe", help="recipe YAML file run on the whole scan at the end")
    w.add_argument("--frames", required=True, metavar="PATH", help="the folder of frames (or the growing HDF5 file)")
    w.add_argument("--source", metavar="NAME", help="frame source: folder, hdf5, or one a plugin registers "
                   "(default: from --frames)")
    w.add_argument("--expected", type=int, metavar="N", help="frames in the scan (the end; the preview's padding)")
    w.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="the scan has ended after this long without a new frame (default 60)")
    w.add_argument("--preview-every", type=int, default=5, metavar="K", help="a preview every K frames once the "
                   "rocking curve has passed its maximum (default 5)")
    w.add_argument("--preview-steps", default="nn", metavar="STEPS", help="the preview's steps (default: nn)")
    w.add_argument("--vti", action="store_true", help="also write the preview as VTI (ParaView)")
    w.add_argument("--out-dir", default=".", metavar="DIR", help="previews, the stacked data and the result go here")
    w.add_argument("--out", metavar="PATH", help="the result file (default: DIR/<scan>.cxi)")
    w.add_argument("--poll", action="store_true", help="poll the filesystem (NFS/CIFS, where inotify misses writes)")
    w.add_argument("--settle", type=float, default=1.0, metavar="S", help="a frame with no successor is complete "
                   "once its size has not changed for S seconds (default 1)")
    w.add_argument("--dataset", metavar="NAME", help="hdf5 source: the frames' dataset (default entry/data/data)")
    _executor_options(w)
    w.set_defaults(func=cmd_watch)


def _options(args, n_tasks: int, recipe: str) -> dict:
    from cdi_plugins.batch.cluster import read_cluster
    if args.workers is not None and args.workers < 1:
        raise CDIError("--workers must be at least 1", "--workers")
    if args.threads is not None and args.threads < 1:
        raise CDIError("--threads must be at least 1", "--threads")
    return {"workers": args.workers, "threads": args.threads, "scheduler": args.scheduler,
            "cluster": read_cluster(recipe), "tasks": n_tasks}


def _overrides(items):
    from cdi_plugins.recipe import parse_set
    return [parse_set(s) for s in items or ()]


def _data_paths(items) -> list[str]:
    out = []
    for item in items:
        found = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not found:
            raise CDIError("no file matches this pattern", item)
        out += found
    return out


def cmd_batch(args) -> int:
    from cdi_plugins.batch.manifest import Manifest
    from cdi_plugins.batch.runner import manifest_path, prepare, run_batch
    from cdi_plugins.batch.tasks import data_tasks, parse_scans, scan_tasks
    from cdi_plugins.core.registry import get_registry
    if bool(args.scans) == bool(args.data):
        raise CDIError("give the scans: --scans 50-120 (filled into the recipe's data path) or --data FILE ...")
    if args.data_template and not args.scans:
        raise CDIError("--data-template goes with --scans", "--data-template")
    if not os.path.isfile(args.recipe):
        raise CDIError("recipe file not found", args.recipe)
    overrides = _overrides(args.set)
    if args.scans:
        tasks = scan_tasks(args.recipe, parse_scans(args.scans), data_template=args.data_template, out=args.out,
                           overrides=overrides, threads=args.threads)
    else:
        tasks = data_tasks(args.recipe, _data_paths(args.data), out=args.out, overrides=overrides,
                           threads=args.threads)
    spec = get_registry().executor(args.executor)
    options = _options(args, len(tasks), args.recipe)
    manifest = Manifest(manifest_path(tasks, args.manifest), recipe=os.path.abspath(args.recipe))
    if args.dry_run:
        to_run, skipped, failed = prepare(tasks, manifest, force=args.force)
        print(f"{len(tasks)} scans: {len(to_run)} to run on '{spec.name}', {len(skipped)} complete already, "
              f"{len(failed)} cannot run; manifest {manifest.path}")
        for task in to_run:
            print(f"  run  {task.scan}: {task.data} -> {task.out or '(outputs of the recipe)'}")
        for rec in failed:
            print(f"  fail {rec['scan']}: {rec['error']}")
        if spec.script is not None:
            print(spec.script(dict(options, tasks=len(to_run))), end="")
        return 0
    report = run_batch(tasks, lambda: spec.make(dict(options)), manifest, force=args.force,
                       progress=not args.quiet)
    return _print_report(report)


def _print_report(report) -> int:
    for rec in report.records:
        if rec["status"] != "done":
            print(f"scan {rec['scan']}: FAILED: {rec['error']}")
    done = sum(r["status"] == "done" for r in report.records)
    print(f"{done} done, {len(report.failed)} failed, {len(report.skipped)} skipped (complete already); "
          f"manifest {report.manifest.path}")
    return 0 if report.ok else 1


def cmd_watch(args) -> int:
    from cdi_plugins.batch.live import watch
    from cdi_plugins.core.registry import get_registry
    reg = get_registry()
    if args.source:
        source = reg.frame_source(args.source)
    else:
        fits = [s for s in reg.frame_sources.values() if s.accepts is not None and s.accepts(args.frames)]
        if not fits:
            raise CDIError("no frame source reads this (a folder of TIFFs, an .h5 file); pass --source", args.frames)
        source = fits[0]
    if args.expected is not None and args.expected < 1:
        raise CDIError("--expected must be at least 1", "--expected")
    if args.preview_every < 1:
        raise CDIError("--preview-every must be at least 1", "--preview-every")
    if not os.path.isfile(args.recipe):
        raise CDIError("recipe file not found", args.recipe)
    spec = reg.executor(args.executor)
    options = _options(args, 1, args.recipe)
    rep = watch(args.recipe, args.frames, source=source,
                options={"poll": args.poll, "settle": args.settle, "dataset": args.dataset},
                expected=args.expected, timeout=args.timeout, preview_every=args.preview_every,
                preview_steps=args.preview_steps, out_dir=args.out_dir, out=args.out, vti=args.vti,
                executor=lambda: spec.make(dict(options)), manifest=args.manifest, overrides=_overrides(args.set),
                threads=args.threads)
    return _print_report(rep.batch)
