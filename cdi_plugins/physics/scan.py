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
import os

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


# --------------------------------------------------------------------------------------------
# the recipe's data section for raw frames (validated here, next to the code that uses it)

SCAN_KEYS = ("frames", "dark", "white", "beamline", "spec", "scan", "roi", "diffractometer", "detector",
             "metadata", "lab")
_METADATA_KEYS = ("energy", "distance", "angles", "rocking", "step")
_DETECTOR_KEYS = ("pixel_size", "beam_centre")
_LAB_KEYS = ("frame", "spacing", "q_axis")


def _positive(v, what, where):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise CDIError(f"{what} must be a positive number, got {v!r}", where)
    return float(v)


def _pair(v, what, where, positive=True):
    vals = v if isinstance(v, (list, tuple)) else [v, v]
    if len(vals) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
        raise CDIError(f"{what} must be one number or two (rows, columns), got {v!r}", where)
    if positive:
        return [_positive(x, what, where) for x in vals]
    return [float(x) for x in vals]


def _section(data: dict, key: str, allowed, what: str, where) -> dict:
    """``data[key]``, a mapping with only *allowed* keys ({} when absent); *what* names them in the error."""
    node = data.get(key) or {}
    if not isinstance(node, dict):
        raise CDIError(f"data.{key} must be a mapping ({what})", where(key))
    for k in node:
        if k not in allowed:
            raise CDIError(f"unknown key '{k}'; allowed: {', '.join(allowed)}", where(f"{key}.{k}"))
    return node


