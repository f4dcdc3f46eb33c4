"""The physics-aware (atomistic) simulator behind the 3D-CDI-NN training data."""

import math

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.physics.atomistic import (A_AU, Q_111, atomistic_crystal, cut_crystal, fcc_lattice, load_set, make_set,
                                   screw_dislocation)


def test_fcc_lattice_has_four_atoms_per_cell():
    pts = fcc_lattice(-20.0 * A_AU, 20.0 * A_AU - 1e-9)
    assert len(pts) == 4 * 40 ** 3
    d = np.linalg.norm(pts[1:200] - pts[0], axis=1)
    assert d.min() == pytest.approx(A_AU / math.sqrt(2), rel=1e-9)     # nearest-neighbour distance


def test_cut_crystal_respects_every_facet():
    n = np.vstack([np.eye(3), -np.eye(3)])
    atoms = cut_crystal(n, np.full(6, 20.0))
    assert (np.abs(atoms) <= 20.0 + 1e-9).all()
    assert len(atoms) > 4 * (40 / A_AU) ** 3 * 0.8


def test_unstrained_crystal_diffracts_at_the_bragg_position():
    s = atomistic_crystal(1, noise=False, displacement_fn=lambda p: np.zeros_like(p))
    peak = np.unravel_index(np.argmax(s["intensity"]), s["intensity"].shape)
    assert peak == (16, 16, 16)
    assert np.abs(s["phase"][s["support"]]).max() < 1e-6
    assert s["support"].sum() > 300 and s["natoms"] > 10000


def test_uniform_strain_gives_phase_q_dot_u_and_moves_the_peak():
    eps = 4e-3
    s = atomistic_crystal(2, noise=False, displacement_fn=lambda p: np.stack(
        [eps * p[:, 0], np.zeros(len(p)), np.zeros(len(p))], axis=1))
    sup = s["support"]
    # phase = Q.u on the grid (u along Q is the displacement truth)
    dphi = np.angle(np.exp(1j * (s["phase"] - Q_111 * s["displacement"])))
    assert np.abs(dphi[sup]).max() < 0.02
    # a linear phase Q eps x moves the peak by Q eps vox N / 2 pi pixels along Q (axis 0)
    shift = Q_111 * eps * s["voxel_nm"] * 10 * 32 / (2 * math.pi)
    peak = np.unravel_index(np.argmax(s["intensity"]), s["intensity"].shape)
    assert peak[0] == 16 + round(shift) and peak[1:] == (16, 16)


def test_screw_dislocation_winds_by_the_burgers_vector():
    b = 2.88
    ang = np.linspace(0, 2 * math.pi, 101)
    pos = np.stack([np.zeros_like(ang), 5 * np.cos(ang), 5 * np.sin(ang)], axis=1)
    u = screw_dislocation(pos, np.zeros(3), np.array([1.0, 0, 0]), b)
    assert np.abs(u[:, 1:]).max() == 0                      # along the line only
    d = np.diff(u[:, 0])
    d = (d + b / 2) % b - b / 2                             # undo the branch cut
    assert abs(d.sum()) == pytest.approx(b, rel=1e-6)       # one turn = one Burgers vector


def test_same_seed_same_sample_and_truth_fields():
    a = atomistic_crystal([7, 3])
    b = atomistic_crystal([7, 3])
    assert np.array_equal(a["intensity"], b["intensity"])
    assert a["intensity"].dtype == np.float32 and a["amplitude"].max() == pytest.approx(1.0)
    assert {"amplitude", "phase", "support", "displacement", "mask"} <= set(a)
    assert not np.array_equal(a["intensity"], atomistic_crystal([7, 4])["intensity"])


def test_set_is_cached_and_reproducible(tmp_path):
    p = tmp_path / "s.h5"
    make_set(p, 2, seed=5)
    mtime = p.stat().st_mtime_ns
    make_set(p, 2, seed=5)                      # same settings: the cache is kept
    assert p.stat().st_mtime_ns == mtime
    d = load_set(p)
    assert d["input"].shape == (2, 32, 32, 32) and d["input"].max() == pytest.approx(1.0, abs=1e-3)
    assert d["seed"] == 5
    with pytest.raises(CDIError, match="overwrite"):
        make_set(p, 3, seed=5)
    with pytest.raises(CDIError, match="not a training set"):
        (tmp_path / "bad.h5").write_text("nope")
        load_set(tmp_path / "bad.h5")


def test_an_interrupted_set_continues_where_it_stopped_and_gives_the_same_data(tmp_path):
    whole = tmp_path / "whole.h5"
    make_set(whole, 3, seed=6)
    p = tmp_path / "s.h5"

    def stop_after_two(i, n):
        if i == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        make_set(p, 3, seed=6, progress=stop_after_two)
    assert not p.exists() and (tmp_path / "s.h5.partial").exists()
    with pytest.raises(CDIError, match=r"file not found; an interrupted `cdi simulate-set` left s.h5.partial"):
        load_set(p)
    seen = []
    make_set(p, 3, seed=6, progress=lambda i, n: seen.append(i))
    assert seen == [2, 3]                                   # resumed after the two samples it had
    assert not (tmp_path / "s.h5.partial").exists()
    a, b = load_set(p), load_set(whole)
    assert all(np.array_equal(a[k], b[k]) for k in ("input", "amplitude", "phase", "support", "counts"))


def test_a_missing_set_says_how_to_create_it(tmp_path):
    with pytest.raises(CDIError, match=r"nope.h5: file not found; create it with `cdi simulate-set PATH"):
        load_set(tmp_path / "nope.h5")
