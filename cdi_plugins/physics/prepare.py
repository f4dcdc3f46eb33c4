"""Prepare a measured diffraction pattern for phase retrieval.

A recipe's ``data.prepare`` mapping lists what to do to the raw stack before a
:class:`~cdi_plugins.core.state.Problem` is built from it::

    data:
      path: scan_0042.h5
      prepare:
        saturation: 1.0e6                  # pixels at or above this count are masked
        gaps: [":, 255:260, :"]            # detector gaps (raw pixel indices): masked
        aliens: ["10:14, 40:44, 50:56"]    # parasitic scattering: masked
        hot_pixels: 20                     # > 20 x the local 3x3x3 median: masked
        threshold: 2                       # counts below this become 0
        bin: [1, 2, 2]                     # sum blocks of pixels per axis
        centre: max                        # put the peak at n // 2: max | com | none
        shape: auto                        # crop/pad around the peak: auto | N | [n0, n1, n2]

The operations always run in this order: masks on the raw pixels (a mask file,
saturation, gaps, aliens, hot pixels), the threshold, binning, then centring
and cropping/padding.  Region strings are NumPy slices in raw pixel indices,
so you can copy them from the viewer you found the gap or the alien in.
Pixels that a pad adds lie outside the measured range: they are masked, never
constrained to zero.

The oversampling ratio per axis comes from the intensity autocorrelation
(:func:`cdi_plugins.compute.fourier.oversampling`, preset ``"blob"``);
:func:`cdi_plugins.pipeline.build_problem` stores it in
``Problem.metadata["oversampling_estimate"]`` and ``cdi run`` prints it.

Every function returns new arrays; its inputs are never modified.
"""

from __future__ import annotations

import numbers
import re

import numpy as np

from cdi_plugins.compute.fourier import crop_pad, window_slices
from cdi_plugins.core.params import Param, ParamModel, suggest
from cdi_plugins.errors import CDIError

__all__ = ["PREPARE", "PREPARE_KEYS", "validate_prepare", "prepare",
           "fft_friendly", "parse_region", "check_regions"]

PREPARE = ParamModel([
    Param("threshold", "float", 0.0, "intensities below this (counts) are set to 0", low=0),
    Param("saturation", "float", None, "pixels at or above this count are masked (null: off)",
          low=0, low_open=True, nullable=True),
    Param("hot_pixels", "float", None,
          "mask a pixel above this many times the median of its 3x3x3 neighbourhood (at least 1 count); "
          "null: off", low=1, low_open=True, nullable=True),
    Param("centre", "str", "none", "move the peak to the array centre: max (brightest pixel), "
          "com (centre of mass) or none", choices=("none", "max", "com")),
])
_LIST_KEYS = ("gaps", "aliens", "bin", "shape")
PREPARE_KEYS = tuple(PREPARE.params) + _LIST_KEYS

_FFT_PRIMES = (2, 3, 5)


# --------------------------------------------------------------------------------------------
# validation (recipe time: no data yet)


