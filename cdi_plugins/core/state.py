"""The data handed between steps: :class:`Problem`, :class:`State`, :class:`Context`.

A :class:`Problem` is what was measured.  It is built once per dataset, kept on
the host as read-only NumPy arrays, and never changed by a step.  A
:class:`State` is the current estimate (object and support, on the run's array
backend, centred) plus the history of every iteration so far.  Every step takes
a State (or ``None`` for the first step) and returns a new one.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["Problem", "State", "Context", "as_float32"]


def as_float32(a: np.ndarray, source: str, what: str = "intensity") -> np.ndarray:
    """A float32 copy of the real array *a*, or CDIError (naming *source*) when its finite values exceed the
    float32 range: the cast would turn them into infinities, reported as if the file held some."""
    a = np.asarray(a)
    if a.dtype.itemsize > 4 or a.dtype.kind in "iu":
        finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
        big = float(np.abs(finite).max(initial=0))
        if big > float(np.finfo(np.float32).max):
            raise CDIError(f"{what} values up to {big:.3g} exceed the float32 range "
                           f"({float(np.finfo(np.float32).max):.3g}) every computation uses; "
                           "rescale the data (only relative intensities matter)", source)
    return np.array(a, dtype=np.float32, copy=True, order="C")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A measured (or simulated) diffraction pattern and what is known about it.

    Attributes
    ----------
    intensity : ndarray of float32, shape (n0, n1, n2)
        Measured intensity, >= 0, Bragg peak at the array centre (not FFT-shifted).
    mask : ndarray of bool
        True where a pixel was not measured or is bad.  Masked pixels are never
        constrained and never counted in chi^2.
    free : ndarray of bool or None
        Measured pixels held out of the modulus constraint so that their error
        (``chi2_free`` in the history) is unbiased.  ``None`` when not used.
    metadata : dict
        Energy, distance, pixel size, Bragg geometry and anything else known.
    truth : ndarray of complex64 or None
        The true object (centred) for simulated data; used only for reporting.
    source : str
        Where the data came from (file name or ``"simulated"``), used in messages.
    """

    intensity: np.ndarray
    mask: np.ndarray
    free: np.ndarray | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    truth: np.ndarray | None = None
    source: str = "<array>"

    @classmethod
    def from_array(cls, intensity, mask=None, *, metadata=None, truth=None,
                   free_fraction: float = 0.0, seed: int | None = 0,
                   source: str = "<array>") -> "Problem":
        """Validate an intensity array (and mask) and build a Problem.

        Raises
        ------
        CDIError
            If the data is not 3-D, holds NaN/inf or negative values, is all
            zero where measured, or the mask has the wrong shape or masks
            everything.  The message names *source*.
        """
        a = np.asarray(intensity)
        if a.ndim != 3:
            raise CDIError(f"expected a 3-D intensity array, got {a.ndim}-D with shape {a.shape}", source)
        if min(a.shape) < 4:
            raise CDIError(f"intensity array {a.shape} is too small (each axis needs >= 4 pixels)", source)
        if not (np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a)):
            raise CDIError(f"intensity must be real numbers, got dtype {a.dtype}", source)
        a = as_float32(a, source)  # always a copy: the caller's array is never touched
        if not np.isfinite(a).all():
            n = int((~np.isfinite(a)).sum())
            raise CDIError(f"intensity holds {n} NaN or infinite value(s); mask them instead", source)
        if mask is None:
            m = np.zeros(a.shape, dtype=bool)
        else:
            m = np.asarray(mask)
            if m.shape != a.shape:
                raise CDIError(f"mask shape {m.shape} does not match intensity shape {a.shape}", source)
            m = m.astype(bool)
        if (a[~m] < 0).any():
            n = int((a[~m] < 0).sum())
            raise CDIError(f"intensity holds {n} negative value(s) (min {a.min():g}); "
                           "subtract background with clipping or mask those pixels", source)
        if m.all():
            raise CDIError("the mask covers every pixel; nothing is measured", source)
        if not (a[~m] > 0).any():
            raise CDIError("intensity is zero at every measured pixel", source)
        a[m] = 0.0  # masked values are unknown: never let them leak into anything
        free = None
        if free_fraction:
            if not 0.0 < free_fraction < 0.5:
                raise CDIError(f"free_fraction {free_fraction} must be in (0, 0.5)", source)
            rng = np.random.default_rng(seed)
            free = (rng.random(a.shape) < free_fraction) & ~m
        t = None
        if truth is not None:
            t = np.asarray(truth)
            if t.shape != a.shape:
                raise CDIError(f"truth shape {t.shape} does not match intensity shape {a.shape}", source)
            t = _readonly(t.astype(np.complex64))
        return cls(intensity=_readonly(a), mask=_readonly(m),
                   free=None if free is None else _readonly(free),
                   metadata=dict(metadata or {}), truth=t, source=source)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.intensity.shape)

    @property
    def amplitude(self) -> np.ndarray:
        """sqrt(intensity) as float32 (0 where masked)."""
        return np.sqrt(self.intensity)

    @property
    def unconstrained(self) -> np.ndarray:
        """Pixels the modulus constraint leaves alone: masked or free."""
        return self.mask if self.free is None else (self.mask | self.free)


@dataclasses.dataclass(frozen=True, eq=False)
class State:
    """The current estimate, handed from one step to the next.

    Attributes
    ----------
    obj : array of complex64
        Complex object, centred, on the run's array backend (NumPy or CuPy).
    support : array of bool
        Real-space support, same shape and backend as *obj*.
    history : list of dict
        One record per iteration so far: at least ``step``, ``algorithm``,
        ``iteration`` and ``chi2``; iterative steps add ``support_fraction``
        when the support changes and ``chi2_free`` when free pixels are used.
    provenance : list of dict
        One record per completed step: algorithm, parameters, seconds.
    """

    obj: Any
    support: Any
    history: list = dataclasses.field(default_factory=list)
    provenance: list = dataclasses.field(default_factory=list)

    def replace(self, **changes) -> "State":
        return dataclasses.replace(self, **changes)

    @classmethod
    def after(cls, previous: "State | None", obj, support, records=()) -> "State":
        """The State a step hands on: *obj* and *support*, *previous*'s history followed by
        *records* (this step's iteration records), and *previous*'s provenance.

        *previous* is the State the step received (``None`` for a first step); it is not changed.
        """
        history = list(previous.history) if previous is not None else []
        history.extend(records)
        provenance = list(previous.provenance) if previous is not None else []
        return cls(obj=obj, support=support, history=history, provenance=provenance)


@dataclasses.dataclass
class Context:
    """What a step gets besides the data: where and how to compute.

    Attributes
    ----------
    backend : cdi_plugins.compute.backend.Backend
        Array namespace (``backend.xp``) and FFT engine.
    rng : numpy.random.Generator
        Seeded generator; use it for every random choice so runs reproduce.
    progress : callable
        ``progress(step=..., algorithm=..., iteration=..., total=..., chi2=...)``;
        solvers report through it and never print.
    logger : logging.Logger
    step : int
        1-based index of the step being run (for history records).
    """

    backend: Any
    rng: np.random.Generator
    progress: Callable[..., None] = lambda **event: None
    logger: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("cdi_plugins"))
    step: int = 0
