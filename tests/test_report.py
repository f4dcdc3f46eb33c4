"""Tests for cdi_plugins.report, plots and the `cdi report` / `cdi compare` commands, and output.png/vti."""

from __future__ import annotations

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.cli import main
from cdi_plugins.io import read_vti
from cdi_plugins.compute.metrics import support_stats
from cdi_plugins.report.plots import figure
from cdi_plugins.physics.postprocess import postprocess
from cdi_plugins.recipe import load_recipe
from cdi_plugins.report import compare, report, summarize

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RECIPE = """\
name: tiny
data:
  simulate: {shape: 32, seed: 0}
seed: 0
threads: 1
steps: "10*ER+40*HIO+20*ER"
geometry: {hkl: [1, 1, 1], lattice_constant: 4.078, energy: 9.0, voxel_size: 10}
output:
  png: "{dataset}.png"
  vti: "{dataset}.vti"
"""


def cdi(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """`cdi run` of a recipe with output.png and output.vti, in a scratch folder."""
    d = tmp_path_factory.mktemp("report")
    (d / "r.yaml").write_text(RECIPE)
    import os
    cwd = os.getcwd()
    os.chdir(d)
    try:
        rc = main(["run", "r.yaml", "--out", "res.cxi", "-q"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return d


def test_run_writes_png_and_vti_next_to_the_result(made):
    assert (made / "tiny.png").read_bytes()[:8] == PNG_MAGIC
    vti = read_vti(made / "tiny.vti")
    assert set(vti["arrays"]) == {"amplitude", "phase", "support", "displacement", "strain"}
    assert vti["spacing"] == (10.0, 10.0, 10.0)
    res = cdi_plugins.load(made / "res.cxi")
    assert res.metadata["geometry"]["hkl"] == [1, 1, 1]
    sup = vti["arrays"]["support"].astype(bool)
    assert 0 < sup.sum() <= res.support.sum()
    assert vti["arrays"]["amplitude"].max() == pytest.approx(1.0)
    # origin: where the cropped box sits in the reconstruction's frame, in nm
    assert all(o % 10.0 == 0 and o >= 0 for o in vti["origin"])


def test_run_summary_lists_every_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "r.yaml").write_text(RECIPE)
    monkeypatch.chdir(tmp_path)
    rc, out, err = cdi(capsys, "run", "r.yaml", "--out", "res.cxi")
    assert rc == 0, err
    assert "wrote res.cxi, tiny.png, tiny.vti" in out


def test_report_command_uses_the_stored_geometry(made, capsys):
    rc, out, err = cdi(capsys, "report", made / "res.cxi", "--png", made / "again.png", "--vti", made / "again.vti")
    assert rc == 0, err
    assert "chi2" in out and "connected component" in out and "oversampling estimate" in out
    assert "(1 1 1) of a = 4.078 A" in out and "strain along Q" in out
    assert (made / "again.png").read_bytes()[:8] == PNG_MAGIC
    a = read_vti(made / "tiny.vti")["arrays"]
    b = read_vti(made / "again.vti")["arrays"]
    np.testing.assert_array_equal(a["strain"], b["strain"])


def test_report_command_writes_the_html_page(made, capsys):
    rc, out, err = cdi(capsys, "report", made / "res.cxi", "--html", made / "page.html")
    assert rc == 0, err
    assert "wrote " + str(made / "page.html") in out
    page = (made / "page.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "mesh3d" in page and "strain" in page
    rc, _, err = cdi(capsys, "report", made / "res.cxi", "--html", made / "res.cxi", "--overwrite")
    assert rc == 2 and "refusing to overwrite the input" in err


def test_report_options_change_the_maps(made, capsys):
    rc, _, err = cdi(capsys, "report", made / "res.cxi", "--vti", made / "v5.vti", "--voxel-size", "5",
                     "--keep-ramp", "--no-crop")
    assert rc == 0, err
    v5 = read_vti(made / "v5.vti")
    assert v5["spacing"] == (5.0, 5.0, 5.0) and v5["shape"] == (32, 32, 32)
    res = cdi_plugins.load(made / "res.cxi")
    p10 = postprocess(res.obj, res.support, res.metadata["geometry"], remove_ramp=False, crop=False)
    ok = p10.strain_valid
    np.testing.assert_allclose(v5["arrays"]["strain"][ok], 2 * p10.strain[ok], rtol=1e-5, atol=1e-9)


def test_report_without_geometry_draws_amplitude_and_phase(made, capsys):
    res = cdi_plugins.load(made / "res.cxi")
    res.metadata.pop("geometry")
    p = report(res)
    assert p.displacement is None and p.strain is None
    assert len(figure(res, p).axes) == 2 * 3 + 2 + 1       # two rows, their colour bars, the chi2 panel
    q = report(res, geometry={"hkl": [2, 0, 0], "lattice_constant": 4.078, "voxel_size": 10})
    assert len(figure(res, q).axes) == 3 * 3 + 3 + 1


@pytest.mark.parametrize("args, words", [
    (["--hkl", "0", "0", "0"], ["--hkl", "0 0 0"]),
    (["--lattice", "-4.078"], ["--lattice", "-4.078"]),
    (["--energy", "2"], ["--energy", "cannot be reached"]),
    (["--energy", "9000"], ["--energy", "eV"]),
    (["--voxel-size", "10", "10"], ["--voxel-size", "3"]),
    (["--voxel-size", "-1"], ["--voxel-size"]),
    (["--q-direction", "5"], ["--q-direction", "0, 1 or 2"]),
    (["--margin", "-1"], ["--margin"]),
])
def test_report_bad_geometry_is_one_clear_line(made, capsys, args, words):
    rc, out, err = cdi(capsys, "report", made / "res.cxi", "--png", made / "never.png", *args)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    for w in words:
        assert w in err, err
    assert not (made / "never.png").exists()


def test_report_never_overwrites_without_asking(made, capsys):
    (made / "keep.png").write_bytes(b"mine")
    rc, _, err = cdi(capsys, "report", made / "res.cxi", "--png", made / "keep.png")
    assert rc == 2 and "exists" in err and (made / "keep.png").read_bytes() == b"mine"
    rc, _, err = cdi(capsys, "report", made / "res.cxi", "--vti", made / "res.cxi", "--overwrite")
    assert rc == 2 and "refusing to overwrite the input" in err


def test_compare_command(made, capsys):
    rc, out, err = cdi(capsys, "compare", made / "res.cxi", made / "res.cxi")
    assert rc == 0, err
    assert "normalised difference after alignment 0.0000" in out
    assert out.count("connected component") == 2


def test_compare_finds_the_twin_and_a_shift(made):
    res = cdi_plugins.load(made / "res.cxi")
    from cdi_plugins.compute.metrics import twin
    moved = np.roll(twin(res.obj), (3, -1, 2), axis=(0, 1, 2))
    c = compare(moved, res)
    assert c["difference"] < 1e-3 and c["twin"]
    with pytest.raises(CDIError, match="different shapes"):
        compare(res.obj[:-1], res.obj)


def test_summarize_judges_a_reconstruction(made):
    res = cdi_plugins.load(made / "res.cxi")
    s = summarize(res)
    assert s["chi2_end"] < 0.1 * s["chi2_start"]
    assert s["components"] == 1 and 0 < s["support_fraction"] < 0.1
    assert s["iterations"] == 70


def test_support_stats_counts_parts_on_the_periodic_array():
    s = np.zeros((16, 16, 16), dtype=bool)
    s[0:3, 5:8, 5:8] = True
    s[14:16, 5:8, 5:8] = True          # the same object, cut by the array edge
    st = support_stats(s)
    assert st["components"] == 1 and st["voxels"] == 5 * 9
    s[8:10, 10:12, 1:3] = True
    st = support_stats(s)
    assert st["components"] == 2 and st["largest"] == pytest.approx(45 / 53)


def test_output_paths_in_the_recipe_are_checked(tmp_path):
    bad = RECIPE.replace('png: "{dataset}.png"', "png: picture.jpg")
    with pytest.raises(CDIError, match=r"r.yaml:9: output.png: .*ending in .png"):
        p = tmp_path / "r.yaml"
        p.write_text(bad)
        load_recipe(str(p))
