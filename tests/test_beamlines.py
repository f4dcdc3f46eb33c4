"""Beamlines come in as plugins; the 34-ID-C SPEC reader returns what the file says."""

import os

import numpy as np
import pytest

from cdi_plugins.core import CDIError, Registry, hookimpl
from cdi_plugins.core.beamline import BeamlineSpec

SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "aps_34idc", "example.spec")
needs_spec = pytest.mark.skipif(not os.path.isfile(SPEC), reason="../shared/data/aps_34idc is not here")


def test_builtin_beamlines_are_registered():
    reg = Registry()
    assert {"aps_34idc", "generic"} <= set(reg.beamlines)
    assert reg.beamlines["aps_34idc"].plugin == "beamlines"
    assert reg.beamlines["aps_34idc"].detector["pixel_size"] == [55e-6, 55e-6]


def test_unknown_beamline_names_the_registered_ones():
    with pytest.raises(CDIError, match="unknown beamline 'aps_34idd'.*aps_34idc"):
        Registry().beamline("aps_34idd", "r.yaml:4: data.beamline")


def test_a_broken_beamline_plugin_does_not_take_the_others_down():
    class Bad:
        @hookimpl
        def cdi_register_beamlines(self, register):
            register(BeamlineSpec("Bad Name", "", {}, {}, read_metadata=lambda p, s: {}))

    class Dup:
        @hookimpl
        def cdi_register_beamlines(self, register):
            register(BeamlineSpec("aps_34idc", "mine", {}, {}, read_metadata=lambda p, s: {}))

    reg = Registry()
    bad, dup = reg.register_plugin(Bad(), name="bad"), reg.register_plugin(Dup(), name="dup")
    assert bad.status == "error" and "lower-case" in bad.error
    assert dup.status == "error" and "already registered by plugin 'beamlines'" in dup.error
    assert reg.beamlines["aps_34idc"].plugin == "beamlines"


@needs_spec
def test_spec_reader_returns_scan_54():
    from cdi_plugins.algorithms.beamlines import read_spec_34idc

    md = read_spec_34idc(SPEC, 54)
    # #P0 Delta 32.174, Chi 90, Phi -5, Gamma 12.6346; #P3 camdist 500 (mm); #P4 Energy 9 (keV)
    assert md["energy"] == 9.0
    assert md["distance"] == 0.5
    assert md["angles"]["Delta"] == 32.174 and md["angles"]["Gamma"] == 12.6346
    assert md["angles"]["Chi"] == 90.0 and md["angles"]["Phi"] == -5.0
    # "#S 54  ascan  th -0.279996 0.720004  200 0.25": 201 frames, Theta from the data column
    assert md["rocking"] == "Theta" and md["frames"] == 201
    assert md["rocking_values"][:3] == pytest.approx([-0.2799992, -0.2749968, -0.2699944], abs=1e-7)
    assert md["angles"]["Theta"] == pytest.approx(-0.2799992, abs=1e-7)
    assert md["step"] == pytest.approx(0.005, rel=1e-4)
    assert np.allclose(np.diff(md["rocking_values"]), 0.005, atol=2e-5)
    assert md["roi"] == [0, 256, 0, 256]   # #UIMR5 0 256 0 256


@needs_spec
def test_spec_reader_refuses_a_missing_scan_in_one_line():
    from cdi_plugins.algorithms.beamlines import read_spec_34idc

    with pytest.raises(CDIError, match=r"no scan 9999 \(scans"):
        read_spec_34idc(SPEC, 9999)


