"""The forward model: a crystal placed in the lab, its rocking scan written as 256 x 256 TIFF frames, reconstructed
with a recipe and orthogonalised, compared with the truth, for 34-ID-C and a six-circle described only in YAML."""

import numpy as np
import pytest
from scipy import ndimage

import cdi_plugins
from cdi_plugins.errors import CDIError
from cdi_plugins.physics.postprocess import Geometry, postprocess
from cdi_plugins.physics.scan import correct_frames, lab_maps, linearity_error, simulate_scan
from tests.forward_helpers import STRAIN_GRADIENT, compare, geometries, recipe, write_scan, _density


@pytest.mark.parametrize("name", ["aps_34idc", "sixc_vertical"])
def test_reconstruction_in_the_lab_frame_matches_the_crystal(name, tmp_path):
    geom = geometries()[name]
    write_scan(str(tmp_path / "frames"), geom)
    assert len(list((tmp_path / "frames").glob("Sim_S0054_*.tif"))) == 64
    result = cdi_plugins.run(recipe(str(tmp_path / "frames")), write=False)
    c = compare(result, geom)
    assert c["iou"] >= 0.8
    assert all(abs(e) <= max(c["voxel_nm"]) for e in c["extent_error_nm"])    # within one voxel on every lab axis
    assert c["strain_correlation"] >= 0.85                                       # the strain field along the true Q
    assert 0.6 <= c["strain_slope"] <= 1.6


@pytest.mark.parametrize("name", ["aps_34idc", "sixc_vertical"])
def test_the_true_object_orthogonalised_gives_the_true_strain(name):
    # no phase retrieval: the geometry chain alone (T, orthogonalisation, Q's direction) must be exact
    geom = geometries()[name]
    sim = simulate_scan(geom, (64, 128, 128), _density(geom, 64, 128), supersample=1)
    maps = lab_maps(sim["object"], np.abs(sim["object"]) > 0.5, {"T_nm": sim["T"], "q0_per_nm": sim["q0"]})
    o, sp, q_hat = maps["object"], maps["spacing"], np.array(maps["q_direction"])
    geo = Geometry(hkl=(1, 1, 1), lattice_constant=2 * np.pi * np.sqrt(3) / (maps["q_norm"] / 10),
                   voxel_size=(sp,) * 3, q_direction=tuple(q_hat))
    pp = postprocess(o, np.abs(o) > 0.5, geo, crop=False, centre=False, remove_ramp=False, zero_phase=False)
    x, y, z = np.meshgrid(*[maps["origin"][i] + sp * np.arange(n) for i, n in enumerate(o.shape)], indexing="ij")
    truth = STRAIN_GRADIENT * (q_hat[0] * x + q_hat[1] * y + q_hat[2] * z)
    core = ndimage.binary_erosion(pp.strain_valid, iterations=2)
    assert np.abs(pp.strain[core] - truth[core]).max() < 1e-4     # truth spans about +-2e-3
    assert np.polyfit(truth[core], pp.strain[core], 1)[0] == pytest.approx(1.0, abs=0.02)


def test_the_linear_model_holds_over_the_reconstructed_array():
    geom = geometries()["aps_34idc"]
    assert linearity_error(geom, (32, 128, 128), (64, 128, 128)) < 2.0     # q steps, at the far corners


def test_dark_and_white_fields_of_the_full_detector_are_cut_to_the_roi():
    frames = np.full((2, 4, 4), 10.0)
    dark = np.ones((8, 8))
    white = np.full((8, 8), 2.0)
    white[5, 6] = 4.0
    white[4, 4] = 0.0
    out, mask, rep = correct_frames(frames, dark, white, roi=[4, 8, 4, 8])
    assert out[0, 1, 2] < out[0, 1, 1]        # the brighter white pixel is divided down
    assert mask[:, 0, 0].all() and mask.sum() == 2
    with pytest.raises(CDIError, match="give data.roi"):
        correct_frames(frames, dark)
    with pytest.raises(CDIError, match="does not cut"):
        correct_frames(frames, dark, roi=[0, 5, 0, 4])
