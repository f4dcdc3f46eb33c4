"""Tests for cdi_plugins.physics.simulate.simulate_crystal."""


import numpy as np
import pytest
import scipy.fft

from cdi_plugins.errors import CDIError
from cdi_plugins.physics.simulate import simulate_crystal


def far_field(obj):
    return scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(obj)))


def span(mask):
    """Number of pixels spanned by True values along each axis."""
    out = []
    for k in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(j for j in range(mask.ndim) if j != k)))
        out.append(int(idx[-1] - idx[0] + 1))
    return out


@pytest.fixture(scope="module")
def clean():
    return simulate_crystal(64, noise=False, seed=1)


@pytest.fixture(scope="module")
def noisy():
    return simulate_crystal(64, counts=1e7, noise=True, seed=1)


def test_keys_dtypes_and_shapes(clean):
    assert set(clean) >= {"intensity", "truth", "support", "metadata"}
    assert clean["intensity"].dtype == np.float32
    assert clean["truth"].dtype == np.complex64
    assert clean["support"].dtype == bool
    for k in ("intensity", "truth", "support"):
        assert clean[k].shape == (64, 64, 64)
    md = clean["metadata"]
    assert md["seed"] == 1 and md["counts"] == 1e8 and md["noise"] is False
    assert len(md["oversampling"]) == 3


def test_noise_free_intensity_is_far_field_of_truth(clean):
    i = clean["intensity"]
    model = np.abs(far_field(clean["truth"])) ** 2
    np.testing.assert_allclose(model, i, rtol=0, atol=1e-4 * i.max())
    assert (i >= 0).all()


def test_total_counts_and_peak_at_centre(clean, noisy):
    assert clean["intensity"].sum(dtype=np.float64) == pytest.approx(1e8, rel=1e-5)
    assert noisy["intensity"].sum(dtype=np.float64) == pytest.approx(1e7, rel=1e-3)
    for d in (clean, noisy):
        i = d["intensity"]
        assert np.unravel_index(np.argmax(i), i.shape) == (32, 32, 32)


def test_poisson_noise_is_integer_and_close_to_model(clean, noisy):
    i = noisy["intensity"]
    assert (i >= 0).all()
    np.testing.assert_array_equal(i, np.round(i))
    ideal = clean["intensity"] * (1e7 / 1e8)
    bright = ideal > 100
    rel = (i[bright] - ideal[bright]) / np.sqrt(ideal[bright])
    assert abs(rel.mean()) < 0.1 and 0.8 < rel.std() < 1.2
    assert not np.array_equal(i, np.round(ideal))


def test_noise_does_not_change_the_crystal(clean):
    noisy = simulate_crystal(64, noise=True, seed=1)
    np.testing.assert_array_equal(noisy["truth"], clean["truth"])
    np.testing.assert_array_equal(noisy["support"], clean["support"])


def test_same_seed_identical_different_seed_different():
    a = simulate_crystal(48, seed=7)
    b = simulate_crystal(48, seed=7)
    c = simulate_crystal(48, seed=8)
    for k in ("intensity", "truth", "support"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["support"], c["support"])
    assert not np.array_equal(a["intensity"], c["intensity"])


def test_object_centred_and_oversampled(clean):
    truth, support = clean["truth"], clean["support"]
    # support is the amplitude > 0.5 region, and is a solid blob
    amp = np.abs(truth)
    np.testing.assert_array_equal(support, amp > 0.5 * amp.max())
    assert support.sum() > 1000
    # extent (support and every nonzero pixel) at most shape / 2.2 on every axis
    for region in (support, amp > 0):
        ext = np.array(span(region))
        assert (64 / ext >= 2.2).all(), ext
    np.testing.assert_allclose(clean["metadata"]["oversampling"], 64 / np.array(span(support)))
    # centred: the bounding box centre is within a pixel of n // 2
    for k in range(3):
        idx = np.flatnonzero(support.any(axis=tuple(j for j in range(3) if j != k)))
        assert abs(0.5 * (idx[0] + idx[-1]) - 32) <= 1.0
    # centre of mass of |truth|^2 near the centre too
    w = amp.astype(np.float64) ** 2
    com = [float((w.sum(axis=tuple(j for j in range(3) if j != k)) * np.arange(64)).sum() / w.sum())
           for k in range(3)]
    assert np.allclose(com, 32, atol=3)


@pytest.mark.parametrize("seed", range(6))
def test_oversampling_on_every_axis_many_shapes(seed):
    shape = (40, 56, 72)
    d = simulate_crystal(shape, seed=seed, noise=False, counts=1e6, oversampling_min=2.0)
    ext = np.array(span(np.abs(d["truth"]) > 0))
    assert (np.array(shape) / ext >= 2.0).all(), ext
    assert d["intensity"].shape == shape
    assert np.unravel_index(np.argmax(d["intensity"]), shape) == (20, 28, 36)


def test_soft_edge():
    d = simulate_crystal(64, noise=False, seed=2)
    amp = np.abs(d["truth"])
    amp = amp / amp.max()
    edge = (amp > 0.02) & (amp < 0.98)
    # anti-aliased: a thin shell of intermediate values, not a binary object
    assert 0.05 * d["support"].sum() < edge.sum() < 0.6 * d["support"].sum()
    # amplitude is flat (=1) well inside
    assert np.median(amp[d["support"]]) == pytest.approx(1.0, abs=1e-5)