def validate_scan(data: dict, where, base_dir: str, registry) -> dict | None:
    """The raw-frame keys of a recipe's ``data`` section, or None when it has no ``frames``.

    *where(key)* locates ``data.<key>`` (``where('metadata.energy')`` too); *registry* resolves
    ``beamline``.  Files must exist; the SPEC file is read when the data is loaded.
    """
    present = [k for k in SCAN_KEYS if k in data]
    if "frames" not in data:
        if present:
            raise CDIError(f"data.{present[0]} belongs to a raw scan: give data.frames (a folder of TIFF frames "
                           "or an HDF5 file)", where(present[0]))
        return None

    def path(key):
        v = data.get(key)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            raise CDIError(f"data.{key} must be a file name, got {v!r}", where(key))
        p = v if os.path.isabs(v) else os.path.join(base_dir, v)
        if not os.path.exists(p):
            raise CDIError(f"file not found: {p}", where(key))
        return p

    out = {k: path(k) for k in ("frames", "dark", "white", "spec")}
    name = data.get("beamline", "generic")
    spec = registry.beamline(name, where("beamline"))
    out["beamline"] = spec.name
    out["scan"] = data.get("scan")
    if out["spec"] is not None and out["scan"] is not None and (isinstance(out["scan"], bool)
                                                                or not isinstance(out["scan"], int)):
        raise CDIError(f"data.scan must be the scan number in the metadata file, got {out['scan']!r}", where("scan"))
    roi = data.get("roi", "auto")
    if roi != "auto" and roi is not None:
        if (not isinstance(roi, (list, tuple)) or len(roi) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in roi)
                or roi[1] <= roi[0] or roi[3] <= roi[2]):
            raise CDIError(f"data.roi must be auto or [row0, row1, col0, col1] of the full detector, got {roi!r}",
                           where("roi"))
        roi = [int(v) for v in roi]
    out["roi"] = roi
    diff = data.get("diffractometer") or spec.diffractometer
    if not diff:
        raise CDIError(f"beamline {name} needs data.diffractometer (sample_circles, detector_circles, beam, "
                       "pixel_directions)", where("beamline" if "beamline" in data else "frames"))
    from cdi_plugins.physics.geometry import validate_diffractometer
    out["diffractometer"] = validate_diffractometer(diff, lambda key=None: where(
        f"diffractometer.{key}" if key else "diffractometer"))
    det = dict(spec.detector)
    user_det = _section(data, "detector", _DETECTOR_KEYS, "pixel_size, beam_centre", where)
    det.update(user_det)
    if det.get("pixel_size") is None and data.get("spec") is None:
        raise CDIError("data.detector.pixel_size is needed (m, rows and columns)", where("detector"))
    # without one here, the metadata file must record it (read in load_scan)
    out["pixel_size"] = None if det.get("pixel_size") is None else _pair(
        det["pixel_size"], "data.detector.pixel_size", where("detector.pixel_size"))
    if out["pixel_size"] is not None and max(out["pixel_size"]) > 0.01:
        raise CDIError(f"data.detector.pixel_size is in metres (55 um = 55.0e-6), got {det['pixel_size']!r}",
                       where("detector.pixel_size"))
    # the direct-beam pixel: the recipe's, else what the metadata file records (read in load_scan), else the
    # beamline's default; with none of them the scan cannot be placed in the lab
    out["beam_centre"] = None if det.get("beam_centre") is None else _pair(
        det["beam_centre"], "data.detector.beam_centre", where("detector.beam_centre"), positive=False)
    out["beam_centre_source"] = ("recipe" if "beam_centre" in user_det else
                                 f"beamline {spec.name}" if out["beam_centre"] is not None else None)
    if out["beam_centre"] is None and (spec.name == "generic" or data.get("spec") is None):
        raise CDIError("data.detector.beam_centre is needed ([row, column] of the full detector where the direct "
                       "beam hits with the detector circles at 0)", where("detector"))
    md = _section(data, "metadata", _METADATA_KEYS, "energy, distance, angles, rocking, step", where)
    for k in ("energy", "distance"):
        if k in md:
            _positive(md[k], f"data.metadata.{k}", where(f"metadata.{k}"))
    if "angles" in md and (not isinstance(md["angles"], dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in md["angles"].values())):
        raise CDIError("data.metadata.angles must map circle names to degrees", where("metadata.angles"))
    if "step" in md and (isinstance(md["step"], bool) or not isinstance(md["step"], (int, float)) or md["step"] == 0):
        raise CDIError(f"data.metadata.step must be a non-zero number of degrees, got {md['step']!r}",
                       where("metadata.step"))
    out["metadata"] = dict(md)
    if out["spec"] is None and spec.name != "generic":
        raise CDIError(f"beamline {name} reads its scan from data.spec (and data.scan)", where("beamline"))
    if out["spec"] is None:
        missing = [k for k in _METADATA_KEYS if k not in md]
        if missing:
            raise CDIError(f"without a metadata file give data.metadata.{missing[0]} "
                           f"(all of {', '.join(_METADATA_KEYS)})", where("metadata" if md else "frames"))
    lab = _section(data, "lab", _LAB_KEYS, "frame: lab | crystal, spacing: nm, q_axis: 0 | 1 | 2", where)
    frame = lab.get("frame", "lab")
    if frame not in ("lab", "crystal", "detector"):
        raise CDIError(f"data.lab.frame must be lab, crystal or detector, got {frame!r}", where("lab.frame"))
    spacing = lab.get("spacing")
    if spacing is not None:
        spacing = _positive(spacing, "data.lab.spacing (nm)", where("lab.spacing"))
    q_axis = lab.get("q_axis", 2)
    if q_axis not in (0, 1, 2) or isinstance(q_axis, bool):
        raise CDIError(f"data.lab.q_axis must be 0, 1 or 2, got {q_axis!r}", where("lab.q_axis"))
    out["lab"] = {"frame": frame, "spacing": spacing, "q_axis": q_axis}
    out["where"] = {k: where(k) for k in ("frames", "dark", "white", "spec", "scan", "roi", "metadata")}
    return out


