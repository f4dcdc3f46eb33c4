"""From a reconstructed object to phase, displacement and strain maps.

:func:`postprocess` runs, in order (each step optional, all on by default):

0. leave out support voxels weaker than ``amplitude_threshold`` (0.1) of the
   strongest: their phase is noise;
1. **remove the phase ramp**: the mean phase gradient inside the support
   (a Bragg peak off the array centre) is estimated without unwrapping, from
   the amplitude-weighted sum of ``obj(r + e_i) * conj(obj(r))``, and removed.
   A uniform strain is also a linear phase, so with the ramp removed the strain
   is relative to the crystal's mean lattice; keep the ramp
   (``remove_ramp: false``) when the array centre is the Bragg position of the
   reference lattice and you want the mean strain too;
2. **centre** the support's centre of mass on the array centre (a circular
   shift, which the periodic reconstruction allows);
3. **zero the phase** at the centre of mass (amplitude-weighted over its 3x3x3
   neighbourhood);
4. **unwrap** the phase inside the support: a quality-guided path (minimum
   spanning tree over neighbouring support voxels, strongest amplitudes
   first) from the centre of mass adds the wrapped phase differences; where
   the phase never jumps by more than pi between neighbours nothing changes;
5. with a Bragg geometry: **displacement** ``u = phi / |Q|`` (Angstrom) and,
   with a voxel size, **strain** along Q, ``d u_Q / d x_Q``, from the phase
   gradient computed wrap-free from neighbouring voxels (central differences
   inside the support, one-sided on its surface);
6. **crop** everything to the support's bounding box plus a margin.

The geometry (a recipe's ``geometry:`` section, or ``cdi report`` options)::

    geometry:
      hkl: [1, 1, 1]             # the reflection
      lattice_constant: 4.078    # Angstrom (cubic lattice)
      energy: 9.0                # keV: checks that the reflection can be reached
      voxel_size: 10.0           # nm, or [d0, d1, d2]: real-space voxel of the reconstruction
      q_direction: 0             # Q along array axis 0 (default), 1 or 2, or a vector [q0, q1, q2]

The direction of Q in the array frame is not in the data: by default it is
taken along axis 0 of the reconstruction, as for data interpolated into a
frame with Q along the first axis.  The array axes are treated as orthogonal
with the given voxel sizes; for data still in the detector frame give the
direction of Q in array coordinates and read the strain as approximate.

Sign convention: ``phi = Q . u``.  The twin reconstruction ``conj(obj(-r))``
fits the same data with ``u -> -u(-r)``; its strain map is the same field,
point-reflected.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.core.params import Param, ParamModel, check_mapping_keys

__all__ = ["Geometry", "GEOMETRY_KEYS", "POSTPROCESS", "validate_geometry", "postprocess", "Processed",
           "remove_phase_ramp", "centre_object", "zero_phase_at_com", "unwrap_phase", "phase_gradient",
           "crop_box"]

HC_KEV_ANGSTROM = 12.398419843320026  # h c in keV * Angstrom: wavelength = 12.398 / E

GEOMETRY_KEYS = ("hkl", "lattice_constant", "energy", "voxel_size", "q_direction")

POSTPROCESS = ParamModel([
    Param("amplitude_threshold", "float", 0.1, "leave support voxels weaker than this fraction of the "
          "maximum amplitude out of the maps (their phase is noise)", low=0, high=1, high_open=True),
    Param("remove_ramp", "bool", True, "remove the linear phase (peak off centre); strain is then "
          "relative to the crystal's mean lattice"),
    Param("centre", "bool", True, "move the support's centre of mass to the array centre"),
    Param("zero_phase", "bool", True, "set the phase at the centre of mass to zero"),
    Param("unwrap", "bool", True, "unwrap the phase inside the support where it jumps by 2 pi"),
    Param("crop", "bool", True, "crop the maps to the support's bounding box plus margin"),
    Param("margin", "int", 4, "voxels kept around the support when cropping", low=0),
])


# --------------------------------------------------------------------------------------------
# geometry


def _number(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise CDIError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def validate_geometry(node, where=lambda key=None: "") -> dict | None:
    """Check a ``geometry`` mapping; return it normalised (or None for none).

    Parameters
    ----------
    node : dict or None
        ``hkl`` (3 integers, not all 0), ``lattice_constant`` (Angstrom, in
        (0, 100]), optional ``energy`` (keV, in (0, 200]; the reflection must be
        reachable: wavelength < 2 d), optional ``voxel_size`` (nm, > 0: one
        number or one per axis) and optional ``q_direction`` (0, 1, 2 or a
        3-vector, not zero; default 0).
    where : callable
        ``where(key)`` gives the location of *key* for error messages.

    Returns
    -------
    dict or None
        ``hkl`` list of int, ``lattice_constant`` float, ``energy`` float or
        None, ``voxel_size`` list of 3 floats or None, ``q_direction`` unit
        3-vector (list of float).

    Raises
    ------
    CDIError
        For a missing or nonsensical value, located at its key.
    """
    if node is None:
        return None
    check_mapping_keys(node, GEOMETRY_KEYS, where,
                       "geometry must be a mapping (hkl: [1, 1, 1], lattice_constant: 4.078, ...)")
    for key in ("hkl", "lattice_constant"):
        if node.get(key) is None:
            raise CDIError(f"geometry needs {key} (e.g. hkl: [1, 1, 1], lattice_constant: 4.078 for gold)",
                           where(None))
    hkl = node["hkl"]
    if isinstance(hkl, str):
        hkl = hkl.replace(",", " ").split()
        try:
            hkl = [int(v) for v in hkl]
        except ValueError:
            raise CDIError(f"hkl must be 3 integers such as [1, 1, 1], got {node['hkl']!r}", where("hkl")) from None
    if (not isinstance(hkl, (list, tuple)) or len(hkl) != 3
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in hkl)):
        raise CDIError(f"hkl must be 3 integers such as [1, 1, 1], got {hkl!r}", where("hkl"))
    hkl = [int(v) for v in hkl]
    if hkl == [0, 0, 0]:
        raise CDIError("hkl = 0 0 0 is the direct beam, not a Bragg reflection", where("hkl"))
    try:
        a = _number(node["lattice_constant"], "lattice_constant")
    except CDIError as e:
        raise e.at(where("lattice_constant")) from None
    if not 0 < a <= 100:
        raise CDIError(f"lattice_constant = {a:g} Angstrom is not a crystal lattice constant: it must be in "
                       "(0, 100] Angstrom (gold: 4.078)", where("lattice_constant"))
    d = a / math.sqrt(sum(v * v for v in hkl))
    energy = node.get("energy")
    if energy is not None:
        try:
            energy = _number(energy, "energy")
        except CDIError as e:
            raise e.at(where("energy")) from None
        if not 0 < energy <= 200:
            raise CDIError(f"energy = {energy:g} keV must be in (0, 200] keV (is it in eV?)", where("energy"))
        lam = HC_KEV_ANGSTROM / energy
        if lam >= 2 * d:
            raise CDIError(f"the ({' '.join(map(str, hkl))}) reflection with lattice constant {a:g} Angstrom "
                           f"cannot be reached at {energy:g} keV: wavelength {lam:.3f} Angstrom is more than "
                           f"2 d = {2 * d:.3f} Angstrom", where("energy"))
    voxel = node.get("voxel_size")
    if voxel is not None:
        vals = voxel if isinstance(voxel, (list, tuple)) else [voxel] * 3
        try:
            if len(vals) != 3:
                raise CDIError(f"voxel_size must be one number or 3 (one per axis), got {len(vals)}")
            vals = [_number(v, "voxel_size") for v in vals]
        except CDIError as e:
            raise e.at(where("voxel_size")) from None
        if not all(0 < v <= 1e4 for v in vals):
            raise CDIError(f"voxel_size must be in (0, 10000] nm on every axis, got {voxel!r}", where("voxel_size"))
        voxel = vals
    qd = node.get("q_direction", 0)
    if isinstance(qd, numbers.Integral) and not isinstance(qd, bool):
        if qd not in (0, 1, 2):
            raise CDIError(f"q_direction must be an axis (0, 1 or 2) or a vector [q0, q1, q2], got {qd!r}",
                           where("q_direction"))
        q = [0.0, 0.0, 0.0]
        q[int(qd)] = 1.0
    else:
        try:
            if not isinstance(qd, (list, tuple)) or len(qd) != 3:
                raise CDIError(f"q_direction must be an axis (0, 1 or 2) or a vector [q0, q1, q2], got {qd!r}")
            q = [_number(v, "q_direction") for v in qd]
        except CDIError as e:
            raise e.at(where("q_direction")) from None
        norm = math.sqrt(sum(v * v for v in q))
        if norm == 0:
            raise CDIError("q_direction [0, 0, 0] has no direction", where("q_direction"))
        q = [v / norm for v in q]
    return {"hkl": hkl, "lattice_constant": a, "energy": energy, "voxel_size": voxel, "q_direction": q}


@dataclasses.dataclass(frozen=True)
class Geometry:
    """A Bragg reflection of a cubic crystal and the reconstruction's voxel.

    Build it with :meth:`from_dict` (which validates).  Lengths: Angstrom for
    the lattice, nm for the voxel.
    """

    hkl: tuple
    lattice_constant: float
    energy: float | None = None
    voxel_size: tuple | None = None
    q_direction: tuple = (1.0, 0.0, 0.0)

    @classmethod
    def from_dict(cls, d: dict, where=lambda key=None: "geometry") -> "Geometry":
        v = validate_geometry(d, where)
        return cls(hkl=tuple(v["hkl"]), lattice_constant=v["lattice_constant"], energy=v["energy"],
                   voxel_size=None if v["voxel_size"] is None else tuple(v["voxel_size"]),
                   q_direction=tuple(v["q_direction"]))

    def as_dict(self) -> dict:
        return {"hkl": list(self.hkl), "lattice_constant": self.lattice_constant, "energy": self.energy,
                "voxel_size": None if self.voxel_size is None else list(self.voxel_size),
                "q_direction": list(self.q_direction)}

    @property
    def d_spacing(self) -> float:
        """Lattice-plane spacing d_hkl (Angstrom)."""
        return self.lattice_constant / math.sqrt(sum(v * v for v in self.hkl))

    @property
    def q_norm(self) -> float:
        """|Q| = 2 pi / d_hkl (1/Angstrom)."""
        return 2.0 * math.pi / self.d_spacing

    @property
    def wavelength(self) -> float | None:
        """X-ray wavelength (Angstrom), if the energy is known."""
        return None if self.energy is None else HC_KEV_ANGSTROM / self.energy

    @property
    def bragg_angle(self) -> float | None:
        """Bragg angle theta (degrees), if the energy is known."""
        lam = self.wavelength
        return None if lam is None else math.degrees(math.asin(lam / (2.0 * self.d_spacing)))

    def describe(self) -> str:
        s = (f"({' '.join(map(str, self.hkl))}) of a = {self.lattice_constant:g} A: d = {self.d_spacing:.4f} A, "
             f"|Q| = {self.q_norm:.4f} 1/A")
        if self.energy is not None:
            s += f", {self.energy:g} keV, 2 theta = {2 * self.bragg_angle:.2f} deg"
        return s


# --------------------------------------------------------------------------------------------
# the operations (NumPy, host arrays; new arrays out, inputs untouched)


def _pairs(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(a[r], a[r + e_axis]) views over every r where both exist (no wrap-around)."""
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[axis] = slice(0, -1)
    hi[axis] = slice(1, None)
    return a[tuple(lo)], a[tuple(hi)]