def _int_list(value, what: str, low: int) -> tuple[int, int, int]:
    """An int or a list of 3 ints, each >= *low*, as a 3-tuple."""
    def ok(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low
    if ok(value):
        return (int(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(ok(v) for v in value):
        return tuple(int(v) for v in value)
    raise CDIError(f"{what} must be an integer >= {low} or a list of 3 such integers (one per axis), "
                   f"got {value!r}")


_SLICE = re.compile(r"^\s*(-?\d+)?\s*(?::\s*(-?\d+)?\s*)?$")


def parse_region(text, shape=None) -> tuple[slice, slice, slice]:
    """Parse a NumPy-style region such as ``":, 30:32, 100:"`` into three slices.

    Parameters
    ----------
    text : str
        Three comma-separated parts, one per axis: ``:`` (the whole axis),
        ``a:b``, ``a:``, ``:b`` or a single index ``a``; negative indices count
        from the end, as in NumPy.
    shape : tuple of 3 ints, optional
        When given, every index must lie inside it and the region must not be
        empty.

    Raises
    ------
    CDIError
        On a syntax error, an index outside *shape* or an empty region.
    """
    if not isinstance(text, str):
        raise CDIError(f"a region must be a quoted string such as \":, 30:32, :\", got {text!r}")
    parts = text.strip().strip("[]").split(",")
    if len(parts) != 3:
        raise CDIError(f"region {text!r} must have 3 comma-separated parts (one per axis), got {len(parts)}")
    out = []
    for axis, part in enumerate(parts):
        m = _SLICE.match(part)
        if not m or part.strip() == "":
            raise CDIError(f"region {text!r}: cannot read {part.strip()!r} on axis {axis}; "
                           "write ':' , 'a:b', 'a:', ':b' or 'a'")
        a, b = m.group(1), m.group(2)
        single = ":" not in part
        start = int(a) if a is not None else None
        stop = int(b) if b is not None else None
        if shape is not None:
            n = shape[axis]
            for v in (start, stop):
                if v is not None and not -n <= v <= n:
                    raise CDIError(f"region {text!r}: index {v} is outside axis {axis}, which has {n} pixels")
            if single:
                if start == n:
                    raise CDIError(f"region {text!r}: index {start} is outside axis {axis}, which has {n} pixels")
                start = start % n
                stop = start + 1
            if len(range(*slice(start, stop).indices(n))) == 0:
                raise CDIError(f"region {text!r} is empty on axis {axis}")
        elif single:
            stop = None if start == -1 else start + 1
        out.append(slice(start, stop))
    return tuple(out)


def validate_prepare(node, where=lambda key=None: "") -> dict:
    """Check a ``data.prepare`` mapping and fill in defaults.

    Parameters
    ----------
    node : dict or None
        The mapping from the recipe.
    where : callable
        ``where(key)`` gives the recipe location of *key* (``where(None)`` the
        mapping itself), used in error messages.

    Returns
    -------
    dict
        Every key of :data:`PREPARE_KEYS`, validated: ``gaps`` and ``aliens``
        lists of strings, ``bin`` a 3-tuple of ints, ``shape`` None, ``"auto"``
        or a 3-tuple of ints.

    Raises
    ------
    CDIError
        Located at the offending key.
    """
    if node is None:
        node = {}
    if not isinstance(node, dict):
        raise CDIError("data.prepare must be a mapping (threshold: ..., centre: ..., ...)", where(None))
    for key in node:
        if key not in PREPARE_KEYS:
            raise CDIError(f"unknown key '{key}'{suggest(str(key), PREPARE_KEYS)}; allowed: "
                           f"{', '.join(PREPARE_KEYS)}", where(key))
    scalars = {k: v for k, v in node.items() if k in PREPARE.params}
    out = PREPARE.validate(scalars, where)
    for key in ("gaps", "aliens"):
        regions = node.get(key)
        if regions is None:
            out[key] = []
            continue
        if isinstance(regions, str):
            regions = [regions]
        if not isinstance(regions, list):
            raise CDIError(f"{key} must be a list of regions such as [\":, 30:32, :\"]", where(key))
        for r in regions:
            try:
                parse_region(r)
            except CDIError as e:
                raise e.at(where(key)) from None
        out[key] = [str(r) for r in regions]
    try:
        out["bin"] = _int_list(node.get("bin", 1), "bin", 1)
    except CDIError as e:
        raise e.at(where("bin")) from None
    shape = node.get("shape")
    if shape is None or shape == "auto":
        out["shape"] = shape
    else:
        try:
            out["shape"] = _int_list(shape, "shape (or auto, or null)", 4)
        except CDIError as e:
            raise e.at(where("shape")) from None
    return out


def check_regions(options: dict | None, shape, where: dict | None = None, source: str = "") -> None:
    """Check every region of validated *options* (``gaps``, ``aliens``) against the raw data *shape*.

    What :func:`prepare` would refuse, found from the data's header alone (``cdi validate``).
    """
    where = where or {}
    for key in ("gaps", "aliens"):
        for r in (options or {}).get(key) or ():
            try:
                parse_region(r, tuple(shape))
            except CDIError as e:
                raise e.at(where.get(key, source)) from None


def is_noop(options: dict | None) -> bool:
    """True when *options* (validated) would leave the data as it is."""
    if not options:
        return True
    return (options["threshold"] == 0 and options["saturation"] is None and options["hot_pixels"] is None
            and options["centre"] == "none" and not options["gaps"] and not options["aliens"]
            and tuple(options["bin"]) == (1, 1, 1) and options["shape"] is None)


# --------------------------------------------------------------------------------------------
# the operations


def fft_friendly(n: int, *, up: bool = False) -> int:
    """The nearest even size at or below *n* (or above with ``up``) whose prime factors are 2, 3 and 5."""
    if n < 2:
        raise CDIError(f"cannot find an FFT-friendly size near {n}")

    def good(m):
        if m % 2:
            return False
        for p in _FFT_PRIMES:
            while m % p == 0:
                m //= p
        return m == 1

    m = n
    while not good(m):
        m = m + 1 if up else m - 1
    return m


def _bin(a: np.ndarray, mask: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray]:
    """Sum blocks of *factors* pixels; a block with any masked pixel is masked.

    Axes that do not divide evenly lose their remainder, split between both ends.
    """
    sl = []
    for n, f in zip(a.shape, factors):
        r = n % f
        sl.append(slice(r // 2, n - (r - r // 2)))
    a, mask = a[tuple(sl)], mask[tuple(sl)]
    shp = []
    for n, f in zip(a.shape, factors):
        shp += [n // f, f]
    out = a.astype(np.float64).reshape(shp).sum(axis=(1, 3, 5))
    m = mask.reshape(shp).any(axis=(1, 3, 5))
    return out.astype(np.float32), m


def _window(a: np.ndarray, mask: np.ndarray, centre, shape) -> tuple[np.ndarray, np.ndarray, int]:
    """A *shape* window of (a, mask) with pixel *centre* at index n // 2.

    Pixels of the window outside the data are 0 and masked; returns how many.
    """
    out = crop_pad(a, shape, 0, centre=centre)
    m = crop_pad(mask, shape, True, centre=centre)
    outside = np.ones(shape, dtype=bool)
    outside[window_slices(a.shape, shape, centre)[1]] = False
    return out, m, int(outside.sum())


def prepare(intensity, mask=None, options: dict | None = None, *, where: dict | None = None,
            source: str = "<array>") -> tuple[np.ndarray, np.ndarray, dict]:
    """Apply the preparation steps of a validated ``data.prepare`` mapping.

    Parameters
    ----------
    intensity : array_like, 3-D
        The raw stack (never modified).
    mask : array_like of bool, optional
        True where a pixel is not measured, in the raw stack's frame.
    options : dict
        From :func:`validate_prepare` (or a plain dict of the same keys; it is
        validated again).
    where : dict, optional
        Recipe location of each key, for errors that need the data's shape
        (a region outside the array, a window that misses the data).
    source : str
        The data's name, for errors without a recipe location.

    Returns
    -------
    intensity : ndarray of float32
    mask : ndarray of bool
    report : dict
        What was done: ``input_shape``, ``shape``, counts of pixels affected by
        each step (``saturated``, ``gaps``, ``aliens``, ``hot_pixels``,
        ``below_threshold``, ``outside_data``), ``bin``, ``centre``,
        ``peak`` (position before centring, in the binned frame) and
        ``shift`` (pixels the data moved), and ``masked`` in the end.

    Raises
    ------
    CDIError
        For a region outside the data, a shape that is not reachable, or data
        that is not 3-D.
    """
    from scipy import ndimage
    where = where or {}
    options = validate_prepare(options if options is not None else {},
                               lambda key=None: where.get(key, source))
    a = np.array(intensity, dtype=np.float32, copy=True)
    if a.ndim != 3:
        raise CDIError(f"expected a 3-D intensity array, got {a.ndim}-D with shape {a.shape}", source)
    m = np.zeros(a.shape, dtype=bool) if mask is None else np.array(mask, dtype=bool, copy=True)
    report = {"input_shape": list(a.shape)}
    finite = np.isfinite(a)

    # 1. masks on the raw pixels
    if options["saturation"] is not None:
        sat = finite & (a >= options["saturation"]) & ~m
        report["saturated"] = int(sat.sum())
        m |= sat
    for key in ("gaps", "aliens"):
        before = int(m.sum())
        for r in options[key]:
            try:
                m[parse_region(r, a.shape)] = True
            except CDIError as e:
                raise e.at(where.get(key, source)) from None
        if options[key]:
            report[key] = int(m.sum()) - before
    if options["hot_pixels"] is not None:
        # median of the 27-pixel neighbourhood: a hot detector pixel (a line along the rocking
        # axis) holds at most 3 of them, so it cannot raise the median it is compared with
        clean = np.where(finite & ~m, a, 0.0).astype(np.float32)
        med = ndimage.median_filter(clean, size=3, mode="nearest")
        hot = (clean > options["hot_pixels"] * np.maximum(med, 1.0)) & ~m
        report["hot_pixels"] = int(hot.sum())
        m |= hot

    # 2. threshold (masked pixels are unknown anyway)
    if options["threshold"] > 0:
        low = finite & (a < options["threshold"]) & ~m
        report["below_threshold"] = int((low & (a != 0)).sum())
        a[low] = 0.0
    a[m] = 0.0

    # 3. binning
    factors = tuple(options["bin"])
    if factors != (1, 1, 1):
        for ax, (n, f) in enumerate(zip(a.shape, factors)):
            if f > n // 2:
                raise CDIError(f"bin {f} on axis {ax} leaves fewer than 2 pixels of {n}",
                               where.get("bin", source))
        a, m = _bin(a, m, factors)
    report["bin"] = list(factors)

    # 4. centring and crop/pad
    centre = tuple(n // 2 for n in a.shape)
    how = options["centre"]
    measured = np.where(m | ~np.isfinite(a), 0.0, a)
    if how != "none":
        if not (measured > 0).any():
            raise CDIError("cannot centre: the intensity is zero at every measured pixel", source)
        if how == "max":
            peak = tuple(int(i) for i in np.unravel_index(int(np.argmax(measured)), a.shape))
        else:
            peak = tuple(int(round(c)) for c in ndimage.center_of_mass(measured.astype(np.float64)))
        report["peak"] = list(peak)
        centre = peak
    report["centre"] = how
    shape = options["shape"]
    if shape == "auto":
        shape = tuple(fft_friendly(n) for n in a.shape)
    elif shape is None:
        shape = a.shape
    shape = tuple(int(n) for n in shape)
    if how != "none" or shape != a.shape:
        try:
            a, m, outside = _window(a, m, centre, shape)
        except CDIError as e:
            raise e.at(where.get("shape", source)) from None
        report["outside_data"] = outside
    report["shift"] = [s // 2 - c for s, c in zip(shape, centre)]
    report["shape"] = list(a.shape)
    report["masked"] = int(m.sum())
    if m.all():
        raise CDIError("preparation masked every pixel; check saturation, gaps, aliens and hot_pixels",
                       where.get(None, source))
    return a.astype(np.float32, copy=False), m, report
