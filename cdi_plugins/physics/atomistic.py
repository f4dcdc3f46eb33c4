"""Physics-aware training data for 3D-CDI-NN: atomistic gold nanocrystals and their Bragg diffraction.

Each sample is built the way the published training set was (Chan et al., Appl. Phys. Rev. 8, 021407,
2021), from atoms rather than from smooth blobs:

1. an fcc gold lattice (a = 4.078 Angstrom) is cut by a random convex polyhedron made of {111}, {100}
   and {110} facets at random distances (octahedra, truncated octahedra, cuboctahedra, elongated and
   irregular shapes), with the crystal's [111] along the Bragg vector Q and a random rotation about Q;
2. every atom gets a displacement u (Angstrom) from physical sources: surface relaxation decaying
   into the bulk from each facet, a smooth low-order field (substrate / ligand strain) and, at random,
   edge/screw dislocations with their analytic isotropic elastic fields (Burgers vector a/2<110>);
3. the atoms are deposited on the voxel grid (cloud-in-cell) with the weight exp(i Q.u) for the
   Au(111) reflection: the complex density rho = A exp(i phi), phi = Q.u;
4. the intensity |F[rho]|^2 is scaled to a random total count (log-uniform, 1e5 to 1e9 by default),
   Poisson noise is drawn, optionally with a background and detector gaps (masked planes).

Arrays are centred like the rest of the package: object centre and Bragg peak at ``n // 2``,
``F = fftshift(fftn(ifftshift(rho)))``.  Q lies along array axis 0.  Sample *i* of a set with seed *s*
uses ``numpy.random.default_rng([s, i])``, so a set is reproducible and can be generated in chunks.
:func:`make_set` caches a set to HDF5.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["A_AU", "Q_111", "fcc_lattice", "random_facets", "cut_crystal", "displacement",
           "edge_dislocation", "screw_dislocation", "deposit", "diffract", "atomistic_crystal", "make_set",
           "load_set", "network_input", "DEFAULTS"]

A_AU = 4.078                                   # gold lattice parameter, Angstrom
Q_111 = 2.0 * math.pi * math.sqrt(3.0) / A_AU  # |Q| of Au(111), 1/Angstrom (2 pi / d111)
NU_AU = 0.44                                   # Poisson ratio of gold

DEFAULTS = dict(
    shape=32,                  # cubic grid
    size_nm=(8.0, 16.0),       # largest extent of the crystal along the grid axes (nm)
    oversampling=(1.9, 2.4),   # grid / largest object extent: the smallest per-axis oversampling
    counts=(1e5, 1e9),         # total photons, log-uniform
    strain_phase=(0.0, 1.5),   # peak |Q.u| of the smooth low-order field (rad)
    surface_relax=0.15,        # max |surface relaxation| at the facet (Angstrom)
    dislocation_prob=0.25,     # chance of one dislocation (0.25 * that of two)
    background_prob=0.3,       # chance of a flat Poisson background
    background=(0.0, 1.0),     # background level, photons per pixel
    gap_prob=0.2,              # chance of a detector gap (masked planes)
    elongation_prob=0.3,
)


# ------------------------------------------------------------------------------------------ geometry

def _rotation_to(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector v onto unit vector target."""
    v = v / np.linalg.norm(v)
    target = target / np.linalg.norm(target)
    c = float(v @ target)
    axis = np.cross(v, target)
    s = float(np.linalg.norm(axis))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        perp = np.cross(v, [1.0, 0, 0] if abs(v[0]) < 0.9 else [0, 1.0, 0])
        return _axis_angle(perp / np.linalg.norm(perp), math.pi)
    return _axis_angle(axis / s, math.atan2(s, c))


def _axis_angle(k: np.ndarray, angle: float) -> np.ndarray:
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def _families():
    n111 = np.array(list(itertools.product((-1.0, 1.0), repeat=3))) / math.sqrt(3.0)
    n100 = np.vstack([np.eye(3), -np.eye(3)])
    n110 = []
    for i, j in itertools.combinations(range(3), 2):
        for si, sj in itertools.product((-1.0, 1.0), repeat=2):
            v = np.zeros(3)
            v[i], v[j] = si, sj
            n110.append(v / math.sqrt(2.0))
    return n111, n100, np.array(n110)


