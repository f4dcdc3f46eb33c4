"""Overrides: ``--set KEY=VALUE`` on the command line and ``datasets[*].set`` in a recipe."""

from __future__ import annotations

import copy
import re
from typing import Any

from cdi_plugins.errors import CDIError
from cdi_plugins.recipe.loader import _plain, _yaml_load

__all__ = ["parse_set", "apply_set", "override_pairs"]


def override_pairs(overrides) -> list[tuple[str, Any]]:
    """The API's *overrides* as ``[(key, value), ...]``: a mapping ``{"runs": 8}`` or ``(key, value)`` pairs
    (what ``--set`` gives); anything else is a CDIError naming the item (one line, not a traceback)."""
    from collections.abc import Mapping
    if isinstance(overrides, Mapping):
        overrides = overrides.items()
    elif isinstance(overrides, (str, bytes)):
        raise CDIError(f"overrides must be a mapping or (key, value) pairs, got the string {overrides!r}")
    out = []
    for i, item in enumerate(overrides):
        if (not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str)
                or not item[0].strip()):
            raise CDIError(f"overrides must be a mapping or (key, value) pairs; item {i} is {item!r}")
        out.append((item[0], item[1]))
    return out


def parse_set(item: str) -> tuple[str, Any]:
    """'steps.1.beta=0.8' -> ('steps.1.beta', 0.8) (the value is parsed as YAML)."""
    if "=" not in item:
        raise CDIError(f"--set expects KEY=VALUE, got {item!r}")
    key, _, val = item.partition("=")
    key = key.strip()
    if not key:
        raise CDIError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = _plain(_yaml_load(val, f"--set {key}")) if val.strip() else None
    except CDIError as e:  # one line: the problem, not PyYAML's multi-line report
        raise CDIError(f"--set {key}: value {val!r} is not valid YAML ({e.message})") from None
    return key, value


def apply_set(doc: dict, key: str, value: Any, source: str = "--set") -> None:
    """Set the dotted path *key* (list items by index) in *doc* in place."""
    parts = [p for p in re.split(r"\.|\[(\d+)\]", key) if p]
    if not parts:
        raise CDIError(f"empty key {key!r}", source)
    node = doc
    for n, part in enumerate(parts):
        last = n == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit():
                raise CDIError(f"'{'.'.join(parts[:n])}' is a list: use an index, not {part!r}", f"{source} {key}")
            idx = int(part)
            if not -len(node) <= idx < len(node):
                raise CDIError(f"index {idx} is out of range (the list has {len(node)} items)", f"{source} {key}")
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise CDIError(f"cannot set '{part}' inside a {type(node).__name__} value "
                           f"(is '{'.'.join(parts[:n])}' a sequence string?)", f"{source} {key}")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k in ("data", "steps"):  # a dataset's data and steps replace the base's entirely
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
