"""Scans to tasks: scan ranges, ``{scan}`` templates, and one :class:`Task` per scan."""

from __future__ import annotations

import dataclasses
import os
import re

from cdi_plugins.errors import CDIError

__all__ = ["Task", "parse_scans", "fill_scan", "scan_tasks", "data_tasks", "SCAN_FIELD"]

SCAN_FIELD = re.compile(r"\{scan(:[^{}]*)?\}")


@dataclasses.dataclass(frozen=True)
class Task:
    """One scan: the recipe run on one data file, its outputs.  Small and picklable: it travels to a worker.

    Attributes
    ----------
    scan : str
        The label in the manifest and the progress (``"57"``, or the data file's stem).
    recipe : str
        The recipe file (absolute).
    data : str or None
        The data file or folder replacing the recipe's (absolute).
    out : str or None
        The result template (``{dataset}`` and ``{recipe}`` are replaced as by ``cdi run``).
    overrides : tuple
        ``(key, value)`` pairs, as ``--set``, applied on the worker.
    overwrite : bool
        Whether the task may replace its outputs (``--force``, or files a previous attempt left).
    threads : int or None
        FFT and torch threads of the reconstruction.
    """

    scan: str
    recipe: str
    data: str | None
    out: str | None
    overrides: tuple = ()
    overwrite: bool = False
    threads: int | None = 1


def parse_scans(text: str) -> list[int]:
    """``"50-120"``, ``"3,5,9-11"`` -> the scan numbers, in order, each once."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise CDIError(f"cannot read scan range {part!r}: write scans as 50-120 or 3,5,9-11", "--scans")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise CDIError(f"scan range {part!r} runs backwards", "--scans")
        if b - a > 100_000:
            raise CDIError(f"scan range {part!r} holds more than 100000 scans", "--scans")
        out += [n for n in range(a, b + 1) if n not in out]
    return out


def fill_scan(template: str, scan: int) -> str:
    """Replace ``{scan}`` and formatted fields such as ``{scan:04d}`` by *scan*; other fields stay."""
    def one(m):
        spec = (m.group(1) or ":")[1:]
        try:
            return format(scan, spec)
        except ValueError:
            raise CDIError(f"cannot format the scan number with {{scan:{spec}}}", template) from None
    return SCAN_FIELD.sub(one, template)


def _recipe_templates(recipe: str):
    """The raw ``data.path`` and ``output.*`` templates of a recipe (before validation: they hold ``{scan}``)."""
    from cdi_plugins.recipe.loader import read_recipe
    doc, _, source, base_dir = read_recipe(recipe)
    if not isinstance(doc, dict):
        raise CDIError("a recipe must be a mapping", source)
    if doc.get("datasets"):
        raise CDIError("cdi batch runs recipes with one dataset (the scans are the datasets); remove datasets:",
                       source)
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    output = doc.get("output") if isinstance(doc.get("output"), dict) else {}
    outs = {k: v for k, v in output.items() if k in ("path", "png", "vti", "html", "cohere_dir")
            and isinstance(v, str)}
    return data.get("path"), outs, source, base_dir


def _task_overrides(outs: dict, scan: int | None, extra) -> tuple:
    over = list(extra)
    if scan is not None:
        over += [(f"output.{k}", fill_scan(v, scan)) for k, v in outs.items() if SCAN_FIELD.search(v)]
    return tuple(over)


def scan_tasks(recipe: str, scans: list[int], *, data_template: str | None = None, out: str | None = None,
               overrides=(), threads: int | None = 1) -> list[Task]:
    """One task per scan number: the recipe's ``data.path`` (or *data_template*) with ``{scan}`` filled."""
    path, outs, source, base_dir = _recipe_templates(recipe)
    template = data_template or path
    where = "--data-template" if data_template else f"{source}: data.path"
    if not isinstance(template, str) or not SCAN_FIELD.search(template):
        raise CDIError("--scans needs a data path with {scan} in it (e.g. scans/scan_{scan:04d}.h5): "
                       "write it in data.path or pass --data-template", where)
    if not os.path.isabs(template) and not data_template:
        template = os.path.join(base_dir, template)
    tasks = []
    for n in scans:
        d = os.path.abspath(fill_scan(template, n))
        tasks.append(Task(scan=str(n), recipe=os.path.abspath(recipe), data=d,
                          out=fill_scan(out, n) if out else None,
                          overrides=_task_overrides(outs, n, overrides), threads=threads))
    return tasks


def data_tasks(recipe: str, paths: list[str], *, out: str | None = None, overrides=(),
               threads: int | None = 1) -> list[Task]:
    """One task per data file or folder (the scan label is the file's stem)."""
    _recipe_templates(recipe)
    labels = [os.path.splitext(os.path.basename(os.path.normpath(p)))[0] for p in paths]
    if len(set(labels)) != len(labels):
        labels = [os.path.normpath(p) for p in paths]
    return [Task(scan=label, recipe=os.path.abspath(recipe), data=os.path.abspath(p), out=out,
                 overrides=tuple(overrides), threads=threads) for label, p in zip(labels, paths)]
