"""Diffractometer geometry: from a rocking scan on an area detector to the lab frame.

A rocking scan samples reciprocal space on a skewed grid: frame ``k`` of the
rocking motor and pixel ``(i, j)`` of the detector measure

    q(k, i, j) = R_s(angles_k)^-1 (k_f(i, j) - k_i),    |k| = 2 pi / lambda,

``R_s`` the product of the sample circles (outermost first) and ``k_f`` the
direction of pixel ``(i, j)`` after the detector circles.  This is
xrayutilities' ``QConversion`` convention (its ``Ang2Q.area`` returns the same
vectors; ``tests/test_geometry.py`` holds the two together to 1e-9).  Near the
Bragg peak ``q ~ q0 + B (dk, di, dj)``; :func:`detector_matrix` evaluates the
Jacobian ``B`` (1/nm per frame, row and column step) at the peak itself (the
frame and pixel of the measured maximum), never at a detector corner, and
:func:`voxel_basis` turns it into the direct-space basis of the reconstructed
array, ``T = 2 pi (B diag(N))^-T``: voxel ``n`` of the reconstruction (centred)
sits at ``r = T (n - N/2)`` nm.  :func:`orthogonalise` resamples a complex
object from that skewed grid onto an orthogonal one by interpolating its real
and imaginary parts (amplitude and phase would wrap).

Axes are written as in xrayutilities: ``'x+'``, ``'y-'``, ... a rotation axis
with its sense (right-handed about +x for ``'x+'``), or a direction.  Frames:

``sample``
    xrayutilities' frame: the crystal's coordinates with every sample circle at
    zero (what ``Ang2Q`` returns);
``lab``
    the laboratory with the sample where it was at the peak frame
    (``q_lab = R_s(peak angles) q_sample``; the beam along the incident axis);
``crystal``
    the lab frame rotated so that Q lies along a chosen axis (:func:`q_aligned`).

Lengths: metres for detector distance and pixel size as given by the user
(converted here), nm for direct space, 1/nm for reciprocal space.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["HC_KEV_NM", "Diffractometer", "ScanGeometry", "parse_axis", "rotation", "detector_matrix",
           "voxel_basis", "voxel_sizes", "orthogonalise", "q_aligned", "Orthogonal", "validate_diffractometer"]

HC_KEV_NM = 1.2398419843320026  # h c in keV nm: wavelength (nm) = 1.2398 / E (keV)
_UNIT = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def parse_axis(text) -> np.ndarray:
    """``'y+'`` -> ``[0, 1, 0]``, ``'x-'`` -> ``[-1, 0, 0]`` (xrayutilities' axis notation)."""
    if not isinstance(text, str) or len(text) != 2 or text[0] not in _UNIT or text[1] not in "+-":
        raise CDIError(f"an axis is written x+, x-, y+, y-, z+ or z-, got {text!r}")
    return np.asarray(_UNIT[text[0]]) * (1.0 if text[1] == "+" else -1.0)


def rotation(axis: str, angle_deg: float) -> np.ndarray:
    """The right-handed rotation by *angle_deg* about the signed *axis* (3x3)."""
    u = parse_axis(axis)
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    ux = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return c * np.eye(3) + s * ux + (1 - c) * np.outer(u, u)


@dataclasses.dataclass(frozen=True)
class Diffractometer:
    """Circles of a diffractometer and the detector's pixel directions.

    Parameters
    ----------
    sample_circles : tuple of (name, axis)
        Outermost first, e.g. ``(("Theta", "y+"), ("Chi", "z-"), ("Phi", "y+"))``.
    detector_circles : tuple of (name, axis)
        Outermost first, e.g. ``(("Delta", "y+"), ("Gamma", "x-"))``.
    beam : str
        Direction of the incident beam (``'z+'``).
    pixel_directions : (str, str)
        Directions, at zero detector angles, in which the frame's row index
        (array axis 1 of the stack) and column index (axis 2) increase.
    """

    name: str
    sample_circles: tuple
    detector_circles: tuple
    beam: str = "z+"
    pixel_directions: tuple = ("x+", "y-")

    def as_dict(self) -> dict:
        return {"name": self.name, "sample_circles": [list(c) for c in self.sample_circles],
                "detector_circles": [list(c) for c in self.detector_circles], "beam": self.beam,
                "pixel_directions": list(self.pixel_directions)}


def validate_diffractometer(node, where=lambda key=None: "") -> Diffractometer:
    """A diffractometer written in YAML (``sample_circles: {Mu: x+, Eta: x-, ...}`` or a list of pairs)."""
    if isinstance(node, Diffractometer):
        return node
    if not isinstance(node, dict):
        raise CDIError("diffractometer must be a mapping (sample_circles, detector_circles, beam, "
                       "pixel_directions)", where(None))
    allowed = ("name", "sample_circles", "detector_circles", "beam", "pixel_directions")
    for k in node:
        if k not in allowed:
            raise CDIError(f"unknown key '{k}'; allowed: {', '.join(allowed)}", where(k))
    circles = {}
    for key in ("sample_circles", "detector_circles"):
        v = node.get(key)
        if isinstance(v, dict):
            v = list(v.items())
        if not isinstance(v, (list, tuple)) or not v or not all(
                isinstance(c, (list, tuple)) and len(c) == 2 and isinstance(c[0], str) for c in v):
            raise CDIError(f"{key} must map circle names to axes, outermost first, e.g. {{Theta: y+, Chi: z-}}",
                           where(key))
        try:
            for _, ax in v:
                parse_axis(ax)
        except CDIError as e:
            raise e.at(where(key)) from None
        circles[key] = tuple((str(n), str(a)) for n, a in v)
    names = [n for n, _ in circles["sample_circles"] + circles["detector_circles"]]
    if len(set(names)) != len(names):
        raise CDIError(f"circle names must differ, got {', '.join(names)}", where("detector_circles"))
    beam = node.get("beam", "z+")
    pix = node.get("pixel_directions", ["x+", "y-"])
    try:
        parse_axis(beam)
    except CDIError as e:
        raise e.at(where("beam")) from None
    try:
        if not isinstance(pix, (list, tuple)) or len(pix) != 2:
            raise CDIError(f"pixel_directions must be two axes (rows, columns), e.g. [x+, y-], got {pix!r}")
        a, b = parse_axis(pix[0]), parse_axis(pix[1])
        if abs(a @ b) > 0 or abs(a @ parse_axis(beam)) > 0 or abs(b @ parse_axis(beam)) > 0:
            raise CDIError(f"pixel_directions {list(pix)} must be perpendicular to each other and to the beam {beam}")
    except CDIError as e:
        raise e.at(where("pixel_directions")) from None
    return Diffractometer(str(node.get("name", "generic")), circles["sample_circles"],
                          circles["detector_circles"], beam, tuple(pix))


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """One rocking scan: the diffractometer, the detector and every angle.

    Parameters
    ----------
    diffractometer : Diffractometer
    energy : float
        keV.
    distance : float
        Sample-detector distance, m.
    pixel_size : (float, float)
        m, along rows and columns (of the frames as reconstructed: binned
        pixels are larger).
    beam_centre : (float, float)
        Pixel (row, column) hit by the direct beam with every detector circle
        at zero, in the frames' pixel indices.
    angles : dict
        Every circle's angle (degrees) at frame 0 of the scan.
    rocking : str
        The circle that rocks (a sample circle's name).
    step : float
        Rocking step per frame, degrees (negative for a descending scan).
    """

    diffractometer: Diffractometer
    energy: float
    distance: float
    pixel_size: tuple
    beam_centre: tuple
    angles: dict
    rocking: str
    step: float

    @property
    def wavelength(self) -> float:
        """nm."""
        return HC_KEV_NM / self.energy

    @property
    def k(self) -> float:
        """|k| = 2 pi / lambda, 1/nm."""
        return 2 * math.pi / self.wavelength

    def check(self) -> None:
        names = [n for n, _ in self.diffractometer.sample_circles + self.diffractometer.detector_circles]
        missing = [n for n in names if n not in self.angles]
        if missing:
            raise CDIError(f"no angle for circle(s) {', '.join(missing)} of diffractometer "
                           f"'{self.diffractometer.name}'")
        if self.rocking not in dict(self.diffractometer.sample_circles):
            raise CDIError(f"the rocking motor '{self.rocking}' is not a sample circle of "
                           f"'{self.diffractometer.name}' ({', '.join(n for n, _ in self.diffractometer.sample_circles)})")
        for what, v in (("energy", self.energy), ("distance", self.distance), ("pixel size", min(self.pixel_size))):
            if not v > 0:
                raise CDIError(f"{what} must be positive, got {v!r}")
        if self.step == 0:
            raise CDIError("the rocking step is 0: not a rocking scan")

    def sample_rotation(self, frame: float) -> np.ndarray:
        r = np.eye(3)
        for name, axis in self.diffractometer.sample_circles:
            angle = self.angles[name] + (self.step * frame if name == self.rocking else 0.0)
            r = r @ rotation(axis, angle)
        return r

    def detector_rotation(self) -> np.ndarray:
        r = np.eye(3)
        for name, axis in self.diffractometer.detector_circles:
            r = r @ rotation(axis, self.angles[name])
        return r

    def q_lab_scattering(self, row, col) -> np.ndarray:
        """k_f - k_i (1/nm) of pixel (row, col): vectors along the last axis."""
        d = self.diffractometer
        beam = parse_axis(d.beam)
        e1, e2 = parse_axis(d.pixel_directions[0]), parse_axis(d.pixel_directions[1])
        row = np.asarray(row, dtype=np.float64)[..., None]
        col = np.asarray(col, dtype=np.float64)[..., None]
        pos = (self.distance * beam + (row - self.beam_centre[0]) * self.pixel_size[0] * e1
               + (col - self.beam_centre[1]) * self.pixel_size[1] * e2)
        pos = pos @ self.detector_rotation().T
        kf = self.k * pos / np.linalg.norm(pos, axis=-1, keepdims=True)
        return kf - self.k * beam

    def q(self, frame, row, col, frame_of_reference: str = "sample", peak_frame: float = 0.0) -> np.ndarray:
        """q (1/nm) at (frame, row, col) in the *sample* frame (xrayutilities') or the *lab* frame."""
        frame = np.asarray(frame, dtype=np.float64)
        qs = self.q_lab_scattering(row, col)
        out = np.empty(np.broadcast_shapes(frame.shape, qs.shape[:-1]) + (3,))
        frames, inv = np.unique(np.broadcast_to(frame, out.shape[:-1]), return_inverse=True)
        qsb = np.broadcast_to(qs, out.shape)
        flat = out.reshape(-1, 3)
        for n, f in enumerate(frames):
            sel = inv.reshape(-1) == n
            flat[sel] = qsb.reshape(-1, 3)[sel] @ self.sample_rotation(f)  # R^-1 q = R^T q: row-vector form
        if frame_of_reference == "lab":
            out = out @ self.sample_rotation(peak_frame).T
        return out

    def as_dict(self) -> dict:
        return {"diffractometer": self.diffractometer.as_dict(), "energy_keV": self.energy,
                "distance_m": self.distance, "pixel_size_m": list(self.pixel_size),
                "beam_centre": list(self.beam_centre), "angles_deg": dict(self.angles),
                "rocking": self.rocking, "step_deg": self.step}


def detector_matrix(geom: ScanGeometry, peak, frame_of_reference: str = "lab") -> tuple[np.ndarray, np.ndarray]:
    """``(B, q0)`` at the Bragg peak: ``q ~ q0 + B (dframe, drow, dcol)``, 1/nm.

    *peak* is (frame, row, column) of the measured maximum (or centre of mass)
    in the frames as reconstructed.  ``B`` is the central difference over one
    step of each index, so it is what xrayutilities' ``Ang2Q`` gives for the
    neighbouring frames and pixels.
    """
    geom.check()
    f, r, c = (float(v) for v in peak)
    steps = np.array([[f, r, c]] * 6)
    for i in range(3):
        steps[2 * i, i] += 1
        steps[2 * i + 1, i] -= 1
    q = geom.q(steps[:, 0], steps[:, 1], steps[:, 2], frame_of_reference, peak_frame=f)
    b = np.stack([(q[2 * i] - q[2 * i + 1]) / 2 for i in range(3)], axis=1)
    q0 = geom.q(f, r, c, frame_of_reference, peak_frame=f)
    return b, q0


def voxel_basis(b: np.ndarray, shape) -> np.ndarray:
    """``T = 2 pi (B diag(N))^-T`` (nm): column ``i`` is the direct-space step of array axis ``i``."""
    return 2 * math.pi * np.linalg.inv(np.asarray(b) @ np.diag(np.asarray(shape, dtype=np.float64))).T


def voxel_sizes(t: np.ndarray) -> np.ndarray:
    """Lengths of the direct-space steps along each array axis (nm)."""
    return np.linalg.norm(t, axis=0)


def q_aligned(q_hat, axis: int = 2) -> np.ndarray:
    """A rotation R with ``R q_hat`` along *axis* (the crystal frame: lab rotated by the least angle)."""
    q = np.asarray(q_hat, dtype=np.float64)
    q = q / np.linalg.norm(q)
    e = np.zeros(3)
    e[axis] = 1.0
    v = np.cross(q, e)
    s, c = np.linalg.norm(v), float(q @ e)
    if s < 1e-12:
        return np.eye(3) if c > 0 else rotation("xyz"[(axis + 1) % 3] + "+", 180.0)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * ((1 - c) / s ** 2)


@dataclasses.dataclass
class Orthogonal:
    """An object on an orthogonal grid: ``obj[i, j, l]`` sits at ``origin + spacing * (i, j, l)`` (nm),
    axes x, y, z of the frame (``lab`` or ``crystal``)."""

    obj: np.ndarray
    support: np.ndarray
    spacing: float
    origin: np.ndarray
    frame: str
    rotation: np.ndarray   # from the lab frame to this frame


def orthogonalise(obj, support, t, *, spacing: float | None = None, rotation_to_frame=None, frame: str = "lab",
                  margin: int = 3) -> Orthogonal:
    """Resample *obj* from the skewed grid ``r = T (n - N/2)`` onto an orthogonal grid.

    Real and imaginary parts are interpolated (trilinear); the grid covers the
    support plus *margin* voxels, with *spacing* nm (default: the finest axis
    of ``T``).  *rotation_to_frame* (3x3) rotates lab coordinates into the
    output frame (``q_aligned`` for the crystal frame).
    """
    from scipy import ndimage

    o = np.asarray(obj)
    s = np.asarray(support, dtype=bool)
    if o.ndim != 3 or s.shape != o.shape:
        raise CDIError(f"orthogonalise needs a 3-D object and a support of its shape, got {o.shape} and {s.shape}")
    if not s.any():
        raise CDIError("the support is empty: nothing to orthogonalise")
    t = np.asarray(t, dtype=np.float64)
    rot = np.eye(3) if rotation_to_frame is None else np.asarray(rotation_to_frame, dtype=np.float64)
    m = rot @ t                                   # array index offset -> output-frame nm
    if spacing is None:
        spacing = float(voxel_sizes(t).min())
    if isinstance(spacing, bool) or not isinstance(spacing, numbers.Real) or not spacing > 0:
        raise CDIError(f"the orthogonal grid spacing must be a positive number of nm, got {spacing!r}")
    centre = np.asarray(o.shape, dtype=np.float64) // 2
    idx = np.argwhere(s).astype(np.float64)
    # the support's box, corners of its voxels included
    pts = (idx - centre) @ m.T
    reach = np.abs(m).sum(axis=1) / 2
    lo = pts.min(axis=0) - reach - margin * spacing
    hi = pts.max(axis=0) + reach + margin * spacing
    n = np.ceil((hi - lo) / spacing).astype(int) + 1
    if np.prod(n) > 512 ** 3:
        raise CDIError(f"the orthogonal grid would be {n[0]}x{n[1]}x{n[2]}: choose a larger spacing")
    axes = [lo[i] + spacing * np.arange(n[i]) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1)
    frac = np.linalg.solve(m, grid) + centre[:, None]
    re = ndimage.map_coordinates(o.real.astype(np.float64), frac, order=1, mode="constant", cval=0.0)
    im = ndimage.map_coordinates(o.imag.astype(np.float64), frac, order=1, mode="constant", cval=0.0)
    sup = ndimage.map_coordinates(s.astype(np.float64), frac, order=1, mode="constant", cval=0.0) >= 0.5
    out = (re + 1j * im).reshape(tuple(n)).astype(np.complex64)
    return Orthogonal(out, sup.reshape(tuple(n)), float(spacing), lo, frame, rot)