def load_scan(scan: dict, registry, read_frames, read_field) -> tuple[np.ndarray, np.ndarray, ScanGeometry, dict]:
    """Read the frames and the metadata of a validated scan: ``(intensity, mask, geometry, report)``.

    *read_frames(path)* and *read_field(path)* read the stack and a 2-D field (the pipeline passes
    :mod:`cdi_plugins.io`'s readers: this floor does not import them).
    """
    w = scan["where"]
    md: dict = {}
    if scan["spec"] is not None:
        try:
            md = dict(registry.beamline(scan["beamline"]).read_metadata(scan["spec"], scan["scan"]))
        except CDIError as e:
            raise e.at(w["spec"]) from None
    user = scan["metadata"]
    angles = dict(md.get("angles") or {})
    angles.update(user.get("angles") or {})
    values = {k: user.get(k, md.get(k)) for k in ("energy", "distance", "rocking", "step")}
    frames = read_frames(scan["frames"])
    n = frames.shape[0]
    if md.get("frames") is not None and md["frames"] != n:
        raise CDIError(f"the scan has {md['frames']} points but {scan['frames']} holds {n} frames", w["frames"])
    roi = scan["roi"]
    if roi in ("auto", None):
        roi = md.get("roi")
        if roi is not None and (roi[1] - roi[0], roi[3] - roi[2]) != frames.shape[1:]:
            roi = None       # the recorded region does not describe these frames
    dark = read_field(scan["dark"]) if scan["dark"] else None
    white = read_field(scan["white"]) if scan["white"] else None
    where_field = w["dark"] if scan["dark"] else w["white"]
    try:
        intensity, mask, report = correct_frames(frames, dark, white, roi)
    except CDIError as e:
        raise e.at(where_field) from None
    offset = (roi[0], roi[2]) if roi is not None else (0, 0)
    centre, source = scan["beam_centre"], scan.get("beam_centre_source")
    if md.get("beam_centre") is not None and source != "recipe":
        centre, source = [float(v) for v in md["beam_centre"]], "metadata file"
    if centre is None:
        raise CDIError("the direct-beam pixel is not in the metadata file: give data.detector.beam_centre "
                       "([row, column] of the full detector)", w["spec"] if scan["spec"] else w["frames"])
    pixel_size = scan["pixel_size"] or md.get("pixel_size")
    missing = [k for k, v in (("energy", values["energy"]), ("distance", values["distance"]),
                              ("rocking", values["rocking"]), ("step", values["step"]),
                              ("detector.pixel_size", pixel_size)) if v is None]
    if missing:
        raise CDIError(f"{scan['spec']} does not record the {missing[0]}: give data."
                       f"{missing[0] if missing[0].startswith('detector') else 'metadata.' + missing[0]}", w["spec"])
    geom = ScanGeometry(scan["diffractometer"], values["energy"], values["distance"], tuple(pixel_size),
                        (centre[0] - offset[0], centre[1] - offset[1]), angles, values["rocking"], values["step"])
    try:
        geom.check()
    except CDIError as e:
        raise e.at(w["metadata"]) from None
    report.update({"roi": roi, "frames": n, "source": "spec" if scan["spec"] else "recipe",
                   "beam_centre": [float(v) for v in centre], "beam_centre_source": source})
    if md.get("command"):
        report["scan_command"] = md["command"]
    return intensity, mask, geom, report


def measured_geometry(maps: dict, hkl=None, energy: float | None = None):
    """The :class:`~cdi_plugins.physics.postprocess.Geometry` of lab-frame maps: |Q| as measured (the lattice
    constant of *hkl*, default (1 1 1), follows from it), Q's true direction, the orthogonal spacing."""
    from cdi_plugins.physics.postprocess import Geometry

    hkl = tuple(hkl) if hkl is not None else (1, 1, 1)
    a = math.sqrt(sum(v * v for v in hkl)) * 2 * math.pi / (maps["q_norm"] / 10.0)   # Angstrom
    return Geometry(hkl=hkl, lattice_constant=a, energy=energy, voxel_size=(maps["spacing"],) * 3,
                    q_direction=tuple(maps["q_direction"]))