def _com(weight: np.ndarray) -> np.ndarray:
    from scipy import ndimage
    return np.array(ndimage.center_of_mass(weight.astype(np.float64)))


def remove_phase_ramp(obj, support) -> tuple[np.ndarray, tuple]:
    """Remove the mean phase gradient inside *support*.

    Returns
    -------
    obj : ndarray of complex64
        ``obj * exp(-i g . (r - r_c))``, ``r_c`` the support's centre of mass.
    ramp : tuple of 3 floats
        The removed gradient ``g`` in radians per voxel, per axis.
    """
    o = np.asarray(obj).astype(np.complex64)
    s = np.asarray(support, dtype=bool)
    if not s.any():
        raise CDIError("the support is empty: nothing to post-process")
    g = []
    for axis in range(3):
        o0, o1 = _pairs(o, axis)
        s0, s1 = _pairs(s, axis)
        both = s0 & s1
        g.append(float(np.angle(np.sum((o1 * np.conj(o0))[both], dtype=np.complex128))) if both.any() else 0.0)
    c = _com(s)
    idx = np.indices(o.shape, dtype=np.float64)
    ramp = sum(gi * (idx[i] - c[i]) for i, gi in enumerate(g))
    return (o * np.exp(-1j * ramp)).astype(np.complex64), tuple(g)


