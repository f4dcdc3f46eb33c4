"""Tests for cdi_plugins.report.plots and the twin orientation its pictures use: the slices-and-chi^2 picture,
titles that fit, one orientation of the twin, the convergence picture, their files."""

from __future__ import annotations

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.compute.metrics import twin
from cdi_plugins.core.result import Result
from cdi_plugins.physics.postprocess import postprocess
from cdi_plugins.physics.simulate import simulate_crystal
from cdi_plugins.report import report
from cdi_plugins.report.orientation import AS_RECONSTRUCTED, FLIPPED, canonical
from cdi_plugins.report.plots import (convergence_figure, figure, fit_suptitle, iteration_times,
                                      write_convergence_png, write_png)
from tests.helpers import PNG_MAGIC, made  # noqa: F401  (made: fixture)
from tests.test_orientation import GEOMETRY, _support_twin, crystal  # noqa: F401  (crystal: fixture)

def _result(obj, support, **metadata) -> Result:
    history = [{"step": 1 + (i >= 20), "algorithm": "er" if i < 20 else "hio", "iteration": i % 20 + 1,
                "chi2": 1.0 / (i + 1)} for i in range(40)]
    return Result(obj=obj, support=support, history=history, timings=[0.1, 0.2],
                  metadata={"source": "simulated crystal", **metadata})


def _imshow_arrays(fig):
    return [im.get_array() for ax in fig.axes for im in ax.get_images()]


def test_long_title_of_an_averaged_result_fits_the_figure(crystal):
    obj, sup = crystal
    res = _result(obj, sup, averaged_runs=list(range(1, 11)), average_chi2=1.234e-3,
                  source="a very long description of where these data came from, beamline and sample " * 2)
    res.dataset = "a_dataset_with_a_rather_long_name_from_a_multi_dataset_recipe"
    fig = figure(res, postprocess(obj, sup, GEOMETRY))
    fig.canvas.draw()
    title = fig._suptitle
    box = title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    assert box.y0 >= 0 and box.y1 <= fig.bbox.height
    assert "\n" in title.get_text() and "mean of 10 runs" in title.get_text()
    assert "twin: " in title.get_text()


def test_fit_suptitle_shrinks_what_cannot_wrap():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    t = fit_suptitle(fig, "x" * 200, fontsize=11)
    fig.canvas.draw()
    assert t.get_fontsize() < 11 and "\n" in t.get_text()
    assert t.get_window_extent().width <= fig.bbox.width


def test_short_title_is_left_alone(crystal):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4))
    t = fit_suptitle(fig, "short\nand sweet", fontsize=11)
    assert t.get_text() == "short\nand sweet" and t.get_fontsize() == 11


@pytest.mark.parametrize("geometry", [None, GEOMETRY])
def test_an_object_and_its_twin_give_the_same_picture(crystal, geometry):
    obj, sup = crystal
    res, res_twin = _result(obj, sup), _result(twin(obj), _support_twin(sup))
    p = postprocess(res.obj, res.support, geometry)
    q = postprocess(res_twin.obj, res_twin.support, geometry)
    a, b = _imshow_arrays(figure(res, p)), _imshow_arrays(figure(res_twin, q))
    assert len(a) == len(b) == (9 if geometry else 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.ma.getmaskarray(x), np.ma.getmaskarray(y))
        np.testing.assert_allclose(np.ma.filled(x, 0), np.ma.filled(y, 0), atol=1e-5)
    # without canonicalisation they differ: one is the point reflection of the other
    assert not np.allclose(p.amplitude, q.amplitude)
    captions = {canonical(p, obj.shape).info["twin"], canonical(q, obj.shape).info["twin"]}
    assert captions == {AS_RECONSTRUCTED, FLIPPED}


def test_the_caption_says_which_orientation(crystal):
    obj, sup = crystal
    for o, s in ((obj, sup), (twin(obj), _support_twin(sup))):
        p = postprocess(o, s)
        c = canonical(p, o.shape)
        fig = figure(_result(o, s), p)
        assert c.info["twin"] in fig._suptitle.get_text()


SIM = "data: {simulate: {shape: 32, seed: 0, counts: 1.0e8}}\nthreads: 1\n"


def test_report_without_geometry_draws_amplitude_and_phase(made, capsys):
    res = cdi_plugins.load(made / "res.cxi")
    res.metadata.pop("geometry")
    p = report(res)
    assert p.displacement is None and p.strain is None
    assert len(figure(res, p).axes) == 2 * 3 + 2 + 1       # two rows, their colour bars, the chi2 panel
    q = report(res, geometry={"hkl": [2, 0, 0], "lattice_constant": 4.078, "voxel_size": 10})
    assert len(figure(res, q).axes) == 3 * 3 + 3 + 1


def test_iteration_times_spread_each_step_over_its_iterations():
    r = cdi_plugins.run(SIM + 'steps: "10*ER+30*HIO"\n')
    t = iteration_times(r)
    assert len(t) == 40 and np.all(np.diff(t) > 0)
    assert t[9] == pytest.approx(r.timings[0]) and t[-1] == pytest.approx(sum(r.timings))


def test_pictures_are_written_as_png_and_never_overwritten_unasked(made, tmp_path):
    res = cdi_plugins.load(made / "res.cxi")
    p = report(res)
    write_png(tmp_path / "a.png", res, p, title="mine")
    write_convergence_png(tmp_path / "c.png", {"one": res, "two": res})
    assert (tmp_path / "a.png").read_bytes()[:8] == (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    before = (tmp_path / "a.png").read_bytes()
    for write in (lambda: write_png(tmp_path / "a.png", res, p),
                  lambda: write_convergence_png(tmp_path / "a.png", {"one": res})):
        with pytest.raises(CDIError, match="a.png.*exists"):
            write()
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.png", "c.png"]      # no temporary files left
    ax = convergence_figure({"one": res, "two": res}).axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["one", "two"] and ax.get_yscale() == "log"


def test_an_empty_support_cannot_be_drawn(made):
    res = cdi_plugins.load(made / "res.cxi")
    p = report(res)
    p.support[...] = False
    with pytest.raises(CDIError, match="the support is empty"):
        figure(res, p)
