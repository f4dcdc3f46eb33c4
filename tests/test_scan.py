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
    result = cdi_plugins.run(recipe(str(tmp_path), name), write=False)
    recorded = result.metadata["scan_geometry"]
    assert recorded["scan"]["angles_deg"] == pytest.approx(geom.angles) and recorded["shape"] == [64, 64, 64]
    assert recorded["bin"] == [1, 2, 2] and len(recorded["T_nm"]) == 3
    c = compare(result)
    print(name, c)
    # margins measured over seeds 0-5 of both geometries: IoU 0.92-0.96, extents within one grid step, strain
    # slope 1.02-1.08, rms error 0.14-0.34 of the truth's spread, correlation 0.957-0.991
    assert c["iou"] >= 0.85
    assert all(abs(e) <= max(c["voxel_nm"]) for e in c["extent_error_nm"])    # within one voxel on every lab axis
    assert c["strain_correlation"] >= 0.93                                       # the strain field along the true Q
    assert 0.8 <= c["strain_slope"] <= 1.25
    assert c["strain_rms_error"] <= 0.5 * c["strain_rms_truth"]


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
    err = np.abs(pp.strain[core] - truth[core])
    # truth spans about +-3e-3; the largest errors (interpolation at the cut facet) are 3.5% of that span, rms 0.4%
    assert err.max() < 0.06 * np.ptp(truth[core]) and np.sqrt(np.mean(err ** 2)) < 0.01 * np.ptp(truth[core])
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


def _small_scan(tmp_path):
    """A 16-frame 64 x 64 scan of the same crystal, its SPEC file and 512 x 512 fields, for quick CLI runs."""
    import tifffile
    from tests.forward_helpers import write_fields, write_spec
    geom = geometries()["aps_34idc"]
    sim = simulate_scan(geom, (16, 64, 64), _density(geom, 16, 64), supersample=1)
    (tmp_path / "frames").mkdir()
    for k in range(16):
        tifffile.imwrite(tmp_path / "frames" / f"Sim_S0054_{k:05d}.tif", sim["intensity"][k].astype(np.int32))
    write_spec(str(tmp_path / "s.spec"), geom, 16)
    write_fields(str(tmp_path))
    (tmp_path / "r.yaml").write_text(
        "data:\n  frames: frames\n  beamline: aps_34idc\n  spec: s.spec\n  scan: 54\n  dark: dark.tif\n"
        "  white: whitefield.tif\n  roi: [0, 64, 0, 64]\n  detector: {beam_centre: [32, 32]}\n"
        "  prepare: {centre: max}\nfft: scipy\nthreads: 1\nsteps: 10*ER\n"
        "output: {path: out.cxi, png: out.png, vti: out.vti}\n")