def random_facets(rng: np.random.Generator, elongation_prob: float = 0.3):
    """Facet normals (crystal frame, unit) and distances (relative; {111} at ~1) of a random Wulff-like shape.

    Returns
    -------
    normals : ndarray (26, 3)
    dist : ndarray (26,)
    family : ndarray (26,) of int
        0 for {111}, 1 for {100}, 2 for {110}.
    """
    n111, n100, n110 = _families()
    normals = np.vstack([n111, n100, n110])
    family = np.array([0] * 8 + [1] * 6 + [2] * 12)
    irregular = rng.uniform(0.0, 0.15)
    d111 = 1.0 + rng.uniform(-irregular, irregular, 8)
    t100 = rng.uniform(0.85, 1.9)     # >= sqrt(3): no {100} truncation (octahedron); ~0.87: cuboctahedron
    t110 = rng.uniform(1.0, 1.6)      # >= ~1.22: no {110} facets
    d100 = t100 * (1.0 + rng.uniform(-irregular, irregular, 6))
    d110 = t110 * (1.0 + rng.uniform(-irregular, irregular, 12))
    dist = np.concatenate([d111, d100, d110])
    if rng.random() < elongation_prob:   # stretch along a random <100> or <111> axis
        e = (n100 if rng.random() < 0.5 else n111)[rng.integers(0, 6 if rng.random() < 0.5 else 8) % 6]
        f = rng.uniform(1.2, 1.8)
        dist = dist * (1.0 + (f - 1.0) * np.abs(normals @ e))
    return normals, dist, family


def _vertices(normals: np.ndarray, dist: np.ndarray) -> np.ndarray:
    triples = np.array(list(itertools.combinations(range(len(normals)), 3)))
    mats = normals[triples]
    keep = np.abs(np.linalg.det(mats)) > 1e-9
    v = np.linalg.solve(mats[keep], dist[triples[keep]][..., None])[..., 0]
    inside = (v @ normals.T <= dist + 1e-7).all(axis=1)
    return v[inside]


