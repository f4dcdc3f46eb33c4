"""The ``cdi`` command line: the parser, the plugin commands, and the one place errors become exit statuses.

Every error a user can cause is printed as one line (``cdi: error: ...``) and
the command exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from cdi_plugins.cli.batch import add_batch_parser, add_watch_parser
from cdi_plugins.cli.commands import (cmd_algorithms, cmd_compare, cmd_plugins, cmd_report, cmd_run, cmd_simulate,
                                      cmd_validate)
from cdi_plugins.errors import CDIError

__all__ = ["main", "build_parser", "BUILTIN_COMMANDS"]

EXIT_USAGE = 2


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
    rp.add_argument("--frame", choices=("lab", "crystal", "detector"),
                    help="for a result of a raw scan (it carries its geometry): maps on an orthogonal lab grid, "
                    "the crystal frame (Q along --q-axis) or the detector's skewed grid (default: the recipe's)")
    rp.add_argument("--q-axis", type=int, choices=(0, 1, 2), help="crystal frame: Q along x (0), y (1) or z (2)")
    rp.add_argument("--vts", metavar="PATH", help="a raw scan's result on its own skewed grid, every voxel at its "
                    "lab position in nm (VTK StructuredGrid)")
    rp.add_argument("--spacing", type=float, metavar="NM", help="orthogonal grid spacing (nm; default the finest "
                    "axis of the reconstructed voxel)")
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

    add_batch_parser(sub)
    add_watch_parser(sub)

    _add_plugin_commands(sub)
    return p


BUILTIN_COMMANDS = ("run", "validate", "algorithms", "plugins", "simulate", "report", "compare", "batch", "watch")


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
