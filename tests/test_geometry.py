"""The diffractometer geometry against xrayutilities and the published 34-ID-C figures."""

import numpy as np
import pytest

from cdi_plugins.errors import CDIError
from cdi_plugins.physics.geometry import (Diffractometer, ScanGeometry, detector_matrix, orthogonalise,
                                          q_aligned, validate_diffractometer, voxel_basis, voxel_sizes)

ID34C = Diffractometer("34idc", (("Theta", "y+"), ("Chi", "z-"), ("Phi", "y+")), (("Delta", "y+"), ("Gamma", "x-")),
                       "z+", ("x+", "y-"))
ANGLES = {"Theta": 0.3, "Chi": 90.0, "Phi": -5.0, "Delta": 32.174, "Gamma": 12.6346}


def _scan(**kw):
    args = dict(diffractometer=ID34C, energy=9.0, distance=0.5, pixel_size=(55e-6, 55e-6), beam_centre=(128, 128),
                angles=dict(ANGLES), rocking="Theta", step=0.005)
    args.update(kw)
    return ScanGeometry(**args)


def test_reference_voxel_of_34idc_at_the_detector_centre():
    # E 9 keV, D 0.5 m, delta 32.174, gamma 12.6346, 55 um, 0.005 deg, 256 x 256 x 201 (beamtime notes, section 1)
    b, q0 = detector_matrix(_scan(), (100, 128, 128))
    t = voxel_basis(b, (201, 256, 256))
    rocking, rows, cols = voxel_sizes(t)
    assert (round(rows, 3), round(cols, 3), round(rocking, 3)) == (5.041, 5.013, 15.115)
    assert round(float(np.linalg.norm(q0)), 3) == 26.911
    # T is the dual basis of B diag(N): T^T B diag(N) = 2 pi
    np.testing.assert_allclose(t.T @ b @ np.diag([201, 256, 256]), 2 * np.pi * np.eye(3), atol=1e-9)


def test_binning_and_cropping_change_the_voxel_as_the_array_does():
    # 2x2 binned pixels on a 128 x 128 x 201 array: same field of view, same voxel
    b, _ = detector_matrix(_scan(pixel_size=(110e-6, 110e-6), beam_centre=(64, 64)), (100, 64, 64))
    np.testing.assert_allclose(voxel_sizes(voxel_basis(b, (201, 128, 128)))[1:], [5.041, 5.013], atol=2e-3)
    # half the frames: the rocking voxel doubles
    b, _ = detector_matrix(_scan(), (50, 128, 128))
    assert voxel_sizes(voxel_basis(b, (100, 256, 256)))[0] == pytest.approx(2 * 15.115 * 201 / 200, rel=2e-3)


@pytest.mark.parametrize("frame", [0, 57, 200])
def test_q_matches_xrayutilities_on_every_pixel(frame):
    xu = pytest.importorskip("xrayutilities")
    qc = xu.experiment.QConversion(["y+", "z-", "y+"], ["y+", "x-"], [0, 0, 1], en=9000.0)
    qc.init_area("x+", "y-", cch1=100, cch2=140, Nch1=256, Nch2=256, distance=0.5, pwidth1=55e-6, pwidth2=55e-6)
    theta = ANGLES["Theta"] + 0.005 * frame
    ref = np.stack(qc.area(theta, 90.0, -5.0, 32.174, 12.6346), axis=-1) * 10.0  # 1/A -> 1/nm
    ours = _scan(beam_centre=(100, 140)).q(frame, np.arange(256)[:, None], np.arange(256)[None, :])
    assert np.abs(ours - ref).max() <= 1e-6 * np.linalg.norm(ref, axis=-1).max()


