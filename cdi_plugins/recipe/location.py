"""Where a recipe value is: ``file:line: key.path`` texts for error messages.

A value set by an override (``--set KEY``, ``datasets[i].set``) is located at
the override, not at the recipe line it replaced.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["_Where", "_Overlay", "_key_parts"]


def _key_parts(key: str) -> tuple:
    """'steps[0].beta' and 'steps.0.beta' -> ('steps', '0', 'beta')."""
    return tuple(p for p in re.split(r"\.|\[(\d+)\]", str(key)) if p)


class _Where:
    """Location text builder: file, line, key path.

    *overridden* maps key paths (tuples of parts) to the place their value
    really came from (``--set KEY``, ``recipe.yaml:12: datasets[1].set.KEY``):
    an error in such a value points there, not at the recipe line it replaced.
    """

    def __init__(self, source: str, path: str = "", node: Any = None, key: Any = None,
                 own_line: int | None = None, overridden: dict | None = None):
        self.source, self.path, self.node, self.key = source, path, node, key
        self.own_line = own_line
        self.overridden = overridden or {}

    def child(self, key, node=None) -> "_Where":
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else str(key)
        return _Where(self.source, path, node if node is not None else self.node_value(key), key,
                      own_line=self.line(key), overridden=self.overridden)

    def node_value(self, key):
        try:
            return self.node[key]
        except Exception:
            return None

    def line(self, key=None) -> int | None:
        lines = getattr(self.node, "lines", None)
        if lines is None:
            return None
        try:
            return lines[key] if key is not None else None
        except (KeyError, IndexError, TypeError):
            return None

    def text(self, key=None) -> str:
        """'file:line: path.key' for *key* in this node (or the node itself)."""
        line = self.line(key) if key is not None else self.own_line
        path = self.path
        if key is not None:
            path = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
        if self.overridden and path:
            head, _, tail = path.partition(" ")  # "steps (HIO)": a step of a sequence string
            parts = _key_parts(head)
            for n in range(len(parts), 0, -1):
                label = self.overridden.get(parts[:n])
                if label is not None:
                    return (f"{label} {tail}" if tail else label) if n == len(parts) else f"{label}: {path}"
        src = f"{self.source}:{line}" if line else self.source
        return f"{src}: {path}" if path else src


class _Overlay(dict):
    """Line lookups for a dataset: its own keys first, then the base recipe's."""

    def __init__(self, base, ds):
        super().__init__()
        self.base, self.ds = base, ds
        self.lines = {**getattr(base, "lines", {}), **getattr(ds, "lines", {})}

    def __getitem__(self, key):
        return self.ds[key] if key in self.ds else self.base[key]
