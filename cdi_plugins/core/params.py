"""Typed parameter models for algorithms: validation, defaults, bounds, schema.

An algorithm declares its parameters as a list of :class:`Param`; the recipe
validator checks every step against it before anything is computed, and
``cdi algorithms NAME`` prints it as a table.  Parameters that several
algorithms declare alike come from one helper here (:func:`support_guard_params`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Callable, Iterable, Sequence

from cdi_plugins.errors import CDIError

__all__ = ["Param", "ParamModel", "suggest", "check_mapping_keys", "support_guard_params", "check_support_guard"]

_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list}  # list: of numbers


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"


@dataclasses.dataclass(frozen=True)
class Param:
    """One typed parameter of an algorithm.

    Parameters
    ----------
    name : str
    type : {"int", "float", "bool", "str", "list"}
        ``list`` is a list of finite numbers (e.g. cohere's triggers ``[1, 1]``).
    default : object
        Used when a recipe leaves the parameter out.  ``None`` with
        ``nullable=True`` means "not set".
    doc : str
        One line shown by ``cdi algorithms NAME``.
    low, high : float, optional
        Bounds; ``low_open``/``high_open`` make them exclusive.
    choices : sequence of str, optional
        Allowed values for a ``str`` parameter.
    nullable : bool
        Whether ``null`` is accepted.
    strict : bool
        For ``int``: accept only Python integers, not ``2.0`` nor NumPy
        scalars (the recipe's own settings, such as ``seed`` and ``runs``).
    accept : callable, optional
        A further rule, checked after the type and the bounds: a value for which
        ``accept(value)`` is false is rejected (e.g. a file name's suffix).
    message : str, optional
        The error text for every rejected value, instead of the generic texts;
        ``str.format`` fields: ``name``, ``value`` (write ``{value!r}``) and
        ``suggest`` (the closest of *choices*, as :func:`suggest` writes it).
    reads_file : bool
        For ``str``: the value may name a file the step reads (weights, a checkpoint, a results folder).
        When it names an existing file, no output of the run may be written over it, and this is
        checked before anything is computed.
    """

    name: str
    type: str
    default: Any
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: Sequence[str] | None = None
    nullable: bool = False
    strict: bool = False
    accept: Callable[[Any], bool] | None = None
    message: str | None = None
    reads_file: bool = False

    def __post_init__(self):
        if self.type not in _TYPES:
            raise ValueError(f"Param {self.name}: type must be one of {sorted(_TYPES)}")

    @property
    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.low is None and self.high is None:
            return ""
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        lb = "(" if (self.low_open or self.low is None) else "["
        hb = ")" if (self.high_open or self.high is None) else "]"
        return f"{lb}{lo}, {hi}{hb}"

    def check(self, value: Any, where: str) -> Any:
        """Return *value* converted to this parameter's type or raise CDIError at *where*."""
        if self.message is None:
            return self._check(value, where)
        try:
            return self._check(value, where)
        except CDIError:
            hint = suggest(str(value), self.choices) if self.choices else ""
            raise CDIError(self.message.format(name=self.name, value=value, suggest=hint), where) from None

    def _check(self, value: Any, where: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise CDIError(f"'{self.name}' may not be null", where)
        t = self.type
        if t == "bool":
            if not isinstance(value, bool):
                raise CDIError(f"'{self.name}' must be true or false, got {value!r}", where)
        elif t == "int":
            # numbers.Integral/Real also admit NumPy scalars (np.int64 from a loop); bool never counts
            if isinstance(value, bool) or not (isinstance(value, int) if self.strict else (
                    isinstance(value, numbers.Integral) or (
                    isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()))):
                raise CDIError(f"'{self.name}' must be an integer, got {value!r}", where)
            value = int(value)
        elif t == "float":
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise CDIError(f"'{self.name}' must be a number, got {value!r}", where)
            value = float(value)
            if not math.isfinite(value):
                raise CDIError(f"'{self.name}' must be finite, got {value!r}", where)
        elif t == "list":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                raise CDIError(f"'{self.name}' must be a list of numbers, got {value!r}", where)
            value = [int(v) if isinstance(v, numbers.Integral) else float(v) for v in value]
        elif t == "str":
            if not isinstance(value, str):
                raise CDIError(f"'{self.name}' must be a string, got {value!r}", where)
            if self.choices and value not in self.choices:
                raise CDIError(f"'{self.name}' must be one of {', '.join(self.choices)}; "
                               f"got {value!r}{suggest(value, self.choices)}", where)
        if t in ("int", "float"):
            bad = ((self.low is not None and (value < self.low or (self.low_open and value == self.low)))
                   or (self.high is not None and (value > self.high or (self.high_open and value == self.high))))
            if bad:
                raise CDIError(f"'{self.name}' = {value!r} is out of range {self.range_text}", where)
        if self.accept is not None and not self.accept(value):
            raise CDIError(f"'{self.name}' = {value!r} is not accepted", where)
        return value

    def schema(self) -> dict:
        return {"name": self.name, "type": self.type, "default": self.default,
                "range": self.range_text, "doc": self.doc}


class ParamModel:
    """An ordered set of :class:`Param` that validates a mapping of values."""

    def __init__(self, params: Iterable[Param] = ()):
        self.params: dict[str, Param] = {}
        for p in params:
            if p.name in self.params:
                raise ValueError(f"parameter {p.name!r} declared twice")
            self.params[p.name] = p

    def __iter__(self):
        return iter(self.params.values())

    def __contains__(self, name) -> bool:
        return name in self.params

    def validate(self, values: dict, where: Callable[[str | None], str] = lambda key=None: "") -> dict:
        """Check *values*, fill defaults, return a new dict.

        Parameters
        ----------
        values : dict
            Parameter values from a recipe step.
        where : callable
            ``where(key)`` gives the location text for *key* (``where(None)``
            the step itself); used in error messages.
        """
        out = {}
        for key, val in values.items():
            p = self.params.get(key)
            if p is None:
                known = ", ".join(self.params) or "none"
                raise CDIError(f"unknown parameter '{key}'{suggest(key, self.params)}; known: {known}", where(key))
            out[key] = p.check(val, where(key))
        for name, p in self.params.items():
            out.setdefault(name, p.default)
        return out

    def defaults(self) -> dict:
        return {name: p.default for name, p in self.params.items()}

    def schema(self) -> list[dict]:
        return [p.schema() for p in self]


# --------------------------------------------------------------------------------------------
# Parameters shared by several algorithms, declared once so that their names, bounds and
# documentation stay the same everywhere.


def check_mapping_keys(node, allowed, where: Callable, not_mapping: str) -> None:
    """Raise unless *node* is a mapping whose keys are all in *allowed*.

    *where(key)* gives the recipe location of a key (``None``: of the node itself); *not_mapping* is the
    whole message when *node* is not a mapping.  An unknown key's message suggests the closest allowed one
    and lists them all.
    """
    if not isinstance(node, dict):
        raise CDIError(not_mapping, where(None))
    for key in node:
        if key not in allowed:
            raise CDIError(f"unknown key '{key}'{suggest(str(key), allowed)}; allowed: {', '.join(allowed)}",
                           where(key))

def support_guard_params() -> list[Param]:
    """``support_min_fraction`` and ``support_max_fraction``: where a step with shrink-wrap stops.

    A support that shrinks below the one or grows above the other means a reconstruction that
    collapsed or diverges; the step stops with an error that says which parameter to change
    (``cdi_plugins.compute.support.check_support_fraction``) instead of running on.  Use
    :func:`check_support_guard` in the algorithm's check.
    """
    return [
        Param("support_min_fraction", "float", 1e-4,
              "stop with an error if the support shrinks below this fraction of the array", low=0, high=1),
        Param("support_max_fraction", "float", 0.7,
              "stop with an error if the support grows above this fraction of the array", low=0, high=1,
              low_open=True),
    ]


def check_support_guard(params: dict) -> None:
    """Refuse validated *params* whose :func:`support_guard_params` leave no room for a support.

    Raises
    ------
    CDIError
        If ``support_min_fraction`` is not below ``support_max_fraction``.
    """
    if params["support_min_fraction"] >= params["support_max_fraction"]:
        raise CDIError("support_min_fraction must be below support_max_fraction")