def centre_object(obj, support) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Circularly shift so that the support's centre of mass is at ``n // 2``; returns (obj, support, shift)."""
    s = np.asarray(support, dtype=bool)
    if not s.any():
        raise CDIError("the support is empty: nothing to post-process")
    c = _com(s)
    shift = tuple(int(n // 2 - round(ci)) for n, ci in zip(s.shape, c))
    return (np.roll(np.asarray(obj), shift, axis=(0, 1, 2)).astype(np.complex64),
            np.roll(s, shift, axis=(0, 1, 2)), shift)


def _com_voxel(obj, support) -> tuple[int, int, int]:
    """The support voxel nearest to the amplitude-weighted centre of mass."""
    s = np.asarray(support, dtype=bool)
    c = _com(np.abs(obj) * s)
    pts = np.argwhere(s)
    return tuple(int(v) for v in pts[int(np.argmin(((pts - c) ** 2).sum(axis=1)))])


def zero_phase_at_com(obj, support) -> tuple[np.ndarray, float]:
    """Multiply by a constant phase so the phase at the centre of mass is 0; returns (obj, removed phase)."""
    o = np.asarray(obj).astype(np.complex64)
    s = np.asarray(support, dtype=bool)
    c = _com_voxel(o, s)
    sl = tuple(slice(max(ci - 1, 0), ci + 2) for ci in c)
    phi0 = float(np.angle(np.sum((o * s)[sl], dtype=np.complex128)))
    return (o * np.complex64(np.exp(-1j * phi0))).astype(np.complex64), phi0


def unwrap_phase(obj, support, root=None) -> np.ndarray:
    """Unwrapped phase inside *support* (radians, float32, 0 outside).

    The phase is integrated along a minimum spanning tree of the support's
    face-neighbour graph whose edges prefer strong amplitudes (the most reliable
    phases), starting from *root* (default: the centre of mass), by adding the
    wrapped differences ``angle(obj(b) * conj(obj(a)))``.  The result differs
    from ``angle(obj)`` by whole multiples of 2 pi only.  Each connected part of
    the support is unwrapped from its own strongest voxel (the root's part from
    the root).

    Parameters
    ----------
    obj : array_like of complex, 3-D
    support : array_like of bool
    root : tuple of 3 ints, optional
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse import csgraph
    o = np.asarray(obj).astype(np.complex64)
    s = np.asarray(support, dtype=bool)
    out = np.zeros(o.shape, dtype=np.float32)
    if not s.any():
        return out
    node = np.full(o.shape, -1, dtype=np.int64)
    flat = np.flatnonzero(s)
    node.ravel()[flat] = np.arange(flat.size)
    amp = np.abs(o).ravel()[flat].astype(np.float64)
    amp = amp / (amp.max() or 1.0)
    rows, cols, wts = [], [], []
    for axis in range(3):
        n0, n1 = _pairs(node, axis)
        both = (n0 >= 0) & (n1 >= 0)
        a, b = n0[both], n1[both]
        rows.append(a)
        cols.append(b)
        wts.append(2.0 + 1e-6 - (amp[a] + amp[b]))  # > 0: csgraph drops zero-weight edges
    rows, cols, wts = np.concatenate(rows), np.concatenate(cols), np.concatenate(wts)
    n = flat.size
    phase = np.angle(o.ravel()[flat]).astype(np.float64)
    oflat = o.ravel()[flat]
    if rows.size == 0:
        out.ravel()[flat] = phase
        return out
    graph = coo_matrix((wts, (rows, cols)), shape=(n, n)).tocsr()
    tree = csgraph.minimum_spanning_tree(graph)
    ncomp, labels = csgraph.connected_components(tree, directed=False)
    root_node = None if root is None else int(node[tuple(root)])
    if root is not None and root_node < 0:
        raise CDIError(f"the unwrapping root {tuple(root)} is outside the support")
    unwrapped = np.empty(n, dtype=np.float64)
    for comp in range(ncomp):
        members = np.flatnonzero(labels == comp)
        if root_node is not None and labels[root_node] == comp:
            r = root_node
        else:
            r = int(members[np.argmax(amp[members])])
        order, pred = csgraph.breadth_first_order(tree, r, directed=False, return_predecessors=True)
        # the wrapped step from each node's parent, then path sums by pointer jumping (log depth rounds)
        step = np.zeros(n, dtype=np.float64)
        child = order[1:]
        step[child] = np.angle(oflat[child] * np.conj(oflat[pred[child]]))
        anc = np.full(n, -1, dtype=np.int64)
        anc[child] = pred[child]
        anc[r] = -1
        total = step.copy()
        active = order[1:]
        active = active[anc[active] >= 0]
        while active.size:
            parent = anc[active]
            total[active] = total[active] + np.where(parent == r, 0.0, total[parent])
            anc[active] = np.where(parent == r, -1, anc[parent])
            active = active[anc[active] >= 0]
        unwrapped[order] = phase[r] + total[order]
    out.ravel()[flat] = unwrapped.astype(np.float32)
    return out


def phase_gradient(obj, support, *, valid: bool = False):
    """Phase gradient in radians per voxel, shape (3, n0, n1, n2), 0 outside the support.

    Computed wrap-free from neighbouring voxels: ``angle(obj(r+e) conj(obj(r-e))) / 2``
    where both neighbours are in the support, one-sided differences where only
    one is, 0 where neither is (a voxel with no support neighbour along an
    axis has no gradient along it).  Exact for a phase that changes by less
    than pi / 2 per voxel.

    With ``valid=True`` also returns a bool array of the same shape: where the
    gradient along each axis is defined.
    """
    o = np.pad(np.asarray(obj).astype(np.complex64), 1)
    s = np.pad(np.asarray(support, dtype=bool), 1)
    core = (slice(1, -1),) * 3
    out = np.zeros((3,) + tuple(n - 2 for n in o.shape), dtype=np.float32)
    ok = np.zeros(out.shape, dtype=bool)
    for axis in range(3):
        up = np.roll(o, -1, axis=axis)
        dn = np.roll(o, 1, axis=axis)
        s_up = np.roll(s, -1, axis=axis)
        s_dn = np.roll(s, 1, axis=axis)
        central = np.angle(up * np.conj(dn)) / 2.0
        forward = np.angle(up * np.conj(o))
        backward = np.angle(o * np.conj(dn))
        g = np.where(s_up & s_dn, central, np.where(s_up, forward, np.where(s_dn, backward, 0.0)))
        out[axis] = np.where(s, g, 0.0)[core]
        ok[axis] = (s & (s_up | s_dn))[core]
    return (out, ok) if valid else out


def crop_box(support, margin: int = 4) -> tuple[slice, slice, slice]:
    """Slices of the support's bounding box grown by *margin* voxels (clipped to the array)."""
    s = np.asarray(support, dtype=bool)
    if not s.any():
        raise CDIError("the support is empty: nothing to crop to")
    out = []
    for axis, n in enumerate(s.shape):
        idx = np.flatnonzero(s.any(axis=tuple(j for j in range(3) if j != axis)))
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, n)))
    return tuple(out)


