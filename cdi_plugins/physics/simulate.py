"""Simulated Bragg CDI data: a faceted, strained nano-crystal and its diffraction.

:func:`simulate_crystal` builds a random convex crystal bounded by {111}
(octahedron) and {100} (truncation) facets, gives it a smooth phase field (the
projection of a displacement field on the Bragg vector), and returns its
far-field intensity with optional Poisson noise.  It is meant for tests, demos
and benchmarks: it is deterministic for a given seed and fast (a 64^3 pattern
takes a fraction of a second).

Conventions follow the rest of the package: every array is *centred* (object
centre and Bragg peak at index ``n // 2`` on each axis, not FFT-shifted), the
intensity is ``|F|^2`` with ``F = fftshift(fftn(ifftshift(obj)))``, and the
arrays are float32 / complex64.
"""

from __future__ import annotations

import itertools
import math
import numbers

import numpy as np

from cdi_plugins.core.params import Param, ParamModel
from cdi_plugins.errors import CDIError

__all__ = ["SIMULATE", "simulate_crystal"]

_MIN_N, _MAX_N = 16, 1024
_MAX_COUNTS = 1e18          # numpy's Poisson sampler refuses larger means
_EDGE = 0.5                 # half-width (pixels) of the linear amplitude ramp

SIMULATE = ParamModel([
    Param("shape", "int", 64, "array size per axis", low=_MIN_N, high=_MAX_N),
    Param("seed", "int", 0, "random seed of the crystal and its noise", low=0),
    Param("counts", "float", 1e8, "total photon count", low=0, low_open=True),
    Param("noise", "bool", True, "apply Poisson noise"),
    Param("phase_amplitude", "float", 1.0, "peak-to-peak phase of the strain field (rad)", low=0),
    Param("oversampling_min", "float", 2.2, "minimum oversampling per axis", low=1.5),
    Param("coherence_blur", "list", None,
          "partial coherence: Gaussian blur of the intensity, sigma in pixels ([s] or [s0, s1, s2]; null: none)",
          nullable=True, accept=lambda v: len(v) in (1, 3) and all(x >= 0 for x in v)),
])
"""A recipe's ``data.simulate``: the :func:`simulate_crystal` arguments it may set."""


# --------------------------------------------------------------------------- validation

def _check_shape(shape) -> tuple[int, int, int]:
    if isinstance(shape, (bool, np.bool_)):
        raise CDIError(f"shape must be an int or a tuple of 3 ints, got {shape!r}", "simulate_crystal")
    if isinstance(shape, numbers.Integral):
        dims = (int(shape),) * 3
    else:
        try:
            items = tuple(shape)
        except TypeError:
            raise CDIError(f"shape must be an int or a tuple of 3 ints, got {shape!r}", "simulate_crystal") from None
        if len(items) != 3 or not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                                      for v in items):
            raise CDIError(f"shape must be an int or a tuple of 3 ints, got {shape!r}", "simulate_crystal")
        dims = tuple(int(v) for v in items)
    for n in dims:
        if not _MIN_N <= n <= _MAX_N:
            raise CDIError(f"shape {dims}: every axis must have between {_MIN_N} and {_MAX_N} pixels",
                           "simulate_crystal")
    return dims


