"""What a plugin registers to add a ``cdi`` subcommand (the ``cdi_register_commands`` hook).

    from cdi_plugins.core import CommandSpec, hookimpl

    def _arguments(parser):                 # an argparse.ArgumentParser of its own
        parser.add_argument("path")

    def _run(args) -> int:                  # the parsed arguments; return the exit status
        ...                                 # raise CDIError for anything the user did wrong
        return 0

    @hookimpl
    def cdi_register_commands(register):
        register(CommandSpec(name="mycommand", help="one line for cdi --help",
                             arguments=_arguments, run=_run))

The host gives every command what ``cdi run`` has: logging set up by ``cdi -v``, ``CDIError`` printed as one
line with exit status 2, Ctrl-C as exit status 130.  Keep heavy imports (torch, ...) inside ``run``:
``cdi --help`` builds every command's parser.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

__all__ = ["CommandSpec", "COMMAND_NAME"]

COMMAND_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclasses.dataclass
class CommandSpec:
    """One ``cdi`` subcommand.

    Parameters
    ----------
    name : str
        Lower-case, digits and ``-`` (``nn-eval``).
    help : str
        One line for ``cdi --help``.
    arguments : callable
        ``arguments(parser)`` adds the command's options to its ``argparse`` parser.
    run : callable
        ``run(args) -> int``: the exit status.
    """

    name: str
    help: str
    arguments: Callable
    run: Callable
    plugin: str = ""  # filled in by the registry: which plugin provided it
