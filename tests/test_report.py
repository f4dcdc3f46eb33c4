"""Tests for cdi_plugins.report end to end: `cdi run` writing output.png/vti, and the `cdi report` /
`cdi compare` commands."""

from __future__ import annotations

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.cli import main
from cdi_plugins.io import read_vti
from cdi_plugins.physics.postprocess import postprocess
from cdi_plugins.recipe import load_recipe
from tests.helpers import PNG_MAGIC, RECIPE, made  # noqa: F401  (made: fixture)


def cdi(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err

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

def test_output_paths_in_the_recipe_are_checked(tmp_path):
    bad = RECIPE.replace('png: "{dataset}.png"', "png: picture.jpg")
    with pytest.raises(CDIError, match=r"r.yaml:9: output.png: .*ending in .png"):
        p = tmp_path / "r.yaml"
        p.write_text(bad)
        load_recipe(str(p))
