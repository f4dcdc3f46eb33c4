"""``cdi import-cohere``: a cohere experiment folder (conf/config_rec + data) -> a recipe and its data.

Registered by the cohere plugin through the ``cdi_register_commands`` hook.
"""

from __future__ import annotations

import os

from cdi_plugins.core import CommandSpec

__all__ = ["commands", "cmd_import_cohere"]


def cmd_import_cohere(args) -> int:
    from cdi_plugins.algorithms.cohere.experiment import import_cohere_experiment
    exp = args.experiment
    out = args.out or os.path.basename(os.path.abspath(exp)) + ".yaml"
    unsupported = import_cohere_experiment(exp, out, engine=args.engine, overwrite=args.overwrite)
    stem = os.path.splitext(out)[0]
    print(f"wrote {out} and {stem}_data.npy (engine {args.engine})")
    if unsupported:
        print("config_rec keys not carried over (or only approximately):")
        for key, why in unsupported:
            print(f"  {key}: {why}")
    else:
        print("every config_rec key was carried over")
    return 0


def _arguments(ic) -> None:
    ic.add_argument("experiment", metavar="EXPERIMENT_DIR", help="cohere experiment folder (with conf/config_rec)")
    ic.add_argument("--out", metavar="RECIPE", help="recipe to write (default: <experiment name>.yaml here)")
    ic.add_argument("--engine", choices=("ours", "cohere"), default="ours",
                    help="ours: er/hio/raar steps; cohere: one step running cohere-core itself")
    ic.add_argument("--overwrite", action="store_true")


def commands() -> list[CommandSpec]:
    return [CommandSpec("import-cohere", "turn a cohere experiment (conf/config_rec + data) into a recipe",
                        _arguments, cmd_import_cohere)]
