"""A rocking scan from raw frames to the lab frame: corrections, the geometry of the reconstructed array,
a forward model of a crystal placed in the lab, and the lab-frame maps of a reconstruction.

* :func:`correct_frames`: dark subtraction and white-field division; 512 x 512 fields are cut to the
  frames' region of interest (the SPEC ``#UIMR5`` line) when the frames are smaller;
* :func:`array_geometry`: B at the Bragg peak and T for the array that was reconstructed, from the
  scan geometry and the report of ``data.prepare`` (its binning, its crop and the peak it found);
* :func:`simulate_scan`: a crystal given in lab coordinates (nm), its diffraction sampled on the
  detector grid of a scan (the object on the skewed grid ``r = T (n - N/2)``, Fourier transformed:
  exact for ``q = q0 + B n``; :func:`linearity_error` says how far the true ``q`` departs from that),
  with Poisson noise;
* :func:`lab_maps`: a reconstruction orthogonalised (lab or crystal frame) with Q's true direction.
"""

from __future__ import annotations

import math

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.physics.geometry import (ScanGeometry, detector_matrix, orthogonalise, q_aligned, voxel_basis,
                                          voxel_sizes)

__all__ = ["correct_frames", "array_geometry", "simulate_scan", "linearity_error", "lab_maps"]


def _fit_field(field: np.ndarray, frame_shape, roi, name: str) -> np.ndarray:
    f = np.asarray(field, dtype=np.float64)
    if f.ndim == 3 and f.shape[0] == 1:
        f = f[0]
    if f.ndim != 2:
        raise CDIError(f"the {name} field must be one 2-D frame, got shape {f.shape}")
    if f.shape == tuple(frame_shape):
        return f
    if roi is None:
        raise CDIError(f"the {name} field is {f.shape[0]}x{f.shape[1]} and the frames {frame_shape[0]}x"
                       f"{frame_shape[1]}: give data.roi (rows and columns of the frames in the full detector)")
    r0, r1, c0, c1 = roi
    if r1 > f.shape[0] or c1 > f.shape[1] or (r1 - r0, c1 - c0) != tuple(frame_shape):
        raise CDIError(f"roi {list(roi)} does not cut the {f.shape[0]}x{f.shape[1]} {name} field to the "
                       f"{frame_shape[0]}x{frame_shape[1]} frames")
    return f[r0:r1, c0:c1]