def fcc_lattice(lo, hi, a: float = A_AU) -> np.ndarray:
    """fcc lattice sites (Angstrom, crystal frame, one at the origin) inside the box [lo, hi] (3-vectors)."""
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (3,))
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (3,))
    r = [np.arange(math.floor(lo[k] / a) - 1, math.ceil(hi[k] / a) + 1, dtype=np.float64) for k in range(3)]
    cells = np.stack(np.meshgrid(*r, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    pts = ((cells + basis[None]) * a).reshape(-1, 3)
    return pts[((pts >= lo) & (pts <= hi)).all(axis=1)]


def cut_crystal(normals: np.ndarray, dist_angstrom: np.ndarray, a: float = A_AU) -> np.ndarray:
    """Atoms (crystal frame, Angstrom) of the fcc crystal inside {x : normals @ x <= dist}."""
    v = _vertices(normals, dist_angstrom)
    pts = fcc_lattice(v.min(0) - 1e-6, v.max(0) + 1e-6, a)
    keep = ((pts.astype(np.float32) @ normals.T.astype(np.float32))
            <= dist_angstrom.astype(np.float32) + 1e-4).all(axis=1)
    return pts[keep]


# ------------------------------------------------------------------------------------------ displacement

def screw_dislocation(pos: np.ndarray, point: np.ndarray, line: np.ndarray, b: float) -> np.ndarray:
    """Displacement (N, 3) of a straight screw dislocation: u = b theta / (2 pi) along the line."""
    t = line / np.linalg.norm(line)
    x_ax = np.cross(t, [1.0, 0, 0] if abs(t[0]) < 0.9 else [0, 1.0, 0])
    x_ax /= np.linalg.norm(x_ax)
    y_ax = np.cross(t, x_ax)
    d = pos - point
    theta = np.arctan2(d @ y_ax, d @ x_ax)
    return (b * theta / (2.0 * math.pi))[:, None] * t[None, :]


def edge_dislocation(pos: np.ndarray, point: np.ndarray, line: np.ndarray, bvec: np.ndarray,
                     nu: float = NU_AU, core: float = 1.0) -> np.ndarray:
    """Displacement (N, 3) of a straight edge dislocation (isotropic elasticity, Hirth & Lothe).

    *bvec* must be perpendicular to *line*; *core* (Angstrom) regularises r -> 0.
    """
    t = line / np.linalg.norm(line)
    b = float(np.linalg.norm(bvec))
    if b == 0:
        return np.zeros_like(pos)
    x_ax = bvec / b
    y_ax = np.cross(t, x_ax)
    d = pos - point
    x, y = d @ x_ax, d @ y_ax
    r2 = x * x + y * y + core * core
    theta = np.arctan2(y, x)
    ux = b / (2 * math.pi) * (theta + x * y / (2 * (1 - nu) * r2))
    uy = -b / (2 * math.pi) * ((1 - 2 * nu) / (4 * (1 - nu)) * np.log(r2 / (b * b))
                               + (x * x - y * y) / (4 * (1 - nu) * r2))
    return ux[:, None] * x_ax[None, :] + uy[:, None] * y_ax[None, :]


def displacement(rng: np.random.Generator, pos: np.ndarray, normals_lab: np.ndarray, dist: np.ndarray,
                 rot: np.ndarray, qhat: np.ndarray, cfg: dict) -> tuple[np.ndarray, dict]:
    """Displacement (N, 3, Angstrom, lab frame) from surface relaxation, smooth strain and dislocations."""
    info = {}
    u = np.zeros_like(pos)
    # 1. surface relaxation / surface stress: each facet family pushes its surface layers in or out,
    #    decaying into the bulk over a few atomic layers
    p32 = pos.astype(np.float32)
    depth = dist.astype(np.float32)[None, :] - p32 @ normals_lab.T.astype(np.float32)   # (N, F) below each facet
    fam_delta = rng.uniform(-cfg["surface_relax"], cfg["surface_relax"], 3)
    lam = rng.uniform(2.0, 8.0)
    fam = np.array([0] * 8 + [1] * 6 + [2] * 12)
    np.maximum(depth, 0.0, out=depth)
    depth *= np.float32(-1.0 / lam)
    w = np.exp(depth, out=depth)
    w *= fam_delta[fam].astype(np.float32)[None, :]
    u += w @ normals_lab.astype(np.float32)
    info["surface_relax"] = fam_delta.tolist()
    # 2. smooth low-order field (substrate / ligand strain): random quadratic displacement plus an
    #    exponentially decaying strain from a contact facet, scaled to a random peak phase
    rmax = float(np.abs(pos).max())
    y = pos / rmax
    coef = rng.normal(size=(3, 6))
    quad = np.stack([y[:, 0] ** 2, y[:, 1] ** 2, y[:, 2] ** 2, y[:, 0] * y[:, 1], y[:, 0] * y[:, 2],
                     y[:, 1] * y[:, 2]], axis=1)
    smooth = quad @ coef.T                                          # (N, 3)
    k = int(rng.integers(0, len(normals_lab)))                      # the facet on the substrate
    nsub = normals_lab[k]
    hsub = np.maximum(dist[k] - pos @ nsub, 0.0) / rmax
    smooth += (rng.normal() * np.exp(-hsub / rng.uniform(0.2, 0.8)))[:, None] * nsub[None, :]
    smooth -= smooth.mean(axis=0)
    peak = float(np.abs(smooth @ qhat).max()) * Q_111
    target = rng.uniform(*cfg["strain_phase"])
    if peak > 0:
        smooth *= target / peak
    u += smooth
    info["strain_phase"] = float(target)
    # 3. dislocations, Burgers vector a/2<110> (crystal frame rotated to the lab)
    ndis = 0
    if rng.random() < cfg["dislocation_prob"]:
        ndis = 2 if rng.random() < 0.25 else 1
    info["dislocations"] = []
    _, _, n110 = _families()
    for _ in range(ndis):
        point = pos[rng.integers(len(pos))] * rng.uniform(0.0, 0.6)
        line = rng.normal(size=3)
        line /= np.linalg.norm(line)
        bvec = rot @ (n110[rng.integers(12)] * (A_AU / math.sqrt(2.0)))   # |b| = a / sqrt(2)
        bs = float(bvec @ line)
        u += screw_dislocation(pos, point, line, bs)
        u += edge_dislocation(pos, point, line, bvec - bs * line)
        info["dislocations"].append({"point": point.tolist(), "line": line.tolist(), "burgers": bvec.tolist()})
    return u, info


# ------------------------------------------------------------------------------------------ grid

def deposit(pos_vox: np.ndarray, weights, shape) -> np.ndarray | list:
    """Cloud-in-cell deposit of weighted points (voxel coordinates) on a grid of *shape*.

    *weights* may be one array (returns one grid) or a list of arrays (returns a list of grids,
    sharing the index computation); complex weights give a complex grid.
    """
    single = not isinstance(weights, (list, tuple))
    wl = [weights] if single else list(weights)
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape))
    base = np.floor(pos_vox).astype(np.int64)
    frac = pos_vox - base
    ok_lo = (base >= 0)
    ok_hi = (base + 1 < np.array(shape))
    outs = [np.zeros(size, dtype=np.complex128 if np.iscomplexobj(w) else np.float64) for w in wl]
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    flat0 = base @ strides
    for corner in itertools.product((0, 1), repeat=3):
        c = np.array(corner)
        w = np.where(c[None, :] == 1, frac, 1.0 - frac).prod(axis=1)
        ok = np.where(c[None, :] == 1, ok_hi, ok_lo).all(axis=1)
        flat = (flat0 + int(c @ strides))[ok]
        wok = w[ok]
        for out, wt in zip(outs, wl):
            ww = wok * (wt[ok] if np.ndim(wt) else wt)
            if np.iscomplexobj(ww):
                out += np.bincount(flat, ww.real, size) + 1j * np.bincount(flat, ww.imag, size)
            else:
                out += np.bincount(flat, ww, size)
    outs = [o.reshape(shape) for o in outs]
    return outs[0] if single else outs


