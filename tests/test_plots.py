"""Tests for cdi_plugins.report.plots and orientation: titles that fit, one orientation of the twin."""

from __future__ import annotations

import numpy as np
import pytest

from cdi_plugins.compute.metrics import twin
from cdi_plugins.core.result import Result
from cdi_plugins.physics.postprocess import postprocess
from cdi_plugins.physics.simulate import simulate_crystal
from cdi_plugins.report.orientation import AS_RECONSTRUCTED, FLIPPED, canonical, orientation_statistic
from cdi_plugins.report.plots import figure, fit_suptitle

GEOMETRY = {"hkl": [1, 1, 1], "lattice_constant": 4.078, "energy": 9.0, "voxel_size": 10}


def _result(obj, support, **metadata) -> Result:
    history = [{"step": 1 + (i >= 20), "algorithm": "er" if i < 20 else "hio", "iteration": i % 20 + 1,
                "chi2": 1.0 / (i + 1)} for i in range(40)]
    return Result(obj=obj, support=support, history=history, timings=[0.1, 0.2],
                  metadata={"source": "simulated crystal", **metadata})


@pytest.fixture(scope="module")
def crystal():
    d = simulate_crystal(32, seed=1, noise=False)
    obj = d["truth"] / np.abs(d["truth"]).max()
    return obj, np.abs(obj) > 0.05


def _support_twin(support):
    return twin(support.astype(np.complex64)).real > 0.5


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


def test_canonical_is_idempotent_and_leaves_its_input_alone(crystal):
    obj, sup = crystal
    p = postprocess(twin(obj), _support_twin(sup))
    before = p.amplitude.copy()
    c = canonical(p, obj.shape)
    assert canonical(c, obj.shape) is c
    np.testing.assert_array_equal(p.amplitude, before)
    assert "twin" not in p.info
    value, rule, details = orientation_statistic(c)
    assert value > 0 and rule == "phase curvature" and len(details["twin_curvatures"]) == 3


def test_flipping_negates_the_statistic_and_moves_the_origin(crystal):
    obj, sup = crystal
    p = postprocess(obj, sup, GEOMETRY)
    q = postprocess(twin(obj), _support_twin(sup), GEOMETRY)
    vp, vq = orientation_statistic(p)[0], orientation_statistic(q)[0]
    assert vp == pytest.approx(-vq, rel=1e-4)
    flipped = canonical(q if vq < 0 else p, obj.shape)
    kept = canonical(p if vq < 0 else q, obj.shape)
    assert flipped.origin == kept.origin
    np.testing.assert_allclose(flipped.strain, kept.strain, atol=1e-7)
    np.testing.assert_allclose(flipped.displacement, kept.displacement, atol=1e-5)


def test_a_flat_centrosymmetric_object_stays_as_reconstructed():
    obj = np.zeros((16, 16, 16), np.complex64)
    obj[5:11, 5:11, 5:11] = 1.0
    p = postprocess(obj, np.abs(obj) > 0)
    c = canonical(p, obj.shape)
    assert c.info["twin"] == AS_RECONSTRUCTED and c.info["twin_rule"] == "none"
