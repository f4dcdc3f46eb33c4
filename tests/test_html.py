"""Tests for cdi_plugins.report.html: one self-contained page with a 3-D crystal, slices, history and facts."""

from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.compute.metrics import twin
from cdi_plugins.physics.postprocess import postprocess
from cdi_plugins.report import html as html_mod
from cdi_plugins.report.html import ISO_LEVEL, figures, write_html
from cdi_plugins.report.orientation import AS_RECONSTRUCTED, FLIPPED
from cdi_plugins.report.plots import write_png

RECIPE = {"data": {"simulate": {"shape": 32, "seed": 1}}, "seed": 0, "threads": 1, "steps": "20*ER"}
GEOMETRY = {"hkl": [1, 1, 1], "lattice_constant": 4.078, "energy": 9.0, "voxel_size": 10}
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def result():
    return cdi_plugins.run(RECIPE)


@pytest.fixture(scope="module")
def processed(result):
    return postprocess(result.obj, result.support)


@pytest.fixture(scope="module")
def page(result, processed, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html(path, result, processed)
    return path, path.read_text(encoding="utf-8")


def _outside_scripts(text: str) -> str:
    """The page without the bodies of its inline scripts (plotly.js holds URLs in strings)."""
    return re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", text, flags=re.S | re.I)


def test_the_page_is_one_self_contained_file(page):
    path, text = page
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    markup = _outside_scripts(text)
    scripts = re.findall(r"<script\b[^>]*>", markup, flags=re.I)
    assert scripts and not any("src" in s.lower() for s in scripts), scripts
    links = re.findall(r"<(?:link|img|iframe|embed|source)\b[^>]*>", markup, flags=re.I)
    assert not links, links
    for attr in re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", markup, flags=re.I):
        assert not re.match(r"(?:https?:)?//", attr), attr
    assert not re.search(r"@import|url\(\s*['\"]?(?:https?:)?//", markup, flags=re.I)
    # plotly.js is inside: several MB of it, and the plots call it
    assert os.path.getsize(path) > 3_000_000
    assert text.count("Plotly.newPlot(") == 3


def test_the_surface_has_the_expected_size_and_a_phase_colour_bar(result, processed, page):
    _, text = page
    figs = figures(result, processed)
    mesh = figs["mesh"]
    sup = figs["processed"].support
    # the isosurface wraps the support: about one vertex per surface voxel face
    inner = np.zeros_like(sup)
    inner[1:-1, 1:-1, 1:-1] = (sup[1:-1, 1:-1, 1:-1] & sup[:-2, 1:-1, 1:-1] & sup[2:, 1:-1, 1:-1]
                               & sup[1:-1, :-2, 1:-1] & sup[1:-1, 2:, 1:-1] & sup[1:-1, 1:-1, :-2]
                               & sup[1:-1, 1:-1, 2:])
    surface_voxels = int((sup & ~inner).sum())
    assert 0.3 < len(mesh["vertices"]) / surface_voxels < 3, (len(mesh["vertices"]), surface_voxels)
    assert 100 < len(mesh["vertices"]) < 20_000 and len(mesh["faces"]) > len(mesh["vertices"])
    assert mesh["faces"].max() < len(mesh["vertices"]) and mesh["step"] == 1
    lo, hi = mesh["vertices"].min(axis=0), mesh["vertices"].max(axis=0)
    origin = np.array(figs["processed"].origin)
    assert np.all(lo >= origin) and np.all(hi <= origin + sup.shape)
    trace = figs["surface"].data[0]
    assert trace.type == "mesh3d" and trace.colorbar.title.text == "phase (rad)"
    assert np.isclose(trace.cmin, -trace.cmax) and trace.cmax > 0
    assert np.all(np.isfinite(mesh["values"])) and np.abs(mesh["values"]).max() > 0
    assert '"type":"mesh3d"' in text and "phase (rad)" in text
    assert f"isosurface at {ISO_LEVEL:g} of the maximum amplitude" in text


def test_with_a_geometry_the_surface_is_coloured_by_strain(result):
    p = postprocess(result.obj, result.support, GEOMETRY)
    figs = figures(result, p)
    assert figs["surface"].data[0].colorbar.title.text == "strain along Q (%)"
    assert figs["rows"] == 3
    names = [row.coloraxis for row in figs["slices"].data]
    assert len(names) == 9 and len(set(names)) == 3


def test_the_page_has_the_slices_the_history_and_the_facts(result, page):
    _, text = page
    for title in ("amplitude, plane axis 0", "phase, plane axis 2"):
        assert title in text
    assert "step 1: er" in text and '"type":"log"' in text
    assert "history, one colour per step" in text  # the figure JSON writes ² as \u00b2
    for fact in ("dataset", "default", "array shape", "32 x 32 x 32", "final chi²", f"{result.chi2:.4e}",
                 "seed (random start)", "1. er: 20 iterations", "voxel size", "unknown: lengths in voxels",
                 "twin: "):
        assert fact in text, fact


def test_an_object_and_its_twin_give_the_same_surface(result, processed):
    sup_twin = twin(result.support.astype(np.complex64)).real > 0.5
    q = postprocess(twin(result.obj), sup_twin)
    a, b = figures(result, processed), figures(result, q)
    assert {a["processed"].info["twin"], b["processed"].info["twin"]} == {AS_RECONSTRUCTED, FLIPPED}
    np.testing.assert_array_equal(a["mesh"]["faces"], b["mesh"]["faces"])
    np.testing.assert_allclose(a["mesh"]["vertices"], b["mesh"]["vertices"], atol=1e-4)
    np.testing.assert_allclose(a["mesh"]["values"], b["mesh"]["values"], atol=1e-4)


def _message(exc: CDIError, path) -> str:
    return str(exc).replace(str(path), "PATH")


def test_refuses_to_overwrite_as_write_png_does(result, processed, tmp_path):
    for name in ("a.html", "a.png"):
        (tmp_path / name).write_text("old")
    with pytest.raises(CDIError) as e_html:
        write_html(tmp_path / "a.html", result, processed)
    with pytest.raises(CDIError) as e_png:
        write_png(tmp_path / "a.png", result, processed)
    assert "exists; pass --overwrite" in str(e_html.value)
    assert _message(e_html.value, tmp_path / "a.html") == _message(e_png.value, tmp_path / "a.png")
    assert (tmp_path / "a.html").read_text() == "old"
    write_html(tmp_path / "a.html", result, processed, overwrite=True)
    assert (tmp_path / "a.html").read_text().startswith("<!DOCTYPE html>")


def test_never_overwrites_a_protected_input(result, processed, tmp_path):
    src = tmp_path / "input.html"
    src.write_text("input")
    link = tmp_path / "link.html"
    link.symlink_to(src)
    for target in (src, link):
        with pytest.raises(CDIError, match="refusing to overwrite the input file") as e_html:
            write_html(target, result, processed, overwrite=True, protect=[src])
        with pytest.raises(CDIError) as e_png:
            write_png(target, result, processed, overwrite=True, protect=[src])
        assert str(e_html.value) == str(e_png.value)
    assert src.read_text() == "input"


def test_the_file_is_written_atomically(result, processed, tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_text("old")

    class Broken(str):
        pass

    def page_that_fails_while_written(*args, **kwargs):
        return Broken("<!DOCTYPE html>")

    written = []
    real_open = open

    def failing_open(path, *args, **kwargs):
        fh = real_open(path, *args, **kwargs)
        written.append(path)

        class Half:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def write(self, text):
                fh.write(text[:5])
                raise OSError(28, "No space left on device")
        return Half()

    monkeypatch.setattr(html_mod, "page", page_that_fails_while_written)
    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(CDIError, match="cannot write the HTML report \\(No space left on device\\)"):
        write_html(target, result, processed, overwrite=True)
    monkeypatch.undo()
    assert written and os.path.basename(written[0]).startswith(".r.html.")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["r.html"]


def test_report_writes_the_html_page(result, tmp_path):
    from cdi_plugins.report import report

    p = report(result, html=tmp_path / "r.html", png=tmp_path / "r.png", geometry=GEOMETRY)
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "strain along Q (%)" in text and p.info["twin"] in text
    assert (tmp_path / "r.png").exists()
    with pytest.raises(CDIError, match="exists"):
        report(result, html=tmp_path / "r.html")


# --------------------------------------------------------------------------------------------
# the page in a real browser


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  # WebGL without a GPU: SwiftShader, which Chromium no longer falls back to by itself
                  "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
                  "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                  "--virtual-time-budget=10000"]


def _screenshot(html_path, tmp_path, extra=()) -> np.ndarray:
    from matplotlib.image import imread

    png = tmp_path / "shot.png"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, *extra, f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={png}", f"file://{html_path}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if not png.exists():
        pytest.fail(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}")
    return (imread(png)[..., :3] * 255).astype(np.int16)


def _surface_region(shot: np.ndarray) -> np.ndarray:
    # the 3-D view: left two thirds of the page, below the title, above "Central slices"
    return shot[150:650, 100:650]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed (apt-get install chromium)")
def test_the_crystal_renders_in_a_headless_browser(page, tmp_path):
    path, _ = page
    shot = _screenshot(path, tmp_path / "webgl")
    assert shot.shape[:2] == (900, 1200)
    region = _surface_region(shot)
    colours = len(np.unique(region.reshape(-1, 3), axis=0))
    saturated = float(np.mean(region.max(axis=-1) - region.min(axis=-1) > 40))
    assert colours > 2000 and saturated > 0.05, (colours, saturated)
    # the check can fail: without WebGL the same region is a flat panel with a message
    blank = _surface_region(_screenshot(path, tmp_path / "nowebgl", ["--disable-webgl", "--disable-3d-apis"]))
    assert len(np.unique(blank.reshape(-1, 3), axis=0)) < 1000
    assert float(np.mean(blank.max(axis=-1) - blank.min(axis=-1) > 40)) < 0.05
