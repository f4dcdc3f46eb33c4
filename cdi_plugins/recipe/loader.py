"""Reading a recipe: YAML that remembers the line of every key, from a file, a string or a dict.

A mapping loads as :class:`_LocDict` and a list as :class:`_LocList`; both keep
``lines`` (1-based), so that a later error can name ``recipe.yaml:12``.
YAML syntax errors are raised as :class:`~cdi_plugins.errors.CDIError` with the
file and line.
"""

from __future__ import annotations

import os
import re

import yaml

from cdi_plugins.core.limits import MAX_YAML_VALUES
from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import note_input

__all__ = ["read_recipe"]


class _LocDict(dict):
    """dict that remembers the line of each key (1-based)."""
    lines: dict


class _LocList(list):
    lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    out = _LocDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise CDIError("a mapping key must be a plain value",
                           f"{getattr(loader, 'cdi_source', '<recipe>')}:{key_node.start_mark.line + 1}")
        if key in out:
            raise CDIError(f"duplicate key '{key}'",
                           f"{getattr(loader, 'cdi_source', '<recipe>')}:{key_node.start_mark.line + 1}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader, node, deep=False):
    out = _LocList(loader.construct_object(child, deep=True) for child in node.value)
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


# YAML 1.1 reads 1e8 and 1.0e8 as strings (it wants 1.0e+8); scientists write 1e8.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _expanded_size(root) -> tuple[int, object]:
    """How many values the node graph *root* holds once its aliases are expanded, and the largest node.

    Counted on the composed graph (each distinct node once, memoised), so a "billion laughs" recipe is
    measured in microseconds and refused before anything is constructed.
    """
    sizes: dict = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        if done:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _yaml_load(text: str, source: str):
    loader = _Loader(text)
    loader.cdi_source = source  # so that constructor errors can name the file
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_YAML_VALUES:
            raise CDIError(f"the YAML expands to {size:,} values through its aliases (&anchor / *alias), more than "
                           f"the limit of {MAX_YAML_VALUES:,}", f"{source}:{node.start_mark.line + 1}")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise CDIError(f"YAML syntax error: {e.problem or e}", f"{source}{line}") from None
    except yaml.YAMLError as e:
        raise CDIError(f"YAML error: {e}", source) from None
    finally:
        loader.dispose()


def _plain(obj):
    """Strip line-tracking subclasses (for dumping and deep copies).

    NumPy scalars (``np.int64(20)`` from a loop in a Python-API dict) become
    Python numbers, so that they validate and dump like the YAML they stand for.
    """
    if isinstance(obj, dict):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        return obj.item()
    return obj


def read_recipe(recipe) -> tuple:
    """Read a recipe without validating it.

    Parameters
    ----------
    recipe : str, os.PathLike or dict
        A path to a YAML file, a YAML string, or an already-parsed mapping.

    Returns
    -------
    doc : object
        The parsed recipe (mappings and lists keep their lines; a dict is copied
        without line information).
    text : str
        The recipe text (a dict is dumped as YAML).
    source : str
        The file name, or ``"<recipe>"`` for a string or a dict.
    base_dir : str
        Where relative data paths start: the recipe file's folder, else the
        working directory.

    Raises
    ------
    CDIError
        For a missing or unreadable file, a YAML error (with its line), or an
        empty recipe.
    """
    if isinstance(recipe, dict):
        doc = _plain(recipe)
        text, source, base_dir = yaml.safe_dump(doc, sort_keys=False), "<recipe>", os.getcwd()
    else:
        s = os.fspath(recipe)
        looks_like_path = "\n" not in s and (s.endswith((".yaml", ".yml")) or os.path.exists(s))
        if looks_like_path:
            if not os.path.exists(s):
                raise CDIError("recipe file not found", s)
            if os.path.isdir(s):
                raise CDIError("is a directory, not a recipe file", s)
            try:
                with open(s, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as e:
                raise CDIError(f"cannot read recipe: {e}", s) from None
            note_input(s)  # no output of this run may replace it (cdi_plugins.io.atomic)
            source, base_dir = s, os.path.dirname(os.path.abspath(s))
        else:
            text, source, base_dir = s, "<recipe>", os.getcwd()
        doc = _yaml_load(text, source)
        if source == "<recipe>" and isinstance(doc, str) and "\n" not in s.strip():
            # one word that is not a file: a mistyped path, not a recipe text
            raise CDIError("recipe file not found", s)
    if doc is None:
        raise CDIError("the recipe is empty", source)
    return doc, text, source, base_dir