def diffract(rho: np.ndarray, rng: np.random.Generator | None, counts: float, *, noise: bool = True,
             background: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """|F[rho]|^2 scaled to *counts* total (plus a flat background), with Poisson noise.

    Returns the intensity (float32) and the noise-free scaled |F|^2 (float64).
    """
    import scipy.fft
    f = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(rho)))
    ideal = f.real ** 2 + f.imag ** 2
    ideal *= counts / ideal.sum()
    mean = ideal + background
    inten = rng.poisson(mean).astype(np.float32) if noise else mean.astype(np.float32)
    return inten, ideal


def atomistic_crystal(seed=0, *, shape=None, size_nm=None, oversampling=None, counts=None, noise: bool = True,
                      displacement_fn=None, **overrides) -> dict:
    """One simulated gold nanocrystal: its atoms, complex density, diffraction and truth.

    Parameters
    ----------
    seed : int or sequence of int
        Seeds ``numpy.random.default_rng``; the same seed gives the same sample.
    shape : int, optional
        Cubic grid size (default 32).
    size_nm : float or (low, high), optional
        Largest extent of the crystal along the grid axes, nm (default 10-20).
    oversampling : float or (low, high), optional
        ``shape`` divided by the largest object extent in voxels (default 1.9-2.4): the voxel size.
    counts : float or (low, high), optional
        Total photon count; a range is sampled log-uniformly (default 1e5-1e9).
    noise : bool
        Poisson noise (and background / gaps as drawn).
    displacement_fn : callable, optional
        ``f(pos_lab_angstrom) -> u (N, 3)`` replacing the random displacement (for tests).
    **overrides
        Any other key of :data:`DEFAULTS`.

    Returns
    -------
    dict
        ``intensity`` (float32, masked pixels 0), ``mask`` (bool, True = detector gap),
        ``amplitude`` (float32, max 1), ``phase`` (float32, angle of rho), ``support`` (bool),
        ``displacement`` (float32, u along Q in Angstrom, 0 outside), ``rho`` (complex64),
        ``natoms``, ``voxel_nm``, ``counts``, ``info`` (dict of what was drawn).
    """
    cfg = dict(DEFAULTS)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise CDIError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(cfg)}", "atomistic_crystal")
    cfg.update(overrides)
    for key, val in (("shape", shape), ("size_nm", size_nm), ("oversampling", oversampling), ("counts", counts)):
        if val is not None:
            cfg[key] = val
    n = int(cfg["shape"])
    if not 8 <= n <= 256:
        raise CDIError(f"shape {n} must be in [8, 256]", "atomistic_crystal")
    rng = np.random.default_rng(seed)

    def draw(v, log=False):
        if np.isscalar(v):
            return float(v)
        lo, hi = float(v[0]), float(v[1])
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if log else float(rng.uniform(lo, hi))

    normals, rel, family = random_facets(rng, cfg["elongation_prob"])
    qhat = np.array([1.0, 0.0, 0.0])                      # Q along array axis 0
    rot = _axis_angle(qhat, rng.uniform(0, 2 * math.pi)) @ _rotation_to(np.ones(3) / math.sqrt(3), qhat)
    normals_lab = normals @ rot.T
    verts = _vertices(normals_lab, rel)
    ext_rel = float((verts.max(0) - verts.min(0)).max())
    size_a = draw(cfg["size_nm"]) * 10.0
    dist = rel * (size_a / ext_rel)                       # Angstrom
    atoms_c = cut_crystal(normals, dist)
    pos = atoms_c @ rot.T                                 # lab frame
    mid = 0.5 * (pos.max(0) + pos.min(0))
    pos = pos - mid
    dist_lab = dist - normals_lab @ mid                   # planes in the recentred frame
    if displacement_fn is not None:
        u = np.asarray(displacement_fn(pos), dtype=np.float64)
        info = {"displacement": "user"}
    else:
        u, info = displacement(rng, pos, normals_lab, dist_lab, rot, qhat, cfg)
    os_ = draw(cfg["oversampling"])
    extent = float((pos.max(0) - pos.min(0)).max())
    vox = extent / (n / os_)                              # Angstrom per voxel
    pv = pos / vox + n // 2
    phase_atoms = Q_111 * (u @ qhat)
    rho, count, ucount = deposit(pv, [np.exp(1j * phase_atoms), np.ones(len(pv)), u @ qhat], (n, n, n))
    full = np.percentile(count[count > 0], 90)
    support = count > 0.5 * full
    disp = np.where(count > 1e-9, ucount / np.maximum(count, 1e-9), 0.0)
    cts = draw(cfg["counts"], log=True)
    bg = 0.0
    mask = np.zeros((n, n, n), dtype=bool)
    if noise:
        if rng.random() < cfg["background_prob"]:
            bg = draw(cfg["background"])
        if rng.random() < cfg["gap_prob"]:
            ax = int(rng.integers(3))
            start = int(rng.integers(n // 4, 3 * n // 4))
            width = int(rng.integers(1, 3))
            sl = [slice(None)] * 3
            sl[ax] = slice(start, start + width)
            mask[tuple(sl)] = True
    inten, _ = diffract(rho, rng, cts, noise=noise, background=bg)
    inten[mask] = 0.0
    amp = np.abs(rho)
    amp = amp / amp.max()
    info.update({"size_nm": size_a / 10, "oversampling": os_, "background": bg, "rotation": rot.tolist(),
                 "facet_distances_nm": (dist / 10).tolist()})
    return {"intensity": inten, "mask": mask, "amplitude": amp.astype(np.float32),
            "phase": np.angle(rho).astype(np.float32), "support": support,
            "displacement": disp.astype(np.float32), "rho": rho.astype(np.complex64), "natoms": int(len(pos)),
            "voxel_nm": vox / 10.0, "counts": cts, "info": info}


# ------------------------------------------------------------------------------------------ sets

def network_input(intensity: np.ndarray) -> np.ndarray:
    """sqrt(I), clipped at 0, scaled to a maximum of 1 (float32): what the network sees."""
    a = np.sqrt(np.clip(np.asarray(intensity, dtype=np.float32), 0, None))
    m = float(a.max())
    return a / m if m > 0 else a


def make_set(path, n: int, seed: int = 0, *, overwrite: bool = False, progress=None, **settings) -> str:
    """Generate *n* samples with seed *seed* and cache them to HDF5 at *path*.

    Datasets: ``input`` (sqrt(I) max-normalised, float16), ``amplitude`` (float16), ``phase`` (float16),
    ``support`` (bool), ``displacement`` (float16), ``mask`` (bool), ``counts`` (float64); attributes
    ``seed``, ``n`` and ``settings`` (JSON).  Samples go to ``<path>.partial``, renamed to *path* when all
    are written; an interrupted run leaves the partial file and the next call with the same settings
    continues where it stopped.  If *path* exists with the same seed, size and settings it is kept (the
    cache), otherwise *overwrite* is required.
    """
    import json

    import h5py
    path = os.path.expanduser(os.fspath(path))
    cfg = dict(DEFAULTS)
    cfg.update(settings)
    meta = json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cfg.items())})
    if os.path.exists(path):
        try:
            with h5py.File(path, "r") as f:
                same = (int(f.attrs["seed"]) == seed and int(f.attrs["n"]) == n and f.attrs["settings"] == meta)
        except Exception:
            same = False
        if same:
            return path
        if not overwrite:
            raise CDIError("exists with other settings; pass overwrite=True (--overwrite) to replace it", path)
    # samples are written to <path>.partial, which an interrupted run leaves behind and the next run with
    # the same settings continues (sample i depends only on (seed, i), so the result is the same)
    partial = path + ".partial"
    done = _resumable(partial, seed, n, meta)
    s = int(cfg["shape"])
    with h5py.File(partial, "a" if done else "w") as f:
        if not done:
            f.attrs["seed"], f.attrs["n"], f.attrs["settings"], f.attrs["done"] = seed, n, meta, 0
            for k, dt in (("input", "f2"), ("amplitude", "f2"), ("phase", "f2"), ("displacement", "f2"),
                          ("support", "bool"), ("mask", "bool")):
                f.create_dataset(k, (n, s, s, s), dtype=dt, chunks=(1, s, s, s))
            f.create_dataset("counts", (n,), dtype="f8")
        if progress is not None and done:
            progress(done, n)
        for i in range(done, n):
            smp = atomistic_crystal([seed, i], **cfg)
            f["input"][i] = network_input(smp["intensity"])
            for k in ("amplitude", "phase", "displacement", "support", "mask"):
                f[k][i] = smp[k]
            f["counts"][i] = smp["counts"]
            f.attrs["done"] = i + 1
            f.flush()
            if progress is not None:
                progress(i + 1, n)
        del f.attrs["done"]
    os.replace(partial, path)
    return path