def test_cdi_run_and_report_write_lab_frame_maps_in_nm(tmp_path, monkeypatch, capsys):
    from cdi_plugins.cli import main
    from cdi_plugins.io import read_vti
    _small_scan(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml"]) == 0
    out = capsys.readouterr().out
    assert "scan: 9 keV, detector at 0.5 m, Theta step 0.02 deg" in out and "maps in the lab frame" in out
    md = cdi_plugins.load("out.cxi").metadata["scan_geometry"]
    vti = read_vti("out.vti")
    assert vti["spacing"] == pytest.approx((min(md["voxel_nm"]),) * 3)        # an orthogonal grid in nm
    assert main(["report", "out.cxi", "--vti", "again.vti"]) == 0             # the result carries its geometry
    again = read_vti("again.vti")
    assert again["spacing"] == vti["spacing"] and again["origin"] == pytest.approx(vti["origin"])
    np.testing.assert_allclose(again["arrays"]["strain"], vti["arrays"]["strain"])


@pytest.mark.parametrize("change, words", [
    ("  beamline: aps_34idc\n", ["r.yaml:3: data.beamline", "unknown beamline 'aps_34idd'"]),
    ("  scan: 54\n", ["r.yaml:5: data.scan", "must be the scan number"]),
    ("  roi: [0, 64, 0, 64]\n", ["r.yaml:8: data.roi", "[row0, row1, col0, col1]"]),
])
def test_scan_mistakes_are_one_line_with_their_recipe_line(tmp_path, monkeypatch, capsys, change, words):
    from cdi_plugins.cli import main
    _small_scan(tmp_path)
    bad = {"  beamline: aps_34idc\n": "  beamline: aps_34idd\n", "  scan: 54\n": "  scan: fifty\n",
           "  roi: [0, 64, 0, 64]\n": "  roi: [0, 64, 64, 0]\n"}[change]
    text = (tmp_path / "r.yaml").read_text().replace(change, bad)
    (tmp_path / "r.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    rc = main(["validate", "r.yaml"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words)


def test_a_spec_scan_of_another_length_is_refused_before_computing(tmp_path, monkeypatch, capsys):
    from cdi_plugins.cli import main
    _small_scan(tmp_path)
    (tmp_path / "frames" / "Sim_S0054_00015.tif").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml"]) == 2
    err = capsys.readouterr().err
    assert "the scan has 16 points but" in err and "holds 15 frames" in err
    assert not (tmp_path / "out.cxi").exists()


def test_the_direct_beam_pixel_comes_from_the_recipe_else_the_file_else_the_beamline(tmp_path):
    import tifffile
    from cdi_plugins.core.beamline import BeamlineSpec
    from cdi_plugins.algorithms.beamlines import APS_34IDC_DIFFRACTOMETER
    from cdi_plugins.physics.scan import load_scan, validate_scan

    (tmp_path / "frames").mkdir()
    for k in range(3):
        tifffile.imwrite(tmp_path / "frames" / f"f_{k}.tif", np.ones((8, 8), np.int32))
    (tmp_path / "m.nxs").write_text("stub")
    recorded = {"energy": 9.0, "distance": 0.5, "rocking": "Theta", "step": 0.01, "frames": 3, "roi": [10, 18, 20, 28],
                "angles": {"Theta": 0.0, "Chi": 90.0, "Phi": 0.0, "Delta": 30.0, "Gamma": 10.0}}

    class Reg:
        def __init__(self, md):
            self.spec = BeamlineSpec("fake", "test", APS_34IDC_DIFFRACTOMETER,
                                     {"pixel_size": [55e-6, 55e-6], "beam_centre": [255.5, 255.5]}, lambda p, s: md)

        def beamline(self, name, where=""):
            return self.spec

    def where(key=None):
        return f"r.yaml: data.{key}"

    def centre(detector, md):
        reg = Reg(md)
        data = {"frames": "frames", "beamline": "fake", "spec": "m.nxs", "scan": 1, **detector}
        scan = validate_scan(data, where, str(tmp_path), reg)
        _, _, geom, report = load_scan(scan, reg, lambda p: np.ones((3, 8, 8), np.float32), None)
        return geom.beam_centre, report["beam_centre"], report["beam_centre_source"]

    # the beamline's default, seen from the frames' ROI (rows 10:18, columns 20:28 of the detector)
    assert centre({}, recorded) == ((245.5, 235.5), [255.5, 255.5], "beamline fake")
    assert centre({}, {**recorded, "beam_centre": [300, 200]}) == ((290, 180), [300.0, 200.0], "metadata file")
    assert centre({"detector": {"beam_centre": [12, 21]}}, {**recorded, "beam_centre": [300, 200]}) == (
        (2, 1), [12.0, 21.0], "recipe")


def test_report_puts_an_existing_result_in_the_lab_or_crystal_frame_with_axes_in_nm(tmp_path, monkeypatch, capsys):
    from cdi_plugins.cli import main
    from cdi_plugins.io import read_vti
    from cdi_plugins.report import report
    from cdi_plugins.report.plots import figure
    _small_scan(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "r.yaml"]) == 0
    result = cdi_plugins.load("out.cxi")
    # the picture of a scan's result: axes are lab x, y, z in nm, and its extents are lab coordinates
    processed = report(result)
    labels = {ax.get_xlabel() for ax in figure(result, processed).axes} | {
        ax.get_ylabel() for ax in figure(result, processed).axes}
    assert {"lab x (nm)", "lab y (nm)", "lab z (nm)"} <= labels and not any(lb.startswith("axis ") for lb in labels)
    capsys.readouterr()
    assert main(["report", "out.cxi", "--frame", "crystal", "--q-axis", "2", "--spacing", "12",
                 "--vti", "c.vti", "--png", "c.png"]) == 0
    out = capsys.readouterr().out
    assert "maps on an orthogonal crystal grid of 12 nm, Q along (+0.000, +0.000, +1.000)" in out
    vti = read_vti("c.vti")
    assert vti["spacing"] == pytest.approx((12.0,) * 3) and (tmp_path / "c.png").stat().st_size > 0
    assert main(["report", "out.cxi", "--frame", "detector", "--vti", "d.vti"]) == 0     # the skewed grid, as is
    assert read_vti("d.vti")["arrays"]["amplitude"].shape != vti["arrays"]["amplitude"].shape
    # the skewed grid with every voxel at its lab position: the same crystal as the lab grid's, in nm
    assert main(["report", "out.cxi", "--vti", "lab.vti", "--vts", "skewed.vts"]) == 0
    sk, lab = read_vti("skewed.vts"), read_vti("lab.vti")
    t = np.asarray(result.metadata["scan_geometry"]["T_nm"])
    assert sk["points"][1, 0, 0] - sk["points"][0, 0, 0] == pytest.approx(t[:, 0], rel=1e-5)
    on = sk["points"][sk["arrays"]["support"] > 0]
    grid = np.argwhere(lab["arrays"]["support"] > 0) * lab["spacing"][0] + np.asarray(lab["origin"])
    voxel = max(result.metadata["scan_geometry"]["voxel_nm"])
    np.testing.assert_allclose(on.mean(axis=0), grid.mean(axis=0), atol=voxel)
    np.testing.assert_allclose(np.ptp(on, axis=0), np.ptp(grid, axis=0), atol=1.5 * voxel)


def test_lab_options_on_a_result_without_geometry_are_one_line(tmp_path, monkeypatch, capsys):
    from cdi_plugins.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("data:\n  simulate: {shape: 32}\nfft: scipy\nthreads: 1\n"
                                     "steps: 5*ER\noutput: {path: plain.cxi}\n")
    assert main(["run", "r.yaml"]) == 0
    capsys.readouterr()
    assert main(["report", "plain.cxi", "--frame", "lab", "--png", "x.png"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "plain.cxi carries no scan geometry" in err and not (tmp_path / "x.png").exists()