def test_phase_smooth_zero_mean_and_amplitude():
    d = simulate_crystal(64, noise=False, seed=4, phase_amplitude=2.0)
    t = d["truth"]
    inside = np.abs(t) > 0
    ph = np.angle(t[inside])
    a = np.abs(t[inside])
    assert np.ptp(ph) == pytest.approx(2.0, abs=1e-3)
    assert abs(np.sum(a * ph) / np.sum(a)) < 1e-3
    # smooth, no wrap: neighbouring phase differences inside the support stay small
    s = d["support"]
    phase = np.angle(t)
    for ax in range(3):
        both = s & np.roll(s, 1, axis=ax)
        dphi = np.abs(phase - np.roll(phase, 1, axis=ax))[both]
        assert dphi.max() < 0.5
    flat = simulate_crystal(32, noise=False, seed=4, phase_amplitude=0.0)["truth"]
    assert np.abs(np.angle(flat[np.abs(flat) > 0])).max() < 1e-5


def test_variety_of_shapes():
    # different seeds give different truncations (octahedra .. cuboctahedra)
    fill = []
    for seed in range(8):
        d = simulate_crystal(32, seed=seed, noise=False)
        fill.append(d["metadata"]["facets"]["truncation"])
    assert max(fill) - min(fill) > 0.3


def test_size_override():
    small = simulate_crystal(64, size=6, noise=False, seed=3)
    big = simulate_crystal(64, noise=False, seed=3)
    assert small["support"].sum() < big["support"].sum()
    assert small["metadata"]["size"] == 6.0
    with pytest.raises(CDIError, match="size"):
        simulate_crystal(64, size=40, seed=3)


def test_counts_scale_only_the_values():
    a = simulate_crystal(32, noise=False, seed=5, counts=1e4)
    b = simulate_crystal(32, noise=False, seed=5, counts=1e8)
    np.testing.assert_allclose(b["intensity"], a["intensity"] * 1e4, rtol=1e-4, atol=1e-4 * b["intensity"].max())
    np.testing.assert_array_equal(a["support"], b["support"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(shape=8), "shape"),
    (dict(shape=2048), "shape"),
    (dict(shape=(64, 64)), "shape"),
    (dict(shape=(64, 64, 10)), "shape"),
    (dict(shape=64.5), "shape"),
    (dict(shape="64"), "shape"),
    (dict(counts=0), "counts"),
    (dict(counts=-5), "counts"),
    (dict(counts=float("nan")), "counts"),
    (dict(oversampling_min=1.2), "oversampling_min"),
    (dict(oversampling_min=float("inf")), "oversampling_min"),
    (dict(phase_amplitude=-1), "phase_amplitude"),
    (dict(phase_amplitude=7), "phase_amplitude"),
    (dict(size=-3), "size"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(noise="yes"), "noise"),
    (dict(shape=16, oversampling_min=8), "oversampling_min"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(CDIError, match=match):
        simulate_crystal(**kwargs)


# --------------------------------------------------------------------------- partial coherence

def test_no_blur_is_bitwise_the_coherent_pattern(clean):
    for off in (None, [0.0], [0, 0, 0]):
        d = simulate_crystal(64, noise=False, seed=1, coherence_blur=off)
        assert d["intensity"].tobytes() == clean["intensity"].tobytes()
        assert d["metadata"]["coherence_blur"] is None
    noisy = simulate_crystal(32, seed=4)
    assert simulate_crystal(32, seed=4, coherence_blur=None)["intensity"].tobytes() == noisy["intensity"].tobytes()


def test_blur_keeps_the_photons_and_lowers_the_speckle_contrast(clean):
    from scipy.ndimage import gaussian_filter
    d = simulate_crystal(64, noise=False, seed=1, coherence_blur=[1.0, 0.5, 0.0])
    i, i0 = d["intensity"].astype(np.float64), clean["intensity"].astype(np.float64)
    assert abs(i.sum() / i0.sum() - 1) < 1e-5
    np.testing.assert_allclose(i, gaussian_filter(i0, (1.0, 0.5, 0.0), mode="wrap"), rtol=1e-4, atol=1e-3 * i0.max())
    # the object is the same; only the pattern is blurred: the same photons, less contrast
    assert d["truth"].tobytes() == clean["truth"].tobytes()
    assert d["metadata"]["coherence_blur"] == [1.0, 0.5, 0.0]
    assert (i ** 2).sum() < 0.8 * (i0 ** 2).sum()


def test_blur_with_noise_counts_photons():
    d = simulate_crystal(32, seed=2, counts=1e6, coherence_blur=[0.7])
    assert d["intensity"].dtype == np.float32 and np.all(d["intensity"] == np.round(d["intensity"]))
    assert abs(d["intensity"].sum() / 1e6 - 1) < 0.01
    assert d["metadata"]["coherence_blur"] == [0.7, 0.7, 0.7]


@pytest.mark.parametrize("value", [[-1.0], [1, 2], "wide", [float("nan")]])
def test_bad_blur_is_refused(value):
    with pytest.raises(CDIError, match="coherence_blur"):
        simulate_crystal(32, coherence_blur=value)


def test_recipe_sets_the_blur_and_names_a_bad_one():
    from cdi_plugins.recipe import load_recipe
    plan = load_recipe({"data": {"simulate": {"shape": 32, "coherence_blur": [0.5]}}, "steps": "5*ER"}).dataset()
    assert plan.data.simulate["coherence_blur"] == [0.5]
    with pytest.raises(CDIError, match="coherence_blur") as err:
        load_recipe({"data": {"simulate": {"shape": 32, "coherence_blur": [0.5, 1]}}, "steps": "5*ER"})
    assert "data.simulate" in str(err.value)