def _check_real(name, value, *, low=None, high=None, low_open=False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise CDIError(f"{name} must be a real number, got {value!r}", "simulate_crystal")
    v = float(value)
    if not math.isfinite(v):
        raise CDIError(f"{name} must be finite, got {value!r}", "simulate_crystal")
    if low is not None and (v <= low if low_open else v < low):
        raise CDIError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {v:g}", "simulate_crystal")
    if high is not None and v > high:
        raise CDIError(f"{name} must be <= {high:g}, got {v:g}", "simulate_crystal")
    return v


def _check_blur(value) -> tuple[float, float, float] | None:
    """The three sigmas of *coherence_blur*, or None for a coherent pattern (None or all zeros)."""
    if value is None:
        return None
    items = [value] if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) else value
    try:
        items = list(items)
    except TypeError:
        items = None
    if items is None or len(items) not in (1, 3):
        raise CDIError(f"coherence_blur must be a number or a list of 1 or 3 numbers, got {value!r}",
                       "simulate_crystal")
    sig = [_check_real("coherence_blur", v, low=0.0) for v in items] * (3 // len(items))
    return tuple(sig) if any(sig) else None


def _blur_intensity(ideal: np.ndarray, sigma) -> np.ndarray:
    """Circular Gaussian blur of the intensity (partial coherence); keeps the total exactly."""
    from scipy.ndimage import gaussian_filter
    out = gaussian_filter(ideal, sigma, mode="wrap")
    np.maximum(out, 0.0, out=out)
    return out * (float(ideal.sum()) / float(out.sum()))


# --------------------------------------------------------------------------- geometry

def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed random rotation matrix (from a random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class _Polyhedron:
    """Convex polyhedron {x : normals @ x <= s * dist + pad}; vertices by plane triples."""

    def __init__(self, normals: np.ndarray, dist: np.ndarray):
        self.normals = normals
        self.dist = dist
        triples = np.array(list(itertools.combinations(range(len(normals)), 3)))
        mats = normals[triples]                                   # (T, 3, 3)
        keep = np.abs(np.linalg.det(mats)) > 1e-9
        self.triples = triples[keep]
        self.inv = np.linalg.inv(mats[keep])                      # (T, 3, 3)

    def vertices(self, s: float, pad: float = 0.0) -> np.ndarray:
        d = s * self.dist + pad
        v = np.einsum("tij,tj->ti", self.inv, d[self.triples])
        inside = (v @ self.normals.T <= d + 1e-7 * max(1.0, float(np.abs(d).max()))).all(axis=1)
        return v[inside]

    def bbox(self, s: float, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        v = self.vertices(s, pad)
        return v.min(axis=0), v.max(axis=0)


def _random_crystal(rng: np.random.Generator) -> tuple[_Polyhedron, dict]:
    """Facet normals ({111} and {100}, rotated) and relative facet distances."""
    n111 = np.array(list(itertools.product((-1.0, 1.0), repeat=3))) / math.sqrt(3.0)
    n100 = np.vstack([np.eye(3), -np.eye(3)])
    # {111} facets at distance ~1 (the nominal radius), slightly uneven so the
    # crystal is not perfectly centrosymmetric; {100} truncation between a
    # cuboctahedron (~0.87) and a plain octahedron (>= sqrt(3)).
    d111 = 1.0 + rng.uniform(-0.08, 0.08, size=8)
    t = rng.uniform(0.85, 1.85)
    d100 = t * (1.0 + rng.uniform(-0.06, 0.06, size=6))
    rot = _rotation(rng)
    normals = np.vstack([n111, n100]) @ rot.T
    dist = np.concatenate([d111, d100])
    info = {"d111": [float(v) for v in d111], "d100": [float(v) for v in d100],
            "truncation": float(t), "rotation": rot.tolist()}
    return _Polyhedron(normals, dist), info


def _largest_scale(poly: _Polyhedron, target: np.ndarray) -> float:
    """Largest s whose ramp-padded polyhedron is at most *target* wide on every axis."""
    def fits(s):
        lo, hi = poly.bbox(s, _EDGE)
        return bool(((hi - lo) <= target).all())
    if not fits(0.0):
        return 0.0
    a, b = 0.0, 1.0
    while fits(b):
        a, b = b, 2.0 * b
    for _ in range(60):
        m = 0.5 * (a + b)
        a, b = (m, b) if fits(m) else (a, m)
    return a


# --------------------------------------------------------------------------- phase

def _phase_field(rng: np.random.Generator, coords, amp: np.ndarray, half: float,
                 phase_amplitude: float) -> np.ndarray:
    """Smooth phase: Gaussian bumps plus a quadratic term, affine part removed."""
    y = [c / half for c in coords]                           # ~[-1, 1] across the crystal
    nb = int(rng.integers(2, 5))
    centres = rng.uniform(-0.6, 0.6, size=(nb, 3))
    widths = rng.uniform(0.35, 0.7, size=nb)
    heights = rng.normal(size=nb)
    q = rng.normal(scale=0.3, size=(3, 3))
    q = 0.5 * (q + q.T)
    phi = np.zeros(amp.shape, dtype=np.float64)
    for c, w, h in zip(centres, widths, heights):
        r2 = (y[0] - c[0]) ** 2 + (y[1] - c[1]) ** 2 + (y[2] - c[2]) ** 2
        phi += h * np.exp(-r2 / (2.0 * w * w))
    for i in range(3):
        for j in range(3):
            phi += q[i, j] * y[i] * y[j]
    # A linear phase only moves the Bragg peak off the centre, and a constant is
    # the (undeterminable) global phase: remove the amplitude-weighted affine fit.
    inside = amp > 0
    w = np.sqrt(amp[inside].astype(np.float64))
    design = np.stack([np.ones(w.size)] + [np.broadcast_to(yi, amp.shape)[inside] for yi in y], axis=1)
    coef, *_ = np.linalg.lstsq(design * w[:, None], phi[inside] * w, rcond=None)
    phi -= coef[0] + sum(coef[k + 1] * y[k] for k in range(3))
    ptp = float(np.ptp(phi[inside])) if inside.any() else 0.0
    phi *= (phase_amplitude / ptp) if ptp > 1e-12 else 0.0
    # exact zero amplitude-weighted mean after scaling (the fit made it ~0 already)
    phi -= float(np.sum(amp[inside] * phi[inside]) / np.sum(amp[inside]))
    return phi


# --------------------------------------------------------------------------- public

def simulate_crystal(shape=64, *, size=None, phase_amplitude: float = 1.0, counts: float = 1e8,
                     noise: bool = True, seed: int | None = 0, oversampling_min: float = 2.2,
                     coherence_blur=None) -> dict:
    """Simulate the Bragg diffraction pattern of a random faceted, strained crystal.

    The crystal is a convex polyhedron bounded by the eight {111} facets of an
    octahedron and the six {100} facets that truncate it, at random distances
    (octahedra, truncated octahedra and cuboctahedra all occur), randomly
    rotated.  Its amplitude is 1 inside with a linear ramp about one pixel wide
    across the surface (anti-aliasing); its phase is a smooth field with no
    linear part.

    Parameters
    ----------
    shape : int or tuple of 3 ints, optional
        Array shape; an int means a cube.  Each axis must be in [16, 1024].
    size : float, optional
        Nominal crystal radius in pixels (distance from the centre to the
        {111} facets).  By default the largest crystal that keeps the object
        at most ``shape / oversampling_min`` wide on every axis is used.
    phase_amplitude : float, optional
        Peak-to-peak phase (radians) over the crystal, in [0, pi].  The phase
        has zero amplitude-weighted mean, so ``np.angle(truth)`` never wraps.
    counts : float, optional
        Total number of photons in the (noise-free) pattern, > 0.
    noise : bool, optional
        Draw Poisson counts from the noise-free intensity.
    seed : int or None, optional
        Seed of the ``numpy.random.Generator`` used for every random choice
        (shape, rotation, phase, noise).  The same seed gives identical data.
    oversampling_min : float, optional
        Minimum oversampling ratio on every axis, >= 1.5: the whole object,
        including the soft edge, spans at most ``shape / oversampling_min``
        pixels along each axis.
    coherence_blur : float or sequence of 3 floats, optional
        Partial coherence of the beam: the noise-free intensity is convolved
        (circularly, total counts kept) with a Gaussian of this standard
        deviation in detector pixels, one value per axis or one for all,
        before the Poisson noise.  ``None`` (default) or zeros: a fully
        coherent pattern.

    Returns
    -------
    dict
        ``intensity``
            float32 array, Bragg peak at ``n // 2`` on each axis; sums to
            *counts* (exactly when ``noise=False``, within Poisson noise
            otherwise) and is integer-valued when ``noise=True``.
        ``truth``
            complex64 array, the object, centred, scaled so that
            ``|fftshift(fftn(ifftshift(truth)))|**2`` equals the noise-free
            intensity.
        ``support``
            bool array, the true support (``|truth| > 0.5 * max``).
        ``metadata``
            dict with ``seed``, ``counts``, ``noise``, ``oversampling`` (per
            axis: shape divided by the support's extent in pixels),
            ``extent`` (that extent), ``size`` (nominal radius used),
            ``shape``, ``phase_amplitude``, ``oversampling_min``,
            ``coherence_blur`` (the three sigmas, or None) and
            ``facets`` (facet distances, truncation and rotation matrix).

    Raises
    ------
    CDIError
        If an argument is out of range or the requested crystal does not fit.

    Examples
    --------
    >>> sim = simulate_crystal(64, counts=1e7, seed=3)
    >>> sim["intensity"].shape, sim["intensity"].dtype
    ((64, 64, 64), dtype('float32'))
    """
    import scipy.fft
    dims = _check_shape(shape)
    counts = _check_real("counts", counts, low=0.0, low_open=True, high=_MAX_COUNTS)
    phase_amplitude = _check_real("phase_amplitude", phase_amplitude, low=0.0, high=math.pi)
    oversampling_min = _check_real("oversampling_min", oversampling_min, low=1.5)
    if not isinstance(noise, (bool, np.bool_)):
        raise CDIError(f"noise must be True or False, got {noise!r}", "simulate_crystal")
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise CDIError(f"seed must be a non-negative int or None, got {seed!r}", "simulate_crystal")
    if size is not None:
        size = _check_real("size", size, low=0.0, low_open=True)
    blur = _check_blur(coherence_blur)

    rng = np.random.default_rng(seed)
    poly, facets = _random_crystal(rng)

    # Object (including the soft edge) may span at most shape/oversampling_min
    # pixels; the extra -1 accounts for where the continuous extent falls on
    # the pixel grid, so the count of touched pixels also respects it.
    target = np.array(dims, dtype=np.float64) / oversampling_min - 1.0
    s_max = _largest_scale(poly, target)
    if size is None:
        if s_max < 1.0:
            raise CDIError(f"shape {dims} with oversampling_min={oversampling_min:g} leaves room for a crystal "
                           f"of less than ~3 pixels; use a larger shape or a smaller oversampling_min",
                           "simulate_crystal")
        s = s_max
    else:
        s = size
        if s > s_max:
            lo, hi = poly.bbox(s, _EDGE)
            raise CDIError(f"size={s:g} makes the crystal {np.round(hi - lo, 1).tolist()} pixels wide, but shape "
                           f"{dims} with oversampling_min={oversampling_min:g} allows at most "
                           f"{np.round(target, 1).tolist()}; the largest size that fits is {s_max:.3g}",
                           "simulate_crystal")

    # Place the padded bounding box's centre at n // 2 and evaluate only inside it.
    lo, hi = poly.bbox(s, _EDGE)
    mid = 0.5 * (lo + hi)
    origin = np.array([n // 2 for n in dims], dtype=np.float64) - mid   # pixel position of polyhedron origin
    start = [max(0, int(math.floor(origin[k] + lo[k])) - 1) for k in range(3)]
    stop = [min(dims[k], int(math.ceil(origin[k] + hi[k])) + 2) for k in range(3)]
    axes = [np.arange(start[k], stop[k], dtype=np.float64) - origin[k] for k in range(3)]
    coords = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]
    box = tuple(b - a for a, b in zip(start, stop))

    sd = np.full(box, -np.inf, dtype=np.float64)                       # signed distance (max of planes)
    for nrm, d in zip(poly.normals, poly.dist * s):
        np.maximum(sd, nrm[0] * coords[0] + nrm[1] * coords[1] + nrm[2] * coords[2] - d, out=sd)
    amp_box = np.clip(_EDGE - sd, 0.0, 1.0)

    centred = [c - m for c, m in zip(coords, mid)]                      # relative to the bbox centre
    half = 0.5 * float(np.mean(hi - lo))
    phi_box = _phase_field(rng, centred, amp_box, half, phase_amplitude)

    obj = np.zeros(dims, dtype=np.complex128)
    sl = tuple(slice(a, b) for a, b in zip(start, stop))
    obj[sl] = amp_box * np.exp(1j * phi_box)

    # Scale so that sum |F|^2 = counts (Parseval: sum |F|^2 = N sum |obj|^2).
    npix = float(np.prod(dims))
    k = math.sqrt(counts / (npix * float(np.sum(np.abs(obj) ** 2))))
    truth = (obj * k).astype(np.complex64)
    f = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(truth.astype(np.complex128)), workers=-1))
    ideal = (f.real ** 2 + f.imag ** 2)
    if blur is not None:
        ideal = _blur_intensity(ideal, blur)
    if noise:
        intensity = rng.poisson(ideal).astype(np.float32)
    else:
        intensity = ideal.astype(np.float32)

    support = np.zeros(dims, dtype=bool)
    support[sl] = amp_box > 0.5
    idx = [np.flatnonzero(support.any(axis=tuple(j for j in range(3) if j != k))) for k in range(3)]
    extent = tuple(int(i[-1] - i[0] + 1) if i.size else 0 for i in idx)
    oversampling = tuple(float(dims[k] / extent[k]) if extent[k] else float("inf") for k in range(3))

    metadata = {
        "seed": None if seed is None else int(seed),
        "counts": float(counts),
        "noise": bool(noise),
        "oversampling": oversampling,
        "extent": extent,
        "size": float(s),
        "shape": tuple(dims),
        "phase_amplitude": float(phase_amplitude),
        "oversampling_min": float(oversampling_min),
        "coherence_blur": None if blur is None else list(blur),
        "facets": facets,
    }
    return {"intensity": intensity, "truth": truth, "support": support, "metadata": metadata}
