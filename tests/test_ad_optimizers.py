"""Tests of the AD refiner's optimisers (algorithms/ad/optimizers.py) and of the table they are chosen from."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import cdi_plugins  # noqa: E402
from cdi_plugins import Param, State, get_registry  # noqa: E402
from cdi_plugins.compute.metrics import chi2  # noqa: E402
from cdi_plugins.core.state import Problem  # noqa: E402
from cdi_plugins.algorithms.ad import optimizers as ad_optimizers  # noqa: E402
from cdi_plugins.algorithms.ad import plugin as ad  # noqa: E402
from tests.test_ad_helpers import (  # noqa: E402,F401
    clean, ctx, noisy, one_thread, params, rel, truth_state)


# ----------------------------------------------------------------------------------- the table

def test_the_table_drives_the_optimizer_parameter():
    """Adding an optimiser is adding its class to TABLE: the parameter's choices, documentation, default
    learning rates and the parameters an optimiser adds all follow."""
    spec = get_registry().get("ad")
    p = spec.params.params
    assert tuple(p["optimizer"].choices) == ad_optimizers.OPTIMIZERS == tuple(ad_optimizers.TABLE)
    for name, cls in ad_optimizers.TABLE.items():
        assert issubclass(cls, ad_optimizers.Optimizer)
        assert cls.doc.startswith(name) and cls.doc in p["optimizer"].doc and cls.title in spec.summary
        assert f"{cls.default_lr:g} for" in p["learning_rate"].doc
        for extra in cls.params:
            assert p[extra.name] is extra
    names = list(p)
    assert names.index("momentum") == names.index("learning_rate") + 1      # listed after learning_rate


def test_an_optimiser_added_to_the_table_is_offered_and_runs(monkeypatch, clean):
    """A new optimiser is one class in TABLE: the parameters offer it, with its default learning rate
    and its own parameters, and the refiner drives it through the one interface."""
    class HalfER(ad_optimizers.Optimizer):
        default_lr, title, doc = 0.5, "half-ER", "half_er (ER's step times the learning rate)"
        params = (Param("half_er_note", "str", "", "half_er: a parameter only this optimiser reads"),)

        def __init__(self, torch, p, lr):
            self.p, self.state = p, {}

        def iterate(self, objective, lr, budget):
            objective.evaluate()
            with torch.no_grad():
                self.p.add_(self.p.grad * (-lr * objective.own_step()))

    monkeypatch.setitem(ad_optimizers.TABLE, "half_er", HalfER)
    offered = {p.name: p for p in ad._optimizer_params()}
    assert offered["optimizer"].choices[-1] == "half_er"
    assert offered["optimizer"].doc.endswith(" or half_er (ER's step times the learning rate)")
    assert "0.02 for adam, 1 for lbfgs and gd, 0.5 for half_er" in offered["learning_rate"].doc
    assert list(offered)[-1] == "half_er_note" and ad_optimizers.titles() == "Adam, L-BFGS, gd or half-ER"
    values = dict(params(iterations=20, shrink_wrap_period=10, shrink_wrap_only_on_improvement=False,
                         plateau_patience=0), optimizer="half_er")
    st = ad.run(Problem.from_array(clean["intensity"]), None, values, ctx())
    h = [r["chi2"] for r in st.history]
    assert len(h) == 20 and h[-1] < 0.5 * h[0]
    assert [r["iteration"] for r in st.history if "support_fraction" in r] == [10]


# ------------------------------------------------------------------------------ each optimiser

@pytest.mark.parametrize("optimizer", ad_optimizers.OPTIMIZERS)
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


@pytest.mark.parametrize("optimizer", ad_optimizers.OPTIMIZERS)
def test_seeded_with_the_truth_stays_at_the_truth(clean, optimizer):
    prob = Problem.from_array(clean["intensity"])
    st = ad.run(prob, truth_state(clean), params(iterations=60, optimizer=optimizer, plateau_patience=0), ctx())
    # returned centred, on the data's scale, with no shift: comparable to the truth as it is
    assert rel(st.obj, clean["truth"]) < 0.01
    assert chi2(st.obj, clean["intensity"]) < 1e-4
    assert max(r["chi2"] for r in st.history) < 2e-4      # Adam's first normalised steps do not kick it away


# -------------------------------------------------------------------- Adam without torch.optim

@pytest.mark.parametrize("fused", [True, False])
def test_adam_update_is_torch_optim_adam(fused):
    """The refiner's own Adam takes exactly the steps of torch.optim.Adam (fused kernel and plain ops)."""
    rng = np.random.default_rng(0)
    p0 = torch.from_numpy(rng.normal(size=(6, 5, 4, 2)).astype(np.float32))
    grads = [torch.from_numpy(rng.normal(size=p0.shape).astype(np.float32)) for _ in range(5)]
    a, b = p0.clone().requires_grad_(True), p0.clone().requires_grad_(True)
    mine = ad_optimizers._Adam(torch, a, 0.05, fused=fused)
    ref = torch.optim.Adam([b], lr=0.05, eps=ad_optimizers.ADAM_EPS)
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


# ------------------------------------------------------------------------------------------ gd

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
