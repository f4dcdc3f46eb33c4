"""The cohere seam: cohere-core as a registered step (algorithms/cohere/plugin.py).

The adapter reaches into cohere-core's internals (``phasing.Rec``: its flow,
``ds_image``, ``support``, ``errs``); these tests are what tells us that a new
cohere-core version no longer fits.  They skip when cohere-core is not installed
(``pip install 'cdi-plugins[cohere]'``), except those that need no cohere.
"""

from __future__ import annotations


import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError
from cdi_plugins.cli import main
from cdi_plugins.compute.metrics import chi2
from tests.cohere_helpers import _recipe, er_result, needs_cohere  # noqa: F401 (er_result: fixture)
from cdi_plugins.io.cohere import write_cohere_results


@needs_cohere
def test_pinned_version_is_installed():
    import importlib.metadata
    from cdi_plugins.algorithms.cohere.plugin import COHERE_VERSION
    assert importlib.metadata.version("cohere-core") == COHERE_VERSION


@needs_cohere
def test_cohere_step_seeded_by_er_keeps_reducing_the_error(er_result):
    steps = [{"algorithm": "er", "iterations": 30}, {"algorithm": "hio", "iterations": 60},
             {"algorithm": "er", "iterations": 30, "shrink_wrap_period": 0},
             {"algorithm": "cohere", "algorithm_sequence": "20*ER", "shrink_wrap_trigger": None}]
    r = cdi_plugins.run(_recipe(steps))
    ours = [h["chi2"] for h in r.history if h["step"] == 3]
    coh = [h for h in r.history if h["step"] == 4]
    assert len(coh) == 20 and all(h["algorithm"] == "cohere" and h["cohere_algorithm"] == "ER" for h in coh)
    c = [h["chi2"] for h in coh]
    # same chi2 definition: cohere's first error is the chi2 of the object it was handed
    assert c[0] == pytest.approx(chi2(er_result.obj, er_result.intensity, er_result.mask), rel=1e-3)
    assert c[0] <= ours[-1] * 1.0001
    assert all(b <= a * (1 + 1e-6) for a, b in zip(c, c[1:]))  # ER never increases the error
    assert c[-1] < ours[-1]
    # the returned object is in our convention: its chi2 is what the history says
    assert chi2(r.obj, r.intensity, r.mask) <= c[-1] * 1.0001
    assert r.obj.dtype == np.complex64 and r.support.dtype == bool
    assert r.error() < 0.3


@needs_cohere
def test_cohere_random_start_is_seeded_and_reproducible():
    rec = _recipe([{"algorithm": "cohere", "algorithm_sequence": "10*ER+20*HIO+10*ER"}])
    a, b = cdi_plugins.run(rec), cdi_plugins.run(rec)
    assert np.array_equal(a.obj, b.obj)
    c = cdi_plugins.run({**rec, "seed": 5})
    assert not np.array_equal(a.obj, c.obj)
    assert len(a.history) == 40 and a.chi2 < 0.05
    assert any("support_fraction" in h for h in a.history)  # shrink-wrap ran (every iteration by default)


@needs_cohere
def test_cohere_step_reports_progress_and_prints_nothing(capsys):
    events = []
    cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*ER"}]),
                    progress=lambda **e: events.append(e))
    assert capsys.readouterr().out == ""
    assert events[-1]["iteration"] == 5 and events[-1]["algorithm"] == "cohere"


@needs_cohere
def test_cohere_parameters_are_validated():
    with pytest.raises(CDIError, match="SFX"):
        cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*SFX"}]))
    with pytest.raises(CDIError, match="pc_interval"):
        cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*ERpc"}]))
    with pytest.raises(CDIError, match="list of numbers"):
        cdi_plugins.run(_recipe([{"algorithm": "cohere", "shrink_wrap_trigger": "1, 1"}]))


@needs_cohere
def test_cohere_continues_from_a_results_folder(tmp_path, er_result):
    out = write_cohere_results(er_result, tmp_path / "results_phasing")
    r = cdi_plugins.run(_recipe([{"algorithm": "cohere", "algorithm_sequence": "5*ER", "continue_dir": out,
                                  "shrink_wrap_trigger": None}]))
    first = r.history[0]["chi2"]
    assert first == pytest.approx(chi2(er_result.obj, er_result.intensity, er_result.mask), rel=1e-2)


# ---- without cohere-core ------------------------------------------------------------------


def test_cohere_unavailable_is_listed_and_refused(monkeypatch, capsys):
    import cdi_plugins.algorithms.cohere.plugin as mod
    from cdi_plugins.core.registry import Registry, reset_registry
    monkeypatch.setattr(mod, "cohere_status", lambda: "cohere-core is not installed; " + mod.INSTALL_HINT)
    reg = Registry(entry_points=False)
    reg.register_plugin(mod, name="cohere")
    reset_registry(reg)
    try:
        assert main(["algorithms"]) == 0
        out = capsys.readouterr().out
        assert "cohere" in out and "unavailable" in out and "cdi-plugins[cohere]" in out
        with pytest.raises(CDIError, match=r"not available.*cdi-plugins\[cohere\]"):
            cdi_plugins.run(_recipe([{"algorithm": "cohere"}]))
    finally:
        reset_registry(None)


@needs_cohere
@pytest.mark.parametrize("extra", [
    {"processing": "torch"},
    {"algorithm_sequence": "10*ER+20*HIOpc+10*ERpc", "pc_interval": 5, "pc_LUCY_kernel": [8, 8, 8]},
    {"twin_trigger": [2], "phc_trigger": [1, 5], "average_trigger": [-10, 1]},
    {"lowpass_filter_trigger": [0, 1, 20], "lowpass_filter_range": [1.0]},
    {"algorithm_sequence": "10*SF+10*RAAR+20*ER"},
], ids=["torch", "partial-coherence", "twin-phc-average", "lowpass", "sf-raar"])
def test_cohere_features_run_through_the_adapter(extra):
    step = {"algorithm": "cohere", "algorithm_sequence": "10*ER+20*HIO+10*ER", **extra}
    r = cdi_plugins.run(_recipe([step]))
    assert len(r.history) == 40 and np.isfinite(r.chi2) and r.chi2 < 0.05
    assert r.obj.dtype == np.complex64 and r.support.any()
    if "pc_interval" in extra:
        assert r.history[-1]["cohere_algorithm"] == "ERpc"
    # chi2 is ours: the returned object's chi2 is no worse than the last record
    assert chi2(r.obj, r.intensity, r.mask) <= r.chi2 * 1.5


@needs_cohere
def test_cohere_itself_continues_from_our_results_folder(tmp_path, er_result):
    # what cohere-ui does with continue_dir: its own create_rec / iterate on our folder
    import contextlib
    import io
    import cohere_core.controller.phasing as ph
    folder = write_cohere_results(er_result, tmp_path / "results_phasing")
    data = tmp_path / "data.npy"
    np.save(data, np.sqrt(er_result.intensity))
    with contextlib.redirect_stdout(io.StringIO()):
        rec = ph.create_rec({"algorithm_sequence": "5*ER", "continue_dir": folder}, str(data), "np", -1, debug=True)
        assert rec is not None and rec.iterate() == 0
    # the first error reflects cohere's max-normalised image; one ER fixes the scale
    assert rec.errs[1] < 2 * er_result.chi2 and rec.errs[-1] <= rec.errs[1]