def _resumable(partial: str, seed: int, n: int, meta: str) -> int:
    """Samples already in *partial* from an interrupted run with the same settings (0: start afresh)."""
    import h5py
    if not os.path.exists(partial):
        return 0
    try:
        with h5py.File(partial, "r") as f:
            if int(f.attrs["seed"]) == seed and int(f.attrs["n"]) == n and f.attrs["settings"] == meta:
                return int(f.attrs["done"])
    except Exception:  # killed while HDF5 was writing its metadata: not readable, start again
        pass
    os.remove(partial)
    return 0


def load_set(path, limit: int | None = None) -> dict:
    """Read a set written by :func:`make_set` into memory (float32 / bool arrays)."""
    import h5py
    p = os.path.expanduser(os.fspath(path))
    if not os.path.exists(p):
        hint = (f"an interrupted `cdi simulate-set` left {os.path.basename(p)}.partial: rerun it to finish"
                if os.path.exists(p + ".partial") else "create it with `cdi simulate-set PATH --n N --seed S`")
        raise CDIError(f"file not found; {hint}", os.fspath(path))
    try:
        with h5py.File(p, "r") as f:
            sl = slice(0, limit)
            out = {k: f[k][sl] for k in ("input", "amplitude", "phase", "support", "mask", "counts")}
            out["seed"], out["settings"] = int(f.attrs["seed"]), str(f.attrs["settings"])
    except (OSError, KeyError) as e:
        raise CDIError(f"not a training set written by make_set / cdi simulate-set ({e})", os.fspath(path)) from None
    for k in ("input", "amplitude", "phase"):
        out[k] = out[k].astype(np.float32)
    return out