@dataclasses.dataclass(eq=False)
class Processed:
    """Maps derived from a reconstruction, ready to look at.

    Attributes
    ----------
    amplitude : ndarray of float32
        ``|obj|`` divided by its maximum (relative units).
    phase : ndarray of float32
        Radians, unwrapped when asked, 0 outside the support.
    support : ndarray of bool
    displacement : ndarray of float32 or None
        ``phase / |Q|`` in Angstrom (needs a geometry).
    strain : ndarray of float32 or None
        Component along Q, dimensionless (needs a geometry with a voxel size);
        0 outside the support and where it is undefined.
    strain_valid : ndarray of bool or None
        Where the strain is defined: support voxels with a support neighbour
        along every axis that Q has a component on (a voxel of a one-voxel-thin
        edge has none).
    voxel_size : tuple of 3 floats or None
        nm per voxel along each axis.
    origin : tuple of 3 ints
        Index, in the centred uncropped array, of the maps' first voxel.
    geometry : Geometry or None
    info : dict
        What was done: ``ramp`` (rad/voxel removed per axis), ``shift``
        (voxels the object moved), ``phase_offset`` (rad removed), ``unwrapped``
        (voxels whose phase changed by a multiple of 2 pi), ``strain_mean`` /
        ``strain_std`` (where the strain is defined) and ``note`` when
        something could not be computed.
    """

    amplitude: np.ndarray
    phase: np.ndarray
    support: np.ndarray
    displacement: np.ndarray | None = None
    strain: np.ndarray | None = None
    strain_valid: np.ndarray | None = None
    voxel_size: tuple | None = None
    origin: tuple = (0, 0, 0)
    geometry: Geometry | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def arrays(self) -> dict:
        """The maps by name (those that exist), as written to a VTK file."""
        out = {"amplitude": self.amplitude, "phase": self.phase, "support": self.support}
        if self.displacement is not None:
            out["displacement"] = self.displacement
        if self.strain is not None:
            out["strain"] = self.strain
        return out


