"""One canonical orientation of the twin, so that pictures of one crystal look alike.

An object ``obj(r)`` and its twin ``conj(obj(-r))`` fit the same diffraction
data equally well, and phase retrieval ends in either: HIO and RAAR runs of
the same crystal often come out as each other's twin, and drawn as they are
they look like two different crystals (point-reflected, phase negated).
:func:`canonical` puts post-processed maps in one orientation chosen by a rule
that depends only on the object, and says which it did.

The rule (:func:`orientation_statistic`), on the post-processed maps:

1. **Phase curvature.**  Fit ``phi(r) = c + g . r + r^T C r`` to the
   (unwrapped) phase inside the support, weighted by the amplitude, with ``r``
   in nm when the voxel size is known (else voxels) from the amplitude's
   centre of mass, scaled by the crystal's amplitude-weighted RMS radius.  The
   eigenvalues of ``C`` are the phase's principal curvatures (rad from the
   centre to one RMS radius).  The canonical orientation is the one in which
   the curvature of **largest magnitude is positive** (the phase is a bowl,
   not a dome, along its most curved direction).  The twin negates the phase
   and point-reflects it, so it negates ``C``: exactly one of the two is
   canonical.  A rotation of the crystal does not change the eigenvalues, nor
   does a phase ramp or a global phase.
2. When the phase is flat (largest curvature below :data:`MIN_CURVATURE` rad),
   **shape**: the amplitude-weighted skewness of the object along the array
   axis where it is largest in magnitude must be positive (the twin
   point-reflects the shape, which negates every third moment).
3. When the shape is centrosymmetric too (every skewness below
   :data:`MIN_SKEWNESS`), the object is left as reconstructed.

Why curvature: the shapes of faceted crystals are close to centrosymmetric
(skewness ~0.01, under the difference between two reconstructions), and the
skewness of the phase values depends on the noisy surface voxels; the
low-order phase curvature is what two reconstructions of one crystal agree on
best (on simulated 32^3 crystals, 30 of 32 HIO and RAAR reconstructions with
an error under 0.15 came out in the orientation of the truth's canonical
one).  Its limit: when the two largest curvatures have nearly the same size
and opposite signs (a saddle), two reconstructions that differ slightly may
still be drawn in different orientations; the caption says what was done, and
``Processed.info['twin_curvatures']`` holds the eigenvalues.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["canonical", "orientation_statistic", "twin_caption", "AS_RECONSTRUCTED", "FLIPPED",
           "MIN_CURVATURE", "MIN_SKEWNESS"]

AS_RECONSTRUCTED = "twin: as reconstructed"
FLIPPED = "twin: flipped to canonical orientation"

MIN_CURVATURE = 1e-2   # rad (phase change from the centre to one RMS radius) below which the phase is flat
MIN_SKEWNESS = 1e-3    # below which the shape counts as centrosymmetric


def _centred_coordinates(weights: np.ndarray, spacing) -> list[np.ndarray]:
    grid = np.indices(weights.shape, dtype=np.float64)
    total = weights.sum()
    out = []
    for g, d in zip(grid, spacing):
        x = g * d
        out.append(x - (weights * x).sum() / total)
    return out


def orientation_statistic(processed) -> tuple[float, str, dict]:
    """The number whose sign decides the orientation, and what it is.

    Parameters
    ----------
    processed : Processed
        Post-processed maps (amplitude, unwrapped phase, support).

    Returns
    -------
    value : float
        Positive: canonical; negative: the twin is; 0: undecided.
    rule : str
        ``"phase curvature"``, ``"shape skewness"`` or ``"none"``.
    details : dict
        ``twin_curvatures`` (rad, largest magnitude first) and, when the
        shape decided, ``twin_skewness`` (per axis).
    """
    w = np.where(processed.support, processed.amplitude, 0.0).astype(np.float64)
    if w.sum() <= 0:
        return 0.0, "none", {}
    spacing = processed.voxel_size or (1.0, 1.0, 1.0)
    x = _centred_coordinates(w, spacing)
    radius = np.sqrt((w * sum(v * v for v in x)).sum() / w.sum()) or 1.0
    x = [v / radius for v in x]
    inside = w > 0
    details: dict = {}
    if inside.sum() >= 10:
        cols = [np.ones(int(inside.sum()))] + [v[inside] for v in x]
        pairs = [(i, j) for i in range(3) for j in range(i, 3)]
        cols += [x[i][inside] * x[j][inside] for i, j in pairs]
        sw = np.sqrt(w[inside])
        a = np.stack(cols, axis=1) * sw[:, None]
        b = processed.phase[inside].astype(np.float64) * sw
        coef = np.linalg.lstsq(a, b, rcond=None)[0]
        c = np.zeros((3, 3))
        for (i, j), q in zip(pairs, coef[4:]):
            c[i, j] = c[j, i] = q if i == j else q / 2
        ev = np.linalg.eigvalsh(c)
        ev = ev[np.argsort(-np.abs(ev), kind="stable")]
        details["twin_curvatures"] = [float(e) for e in ev]
        if abs(ev[0]) >= MIN_CURVATURE:
            return float(ev[0]), "phase curvature", details
    skew = []
    for v in x:
        m2 = (w * v * v).sum() / w.sum()
        skew.append(float((w * v ** 3).sum() / w.sum() / m2 ** 1.5) if m2 > 0 else 0.0)
    details["twin_skewness"] = skew
    k = int(np.argmax(np.abs(skew)))
    if abs(skew[k]) >= MIN_SKEWNESS:
        return skew[k], "shape skewness", details
    return 0.0, "none", details


def _flip(a):
    return None if a is None else np.ascontiguousarray(np.flip(a))


def canonical(processed, shape=None):
    """*processed* in the canonical twin orientation (see the module docstring).

    Parameters
    ----------
    processed : Processed
    shape : tuple of 3 ints, optional
        Shape of the uncropped reconstruction, to place the flipped maps
        (``origin``) in the frame of the twin (point reflection about index
        ``n // 2``, as :func:`cdi_plugins.compute.metrics.twin`).  Without it
        the origin is kept.

    Returns
    -------
    Processed
        A new one (the input is not modified) whose ``info['twin']`` is
        :data:`AS_RECONSTRUCTED` or :data:`FLIPPED`, with ``info['twin_rule']``
        and the statistic's details.  Maps that already carry
        ``info['twin']`` are returned as they are, so canonicalising twice
        changes nothing.

    Notes
    -----
    Flipping maps the twin's maps: amplitude, support and strain are
    point-reflected, phase and displacement are point-reflected and negated.
    """
    info = processed.info or {}
    if "twin" in info:
        return processed
    value, rule, details = orientation_statistic(processed)
    info = dict(info, twin_rule=rule, **details)
    if value >= 0:
        return dataclasses.replace(processed, info=dict(info, twin=AS_RECONSTRUCTED))
    origin = processed.origin
    if shape is not None:
        # box [o, o + L) -> [2 (n // 2) - (o + L - 1), 2 (n // 2) - o]
        origin = tuple(2 * (n // 2) - (o + length - 1)
                       for n, o, length in zip(shape, processed.origin, processed.amplitude.shape))
    neg = (lambda a: None if a is None else np.ascontiguousarray(-np.flip(a)))
    return dataclasses.replace(
        processed, amplitude=_flip(processed.amplitude), phase=neg(processed.phase),
        support=_flip(processed.support), displacement=neg(processed.displacement),
        strain=_flip(processed.strain), strain_valid=_flip(processed.strain_valid), origin=origin,
        info=dict(info, twin=FLIPPED))


def twin_caption(processed) -> str:
    """:data:`AS_RECONSTRUCTED` or :data:`FLIPPED` (as reconstructed when never canonicalised)."""
    return (processed.info or {}).get("twin", AS_RECONSTRUCTED)