def test_cdi_plugins_lists_the_beamlines(capsys):
    from cdi_plugins.cli import main
    assert main(["plugins"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("beamlines")][0]
    assert ": ok" in line and "beamlines: aps_34idc, nexus, generic" in line


def test_34idc_pixels_follow_cohere_which_reads_tiffs_transposed():
    # cohere-beamlines: QConversion(['y+','z-','y+'], ['y+','x-']), pixelorientation ('x+','y-') on frames read
    # with read_tif = imread(...).transpose(): its channel 1 is a column of the frame as this package reads it
    xu = pytest.importorskip("xrayutilities")
    from cdi_plugins.algorithms.beamlines import APS_34IDC_DIFFRACTOMETER, TIMEPIX
    from cdi_plugins.physics.geometry import ScanGeometry, validate_diffractometer
    d = validate_diffractometer(APS_34IDC_DIFFRACTOMETER)
    geom = ScanGeometry(d, 9.0, 0.5, tuple(TIMEPIX["pixel_size"]), (100.0, 140.0),
                        {"Theta": 0.3, "Chi": 90.0, "Phi": -5.0, "Delta": 32.174, "Gamma": 12.6346}, "Theta", 0.005)
    qc = xu.experiment.QConversion(["y+", "z-", "y+"], ["y+", "x-"], [0, 0, 1], en=9000.0)
    qc.init_area("x+", "y-", cch1=140, cch2=100, Nch1=256, Nch2=256, distance=0.5, pwidth1=55e-6, pwidth2=55e-6)
    cohere = np.stack(qc.area(0.3, 90.0, -5.0, 32.174, 12.6346), axis=-1) * 10.0     # [column, row]
    ours = geom.q(0, np.arange(256)[:, None], np.arange(256)[None, :])                 # [row, column]
    assert np.abs(ours - cohere.transpose(1, 0, 2)).max() <= 1e-6 * np.linalg.norm(cohere, axis=-1).max()


# ------------------------------------------------------------------------------------------------
# NeXus metadata (beamline: nexus): the six-circle of the forward model, recorded as a NeXus file would


def _write_nexus(path, geom, frames=3, entry="entry54", moving=("Eta",)):
    import h5py

    with h5py.File(path, "w") as f:
        e = f.create_group(entry)
        e.attrs["NX_class"] = "NXentry"
        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        mono = inst.create_group("monochromator")
        mono.attrs["NX_class"] = "NXmonochromator"
        mono.create_dataset("energy", data=geom.energy * 1000.0).attrs["units"] = "eV"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("distance", data=geom.distance * 1000.0).attrs["units"] = "mm"
        for axis, v in (("y", geom.pixel_size[0]), ("x", geom.pixel_size[1])):
            det.create_dataset(f"{axis}_pixel_size", data=v * 1e6).attrs["units"] = "um"
        det.create_dataset("beam_center_y", data=float(geom.beam_centre[0])).attrs["units"] = "pixel"
        det.create_dataset("beam_center_x", data=float(geom.beam_centre[1])).attrs["units"] = "pixel"
        groups = {"sample": e.create_group("sample"), "detector": det}
        groups["sample"].attrs["NX_class"] = "NXsample"
        for g in groups.values():
            g.create_group("transformations").attrs["NX_class"] = "NXtransformations"
        for name, angle in geom.angles.items():
            where = groups["detector" if name in ("Nu", "Delta") else "sample"]["transformations"]
            vals = angle + geom.step * np.arange(frames) if name in moving else np.float64(angle)
            ds = where.create_dataset(name, data=vals)
            ds.attrs["units"] = "deg"
            ds.attrs["transformation_type"] = "rotation"


def test_the_nexus_reader_returns_what_the_file_records_in_recipe_units(tmp_path):
    from cdi_plugins.algorithms.beamlines import read_nexus
    from tests.forward_helpers import geometries

    geom = geometries()["sixc_vertical"]
    _write_nexus(tmp_path / "scan.nxs", geom)
    md = read_nexus(str(tmp_path / "scan.nxs"), 54)
    assert md["energy"] == pytest.approx(9.0) and md["distance"] == pytest.approx(0.6)
    assert md["pixel_size"] == pytest.approx([55e-6, 55e-6]) and md["beam_centre"] == [128.0, 128.0]
    assert md["angles"] == pytest.approx(geom.angles)
    assert md["rocking"] == "Eta" and md["step"] == pytest.approx(-0.025) and md["frames"] == 3
    assert read_nexus(str(tmp_path / "scan.nxs"), None)["rocking"] == "Eta"   # the only entry


def test_a_nexus_scan_gives_the_geometry_the_yaml_recipe_gives(tmp_path):
    import tifffile
    from cdi_plugins.core.registry import get_registry
    from cdi_plugins.physics.scan import load_scan, validate_scan
    from tests.forward_helpers import geometries, six_circle_vertical

    geom = geometries()["sixc_vertical"]
    _write_nexus(tmp_path / "scan.nxs", geom)
    (tmp_path / "frames").mkdir()
    for k in range(3):
        tifffile.imwrite(tmp_path / "frames" / f"f_{k}.tif", np.ones((256, 256), np.int32))
    data = {"frames": "frames", "beamline": "nexus", "spec": "scan.nxs", "diffractometer": six_circle_vertical()}
    reg = get_registry()
    scan = validate_scan(data, lambda key=None: f"r.yaml: data.{key}", str(tmp_path), reg)
    _, _, got, report = load_scan(scan, reg, lambda p: np.ones((3, 256, 256), np.float32), None)
    for field in ("energy", "distance", "pixel_size", "beam_centre", "rocking", "step"):
        assert getattr(got, field) == pytest.approx(getattr(geom, field)), field
    assert got.angles == pytest.approx(geom.angles)
    assert report["beam_centre_source"] == "metadata file"


@pytest.mark.parametrize("change, words", [
    ({"moving": ("Eta", "Phi")}, "several circles move during the scan (Eta, Phi)"),
    ({"entry": "entry7"}, "no entry for scan 54 (entries: entry7)"),
])
def test_nexus_mistakes_are_one_line_naming_the_file(tmp_path, change, words):
    from cdi_plugins.algorithms.beamlines import read_nexus
    from tests.forward_helpers import geometries

    _write_nexus(tmp_path / "scan.nxs", geometries()["sixc_vertical"], **change)
    with pytest.raises(CDIError) as err:
        read_nexus(str(tmp_path / "scan.nxs"), 54)
    assert str(tmp_path / "scan.nxs") in str(err.value) and words in str(err.value)
    (tmp_path / "text.nxs").write_text("not hdf5")
    with pytest.raises(CDIError, match="not a readable HDF5/NeXus file"):
        read_nexus(str(tmp_path / "text.nxs"), 54)


def test_a_nexus_wavelength_gives_the_energy_and_unknown_units_are_refused(tmp_path):
    import h5py
    from cdi_plugins.algorithms.beamlines import read_nexus
    from tests.forward_helpers import geometries

    path = tmp_path / "scan.nxs"
    _write_nexus(path, geometries()["sixc_vertical"])
    with h5py.File(path, "a") as f:
        del f["entry54/instrument/monochromator/energy"]
        beam = f["entry54/instrument"].create_group("beam")
        beam.create_dataset("incident_wavelength", data=0.137760).attrs["units"] = "nm"
    assert read_nexus(str(path), 54)["energy"] == pytest.approx(9.0, rel=1e-4)
    with h5py.File(path, "a") as f:
        f["entry54/instrument/beam/incident_wavelength"].attrs["units"] = "m"
    with pytest.raises(CDIError, match="incident_wavelength \\(wavelength\\) has units 'm'"):
        read_nexus(str(path), 54)