def postprocess(obj, support, geometry: Geometry | dict | None = None, *, amplitude_threshold: float = 0.1,
                remove_ramp: bool = True, centre: bool = True, zero_phase: bool = True, unwrap: bool = True,
                crop: bool = True, margin: int = 4) -> Processed:
    """Turn a reconstructed object into amplitude, phase, displacement and strain maps.

    Parameters
    ----------
    obj : array_like of complex, 3-D
        The reconstruction (centred); never modified.
    support : array_like of bool
    geometry : Geometry or dict, optional
        Bragg geometry (see the module docstring); without it only amplitude
        and phase are computed, without a voxel size no strain.
    amplitude_threshold : float
        Support voxels whose amplitude is below this fraction of the maximum
        are left out (the maps' support is the rest): the phase of a voxel
        with almost no density is noise.  0 keeps the whole support.
    remove_ramp, centre, zero_phase, unwrap, crop : bool
        The steps listed in the module docstring.
    margin : int
        Voxels kept around the support when cropping.

    Returns
    -------
    Processed

    Raises
    ------
    CDIError
        For an empty support, mismatched shapes, non-finite values or an
        invalid geometry.
    """
    o = np.asarray(obj)
    s = np.asarray(support)
    if o.ndim != 3:
        raise CDIError(f"expected a 3-D object, got shape {o.shape}")
    if s.shape != o.shape:
        raise CDIError(f"support shape {s.shape} does not match object shape {o.shape}")
    o = o.astype(np.complex64)
    s = s.astype(bool)
    if not np.isfinite(o).all():
        raise CDIError("the object holds NaN or infinite values")
    if not s.any():
        raise CDIError("the support is empty: nothing to post-process")
    if isinstance(geometry, dict):
        geometry = Geometry.from_dict(geometry)
    info: dict = {}
    if amplitude_threshold > 0:
        a = np.abs(o)
        s = s & (a >= amplitude_threshold * a[s].max())
        if not s.any():
            raise CDIError(f"no support voxel is above amplitude_threshold {amplitude_threshold:g}")
    o = np.where(s, o, 0).astype(np.complex64)
    if remove_ramp:
        o, ramp = remove_phase_ramp(o, s)
        info["ramp"] = list(ramp)
    if centre:
        o, s, shift = centre_object(o, s)
        info["shift"] = list(shift)
    if zero_phase:
        o, phi0 = zero_phase_at_com(o, s)
        info["phase_offset"] = phi0
    wrapped = np.where(s, np.angle(o), 0.0).astype(np.float32)
    if unwrap:
        phase = unwrap_phase(o, s, root=_com_voxel(o, s))
        info["unwrapped"] = int(np.sum(np.abs(phase - wrapped) > 1.0))
    else:
        phase = wrapped
    amp = np.abs(o).astype(np.float32)
    amp /= amp.max() or 1.0
    displacement = strain = valid = None
    voxel = None
    if geometry is not None:
        displacement = (phase / np.float32(geometry.q_norm)).astype(np.float32)
        voxel = geometry.voxel_size
        if voxel is not None:
            g, ok = phase_gradient(o, s, valid=True)               # rad / voxel
            q = np.asarray(geometry.q_direction, dtype=np.float64)
            d_ang = np.asarray(voxel, dtype=np.float64) * 10.0     # nm -> Angstrom
            dphi = sum(q[i] / d_ang[i] * g[i] for i in range(3))   # rad / Angstrom along Q
            valid = s.copy()
            for i in range(3):
                if q[i] != 0:
                    valid &= ok[i]
            strain = np.where(valid, dphi / geometry.q_norm, 0.0).astype(np.float32)
            if valid.any():
                info["strain_mean"] = float(strain[valid].mean())
                info["strain_std"] = float(strain[valid].std())
        else:
            info["note"] = "no strain: geometry.voxel_size is not given"
    else:
        info["note"] = "no displacement or strain: no geometry given"
    origin = (0, 0, 0)
    if crop:
        box = crop_box(s, margin)
        origin = tuple(b.start for b in box)
        amp, phase, s = amp[box], phase[box], s[box]
        displacement = None if displacement is None else displacement[box]
        strain = None if strain is None else strain[box]
        valid = None if valid is None else valid[box]
    return Processed(amplitude=np.ascontiguousarray(amp), phase=np.ascontiguousarray(phase),
                     support=np.ascontiguousarray(s),
                     displacement=None if displacement is None else np.ascontiguousarray(displacement),
                     strain=None if strain is None else np.ascontiguousarray(strain),
                     strain_valid=None if valid is None else np.ascontiguousarray(valid),
                     voxel_size=None if voxel is None else tuple(voxel), origin=origin, geometry=geometry,
                     info=info)