def test_b_at_the_peak_matches_xrayutilities_finite_differences():
    xu = pytest.importorskip("xrayutilities")
    qc = xu.experiment.QConversion(["y+", "z-", "y+"], ["y+", "x-"], [0, 0, 1], en=9000.0)
    qc.init_area("x+", "y-", cch1=128, cch2=128, Nch1=256, Nch2=256, distance=0.5, pwidth1=55e-6, pwidth2=55e-6)

    def q(frame):
        return np.stack(qc.area(0.3 + 0.005 * frame, 90.0, -5.0, 32.174, 12.6346), axis=-1) * 10.0

    peak = (60, 90, 170)   # off the detector centre, as a real peak is
    ref = np.stack([(q(61)[90, 170] - q(59)[90, 170]) / 2, (q(60)[91, 170] - q(60)[89, 170]) / 2,
                    (q(60)[90, 171] - q(60)[90, 169]) / 2], axis=1)
    b, q0 = detector_matrix(_scan(), peak, "sample")
    np.testing.assert_allclose(b, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    np.testing.assert_allclose(q0, q(60)[90, 170], rtol=1e-9)


def test_the_peak_pixel_not_the_corner_sets_the_voxel():
    b_peak, _ = detector_matrix(_scan(), (100, 128, 128))
    b_corner, _ = detector_matrix(_scan(), (100, 0, 0))
    v_peak = voxel_sizes(voxel_basis(b_peak, (201, 256, 256)))
    v_corner = voxel_sizes(voxel_basis(b_corner, (201, 256, 256)))
    assert abs(v_corner[0] / v_peak[0] - 1) > 0.01   # evaluated at the wrong place the rocking voxel is off


def test_lab_and_sample_frames_differ_by_the_sample_rotation_only():
    b_lab, q_lab = detector_matrix(_scan(), (100, 128, 128), "lab")
    b_s, q_s = detector_matrix(_scan(), (100, 128, 128), "sample")
    np.testing.assert_allclose(np.linalg.norm(b_lab, axis=0), np.linalg.norm(b_s, axis=0), rtol=1e-12)
    # in the lab frame Q is k_f - k_i at the peak: it lies in the scattering plane of delta, gamma
    kf_minus_ki = _scan().q_lab_scattering(128, 128)
    np.testing.assert_allclose(q_lab, kf_minus_ki, rtol=1e-12)


def test_orthogonalise_puts_a_skewed_cube_back_in_shape():
    # a grid whose axes are skewed: a crystal that is a 30 nm cube in the lab must come out as one
    t = np.array([[4.0, 1.0, 0.0], [0.0, 4.0, 0.0], [1.5, 0.0, 5.0]]) / 2
    n = np.array([64, 64, 64])
    idx = np.stack(np.meshgrid(*[np.arange(k) - k // 2 for k in n], indexing="ij"), axis=-1)
    r = idx @ t.T
    inside = np.all(np.abs(r) <= 15.0, axis=-1)
    obj = np.where(inside, np.exp(1j * 0.05 * r[..., 0]), 0).astype(np.complex64)
    out = orthogonalise(obj, inside, t, spacing=1.0)
    amp = np.abs(out.obj)
    extent = [np.ptp(np.nonzero(amp.max(axis=tuple(j for j in range(3) if j != i)) > 0.5)[0]) + 1 for i in range(3)]
    assert all(abs(e - 30) <= v for e, v in zip(extent, voxel_sizes(t)))   # within one voxel of 30 nm
    # the phase is interpolated, not wrapped: phase 0.05 x nm along x
    x = out.origin[0] + out.spacing * np.arange(out.obj.shape[0])
    c = tuple(s // 2 for s in out.obj.shape)
    row = np.angle(out.obj[:, c[1], c[2]])
    ok = amp[:, c[1], c[2]] > 0.9
    np.testing.assert_allclose(row[ok], 0.05 * x[ok], atol=0.02)


def test_crystal_frame_puts_q_along_the_chosen_axis():
    q = np.array([0.3, -0.5, 0.8])
    for axis in range(3):
        r = q_aligned(q, axis)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        v = r @ q / np.linalg.norm(q)
        assert v[axis] == pytest.approx(1.0)


def test_yaml_diffractometer_is_checked_with_its_location():
    d = validate_diffractometer({"sample_circles": {"Mu": "x+", "Eta": "x-"}, "detector_circles": {"Nu": "x+"},
                                 "pixel_directions": ["y-", "x+"]})
    assert d.sample_circles == (("Mu", "x+"), ("Eta", "x-"))
    with pytest.raises(CDIError) as e:
        validate_diffractometer({"sample_circles": {"Mu": "q+"}, "detector_circles": {"Nu": "x+"}},
                                lambda key=None: f"r.yaml:3: data.diffractometer.{key}")
    assert "data.diffractometer.sample_circles" in str(e.value) and "q+" in str(e.value)
    with pytest.raises(CDIError, match="perpendicular"):
        validate_diffractometer({"sample_circles": {"Mu": "x+"}, "detector_circles": {"Nu": "x+"},
                                 "pixel_directions": ["x+", "z+"]})
    with pytest.raises(CDIError, match="rocking motor 'Eta'"):
        detector_matrix(_scan(rocking="Eta"), (0, 0, 0))


def test_a_shifted_beam_centre_shifts_q_as_xrayutilities_does():
    xu = pytest.importorskip("xrayutilities")
    rows, cols = np.arange(256)[:, None], np.arange(256)[None, :]
    for centre in ((128, 128), (135.5, 116)):
        qc = xu.experiment.QConversion(["y+", "z-", "y+"], ["y+", "x-"], [0, 0, 1], en=9000.0)
        qc.init_area("x+", "y-", cch1=centre[0], cch2=centre[1], Nch1=256, Nch2=256, distance=0.5,
                     pwidth1=55e-6, pwidth2=55e-6)
        ref = np.stack(qc.area(0.3, 90.0, -5.0, 32.174, 12.6346), axis=-1) * 10.0
        ours = _scan(beam_centre=centre).q(0, rows, cols)
        assert np.abs(ours - ref).max() <= 1e-6 * np.linalg.norm(ref, axis=-1).max()
    # moving the direct beam by (7.5, -12) pixels moves every q by what the pixel (r - 7.5, c + 12) had
    a = _scan(beam_centre=(128, 128)).q(0, 100.0 - 7.5, 90.0 + 12)
    b = _scan(beam_centre=(135.5, 116)).q(0, 100.0, 90.0)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert np.linalg.norm(a - _scan(beam_centre=(128, 128)).q(0, 100.0, 90.0)) > 0.05   # 1/nm: not a no-op