def correct_frames(frames, dark=None, white=None, roi=None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(intensity, mask, report)``: ``(frames - dark) / (white / mean(white))``, clipped at 0.

    Pixels where the white field is zero or not finite are masked (dead pixels, gaps).
    """
    a = np.asarray(frames, dtype=np.float64)
    if a.ndim != 3:
        raise CDIError(f"expected a stack of frames (frames, rows, columns), got shape {a.shape}")
    mask = np.zeros(a.shape, dtype=bool)
    report: dict = {}
    if dark is not None:
        d = _fit_field(dark, a.shape[1:], roi, "dark")
        a = a - d[None]
        report["dark"] = float(d.mean())
    if white is not None:
        w = _fit_field(white, a.shape[1:], roi, "white")
        good = np.isfinite(w) & (w > 0)
        if not good.any():
            raise CDIError("the white field is zero everywhere")
        gain = np.where(good, w / w[good].mean(), 1.0)
        a = a / gain[None]
        mask |= ~good[None]
        report["white_masked_pixels"] = int((~good).sum())
    a = np.clip(a, 0, None)
    return a.astype(np.float32), mask, report


def array_geometry(geom: ScanGeometry, preparation: dict | None, shape, raw_peak=None) -> dict:
    """B, T and q0 for the array reconstructed from the scan (JSON-ready, for a Result's metadata).

    *preparation* is ``data.prepare``'s report (``bin`` and ``peak`` in the binned frame); without one
    *raw_peak* (frame, row, column) is used.  B is evaluated at the peak in raw pixels and scaled by
    the binning; T = 2 pi (B diag(N))^-T for *shape*.
    """
    factors = np.asarray((preparation or {}).get("bin", [1, 1, 1]), dtype=np.float64)
    peak = (preparation or {}).get("peak")
    if peak is not None:
        raw = np.asarray(peak, dtype=np.float64) * factors + (factors - 1) / 2
    elif raw_peak is not None:
        raw = np.asarray(raw_peak, dtype=np.float64)
    else:
        raise CDIError("the Bragg peak is not known: use data.prepare centre: max (or com)")
    b_raw, q0 = detector_matrix(geom, raw, "lab")
    b = b_raw @ np.diag(factors)
    t = voxel_basis(b, shape)
    return {"scan": geom.as_dict(), "peak_raw": raw.tolist(), "bin": factors.tolist(), "shape": list(shape),
            "B_per_nm": b.tolist(), "T_nm": t.tolist(), "q0_per_nm": q0.tolist(),
            "q_norm_per_nm": float(np.linalg.norm(q0)), "voxel_nm": voxel_sizes(t).tolist(), "frame": "lab"}


def linearity_error(geom: ScanGeometry, peak, shape) -> float:
    """Largest |q - (q0 + B n)| over the corners of the array, in units of the smallest q step."""
    b, q0 = detector_matrix(geom, peak, "lab")
    half = np.asarray(shape) // 2
    worst = 0.0
    for corner in np.array(np.meshgrid(*[[-h, h - 1] for h in half], indexing="ij")).reshape(3, -1).T:
        p = np.asarray(peak, dtype=np.float64) + corner
        q = geom.q(p[0], p[1], p[2], "lab", peak_frame=peak[0])
        worst = max(worst, float(np.linalg.norm(q - q0 - b @ corner)))
    return worst / float(np.linalg.norm(b, axis=0).min())


def simulate_scan(geom: ScanGeometry, shape, density, *, peak=None, photons: float = 1e9, seed: int = 0,
                  supersample: int = 2) -> dict:
    """Diffraction of a crystal given in lab coordinates, sampled on the scan's detector grid.

    Parameters
    ----------
    geom : ScanGeometry
    shape : (frames, rows, columns)
        The recorded stack.
    density : callable
        ``density(x, y, z) -> complex`` in lab nm (origin at the crystal's centre); the phase is
        ``Q . u`` of the crystal's displacement.
    peak : (frame, row, column), optional
        Where the Bragg peak falls (default: the stack's centre).
    photons : float
        Expected total counts (before Poisson noise).
    supersample : int
        Sub-voxel samples per axis when rasterising the crystal (smooth facets).

    Returns
    -------
    dict
        ``intensity`` (float32 counts, Poisson), ``object`` (the crystal on the skewed grid), ``T``
        (nm), ``B``, ``q0`` (lab frame, 1/nm) and ``peak``.
    """
    shape = tuple(int(n) for n in shape)
    peak = tuple(n // 2 for n in shape) if peak is None else tuple(peak)
    b, q0 = detector_matrix(geom, peak, "lab")
    t = voxel_basis(b, shape)
    acc = np.zeros(shape, dtype=np.complex128)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    idx = [np.arange(n) - n // 2 for n in shape]
    for o0 in offs:
        for o1 in offs:
            for o2 in offs:
                n0, n1, n2 = np.meshgrid(idx[0] + o0, idx[1] + o1, idx[2] + o2, indexing="ij")
                x = t[0, 0] * n0 + t[0, 1] * n1 + t[0, 2] * n2
                y = t[1, 0] * n0 + t[1, 1] * n1 + t[1, 2] * n2
                z = t[2, 0] * n0 + t[2, 1] * n1 + t[2, 2] * n2
                acc += density(x, y, z)
    obj = acc / supersample ** 3
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj)))
    inten = np.abs(f) ** 2
    # the peak at the requested (frame, row, column): the array centre is q0
    inten = np.roll(inten, [p - n // 2 for p, n in zip(peak, shape)], axis=(0, 1, 2))
    inten *= photons / inten.sum()
    rng = np.random.default_rng(seed)
    counts = rng.poisson(inten).astype(np.float32)
    return {"intensity": counts, "object": obj.astype(np.complex64), "T": t, "B": b, "q0": q0, "peak": peak}


def lab_maps(obj, support, geometry: dict, *, spacing: float | None = None, frame: str = "lab",
             q_axis: int = 2) -> dict:
    """Orthogonalise a reconstruction with the geometry of :func:`array_geometry`.

    Returns ``{"object", "support", "spacing", "origin", "frame", "q_direction", "q_norm"}``: the
    object on an orthogonal grid (axes x, y, z of the lab, or of the crystal frame with Q along
    *q_axis*), and the unit vector of Q in that frame.
    """
    t = np.asarray(geometry["T_nm"], dtype=np.float64)
    q0 = np.asarray(geometry["q0_per_nm"], dtype=np.float64)
    if frame not in ("lab", "crystal"):
        raise CDIError(f"frame must be lab or crystal, got {frame!r}")
    rot = q_aligned(q0, q_axis) if frame == "crystal" else np.eye(3)
    o = orthogonalise(obj, support, t, spacing=spacing, rotation_to_frame=rot, frame=frame)
    q_hat = rot @ q0 / np.linalg.norm(q0)
    return {"object": o.obj, "support": o.support, "spacing": o.spacing, "origin": o.origin.tolist(),
            "frame": frame, "q_direction": q_hat.tolist(), "q_norm": float(np.linalg.norm(q0)),
            "rotation": rot.tolist(), "wavelength_nm": None if "scan" not in geometry else
            1.2398419843320026 / geometry["scan"]["energy_keV"], "theta_deg": math.degrees(
                math.asin(min(1.0, float(np.linalg.norm(q0)) * 1.2398419843320026
                              / geometry["scan"]["energy_keV"] / (4 * math.pi)))) if "scan" in geometry else None}
