"""Tests for cdi_plugins.pipeline: the Python API contract, reproducibility, convergence, bad data."""

from __future__ import annotations

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins import CDIError, Result
from cdi_plugins.compute.metrics import compare_to_truth
from cdi_plugins.physics.simulate import simulate_crystal

COHERE = "3*(20*ER+180*HIO)+20*ER"


def recipe(steps="10*ER+10*HIO+5*ER", seed=0, data_seed=0, mask=None, **kw):
    """A tiny simulated recipe.  One FFT thread: fast on a busy machine, identical on any."""
    data = {"simulate": {"shape": 32, "seed": data_seed, **kw.pop("simulate", {})}}
    if mask:
        data["mask"] = mask
    return {"data": data, "seed": seed, "threads": 1, "steps": steps, **kw}


@pytest.fixture(scope="module")
def result():
    return cdi_plugins.run(recipe())


@pytest.fixture(scope="module")
def other_crystal():
    """Intensity of a different crystal than the recipe's (simulate seed 5, not 0)."""
    return simulate_crystal(32, seed=5)["intensity"]


# --------------------------------------------------------------------------- the Result contract


def test_result_types_and_dtypes(result):
    assert isinstance(result, Result)
    assert isinstance(result.obj, np.ndarray) and result.obj.dtype == np.complex64
    assert isinstance(result.support, np.ndarray) and result.support.dtype == np.bool_
    assert result.obj.shape == result.support.shape == (32, 32, 32)
    assert result.intensity.dtype == np.float32 and result.mask.dtype == np.bool_
    assert result.support.any() and not result.support.all()
    assert np.isfinite(result.obj).all()


def test_result_history_and_timings(result):
    assert isinstance(result.history, list) and len(result.history) == 25
    for rec in result.history:
        assert {"step", "algorithm", "iteration", "chi2"} <= set(rec)
        assert np.isfinite(rec["chi2"]) and rec["chi2"] >= 0
    assert [(r["step"], r["algorithm"], r["iteration"]) for r in result.history[9:12]] == [
        (1, "er", 10), (2, "hio", 1), (2, "hio", 2)]
    assert result.history[-1]["step"] == 3 and result.history[-1]["iteration"] == 5
    assert len(result.timings) == 3 and all(isinstance(t, float) and t >= 0 for t in result.timings)
    assert [s["algorithm"] for s in result.steps] == ["er", "hio", "er"]
    assert result.steps[1]["params"]["beta"] == 0.9 and result.steps[1]["plugin"] == "iterative"
    assert result.chi2 == result.history[-1]["chi2"] < result.history[0]["chi2"]
    assert result.iterations == 25


def test_result_records_what_made_it(result):
    md = result.metadata
    assert md["source"] == "simulated crystal" and md["backend"] == "numpy" and md["seed"] == 0
    assert result.truth is not None and result.truth.dtype == np.complex64
    assert "10*ER+10*HIO+5*ER" in result.recipe
    assert result.dataset == "default"
    assert "numpy" in result.versions


def test_save_load_round_trip(result, tmp_path):
    path = tmp_path / "out.cxi"
    cdi_plugins.save(result, path)
    back = cdi_plugins.load(path)
    np.testing.assert_array_equal(back.obj, result.obj)
    np.testing.assert_array_equal(back.support, result.support)
    assert back.obj.dtype == np.complex64 and back.support.dtype == np.bool_
    assert back.history == result.history
    assert back.timings == pytest.approx(result.timings)
    np.testing.assert_array_equal(back.intensity, result.intensity)
    np.testing.assert_array_equal(back.truth, result.truth)
    assert back.recipe == result.recipe and back.dataset == result.dataset
    # never silently replaced
    before = path.read_bytes()
    with pytest.raises(CDIError, match="exists"):
        cdi_plugins.save(result, path)
    assert path.read_bytes() == before
    cdi_plugins.save(result, path, overwrite=True)
    np.testing.assert_array_equal(cdi_plugins.load(path).obj, result.obj)


def test_progress_events():
    events = []
    cdi_plugins.run(recipe("4*ER+3*HIO"), progress=lambda **e: events.append(e))
    assert events, "solvers report progress"
    assert {e["algorithm"] for e in events} == {"er", "hio"}
    last = events[-1]
    assert (last["step"], last["iteration"], last["total"]) == (2, 3, 3) and last["chi2"] > 0


# --------------------------------------------------------------------------- recipe forms and data overrides


def test_recipe_as_yaml_string_and_file_give_the_same_result(tmp_path, result):
    text = ("data: {simulate: {shape: 32, seed: 0}}\nseed: 0\nthreads: 1\n"
            "steps: 10*ER+10*HIO+5*ER\n")
    (tmp_path / "r.yaml").write_text(text)
    for rec in (text, tmp_path / "r.yaml", str(tmp_path / "r.yaml")):
        np.testing.assert_array_equal(cdi_plugins.run(rec).obj, result.obj)


def test_data_array_overrides_the_recipe(other_crystal, result):
    data = other_crystal.copy()
    res = cdi_plugins.run(recipe(), data=data)
    np.testing.assert_array_equal(res.intensity, other_crystal)
    assert res.metadata["source"] == "<array>" and res.truth is None
    assert not np.array_equal(res.obj, result.obj)
    # the input is never modified (values, and it stays writable)
    np.testing.assert_array_equal(data, other_crystal)
    assert data.flags.writeable
    # a recipe without a data section at all runs on the array
    bare = cdi_plugins.run({"seed": 0, "threads": 1, "steps": "10*ER+10*HIO+5*ER"}, data=data)
    np.testing.assert_array_equal(bare.obj, res.obj)


def test_data_npy_path_overrides_the_recipe(tmp_path, other_crystal):
    path = tmp_path / "crystal.npy"
    np.save(path, other_crystal)
    before = path.read_bytes()
    from_file = cdi_plugins.run(recipe(), data=path)
    from_str = cdi_plugins.run(recipe(), data=str(path))
    from_array = cdi_plugins.run(recipe(), data=other_crystal)
    np.testing.assert_array_equal(from_file.intensity, other_crystal)
    assert from_file.metadata["source"] == str(path)
    np.testing.assert_array_equal(from_file.obj, from_str.obj)
    np.testing.assert_array_equal(from_file.obj, from_array.obj)
    assert path.read_bytes() == before


def test_input_with_masked_pixels_is_not_modified(tmp_path):
    sim = simulate_crystal(32, seed=0)
    data = sim["intensity"].copy()
    data[0, 0, :4] = -1.0          # negative where masked: allowed, never constrained
    mask = np.zeros(data.shape, dtype=bool)
    mask[0, 0, :4] = True
    np.save(tmp_path / "mask.npy", mask)
    kept = data.copy()
    res = cdi_plugins.run(recipe("5*ER", mask=str(tmp_path / "mask.npy")), data=data)
    np.testing.assert_array_equal(data, kept)
    np.testing.assert_array_equal(res.mask, mask)
    assert (res.intensity[mask] == 0).all()


def test_a_multi_dataset_recipe():
    rec = recipe("5*ER", datasets=[{"name": "a"}, {"name": "b", "set": {"data.simulate.seed": 2}}])
    with pytest.raises(CDIError, match="choose one"):
        cdi_plugins.run(rec)
    b = cdi_plugins.run(rec, dataset="b")
    assert b.dataset == "b"
    everything = cdi_plugins.run_all(rec)
    assert list(everything) == ["a", "b"]
    np.testing.assert_array_equal(everything["b"].obj, b.obj)
    assert not np.array_equal(everything["a"].intensity, everything["b"].intensity)


def test_overrides_argument():
    res = cdi_plugins.run(recipe("5*HIO"), overrides=[("params.hio.beta", 0.5)])
    assert res.steps[0]["params"]["beta"] == 0.5


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_same_result_different_seed_different_result(result):
    again = cdi_plugins.run(recipe())
    np.testing.assert_array_equal(again.obj, result.obj)
    np.testing.assert_array_equal(again.support, result.support)
    assert again.history == result.history
    other = cdi_plugins.run(recipe(seed=1))
    assert not np.array_equal(other.obj, result.obj)


# --------------------------------------------------------------------------- reconstruction quality


@pytest.mark.parametrize("noise", [True, False], ids=["poisson-noise", "noise-free"])
def test_cohere_recipe_recovers_a_simulated_crystal(noise):
    res = cdi_plugins.run(recipe(COHERE, simulate={"noise": noise, "shape": 48}))
    assert len(res.history) == 620 and len(res.timings) == 7
    cmp = compare_to_truth(res.obj, res.truth)
    assert cmp["error"] < 0.10, cmp
    assert res.chi2 < 1e-3
    # the support found by shrink-wrap covers the crystal
    assert 0.5 < res.support.sum() / (np.abs(res.truth) > 0.5 * np.abs(res.truth).max()).sum() < 2.0


# --------------------------------------------------------------------------- bad data


def _arrays():
    good = simulate_crystal(16, seed=0)["intensity"]
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    inf = good.copy()
    inf[1, 2, 3] = np.inf
    return [
        pytest.param(nan, "1 NaN or infinite value", id="nan"),
        pytest.param(inf, "1 NaN or infinite value", id="inf"),
        pytest.param(good - good.max(), "negative value", id="negative"),
        pytest.param(np.zeros_like(good), "zero at every measured pixel", id="all-zero"),
        pytest.param(good[0], "expected a 3-D intensity array, got 2-D", id="2-D"),
        pytest.param(good[None], "expected a 3-D intensity array, got 4-D", id="4-D"),
        pytest.param(good[:2], "too small", id="too-small"),
        pytest.param(good.astype(np.complex64), "must be real numbers", id="complex"),
        pytest.param(np.full((8, 8, 8), "x"), "must be real numbers", id="strings"),
    ]


@pytest.mark.parametrize("data, message", _arrays())
def test_bad_arrays_raise_cdierror(data, message):
    kept = data.copy()
    with pytest.raises(CDIError) as info:
        cdi_plugins.run(recipe("5*ER"), data=data)
    assert message in str(info.value)
    assert str(info.value).startswith("<array>: ")
    np.testing.assert_array_equal(data, kept)


@pytest.mark.parametrize("data, message", _arrays()[:5])
def test_bad_data_files_are_named(tmp_path, data, message):
    path = tmp_path / "bad.npy"
    np.save(path, data)
    with pytest.raises(CDIError) as info:
        cdi_plugins.run(recipe("5*ER"), data=path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_bad_masks_name_the_mask_file(tmp_path):
    np.save(tmp_path / "d.npy", simulate_crystal(16, seed=0)["intensity"])
    np.save(tmp_path / "small.npy", np.zeros((4, 4, 4), bool))
    np.save(tmp_path / "all.npy", np.ones((16, 16, 16), bool))
    for mask, message in (("small.npy", "mask shape (4, 4, 4) does not match the data shape (16, 16, 16)"),
                          ("all.npy", "the mask covers every pixel; nothing is measured")):
        with pytest.raises(CDIError) as info:
            cdi_plugins.run({"data": {"path": str(tmp_path / "d.npy"), "mask": str(tmp_path / mask)},
                             "steps": "5*ER"})
        assert str(info.value) == f"{tmp_path / mask}: {message}"


def test_missing_and_unknown_format_files(tmp_path):
    with pytest.raises(CDIError, match="data file not found"):
        cdi_plugins.run(recipe("5*ER"), data=tmp_path / "nope.npy")
    (tmp_path / "d.xyz").write_text("1 2 3")
    with pytest.raises(CDIError, match=r"d\.xyz: unsupported file type '\.xyz'"):
        cdi_plugins.run(recipe("5*ER"), data=tmp_path / "d.xyz")


# --------------------------------------------------------------------------- averaging the best runs


def test_average_of_the_best_runs():
    r = cdi_plugins.run(recipe("10*ER+20*HIO+10*ER", runs=3, average=2))
    md = r.metadata
    assert len(md["averaged_runs"]) == 2 and md["averaged_runs"][0] == md["best_run"]
    best = cdi_plugins.run(recipe("10*ER+20*HIO+10*ER", runs=3))
    # history and support are the best run's; the object is the mean of the two best, aligned
    assert r.history == best.history
    np.testing.assert_array_equal(r.support, best.support)
    assert not np.array_equal(r.obj, best.obj) and r.obj.dtype == np.complex64
    assert compare_to_truth(r.obj, best.obj)["error"] < 0.5
    assert md["average_chi2"] > 0 and r.error() < 0.3


def test_average_needs_enough_runs():
    with pytest.raises(CDIError, match=r"average = 3 needs at least as many runs \(runs = 2\)"):
        cdi_plugins.run(recipe(runs=2, average=3))


# --------------------------------------------------------------------------- outputs, as cdi run writes them


def test_run_writes_what_the_recipe_output_asks_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = recipe("5*ER", output={"path": "out/{dataset}.cxi", "png": "out/{dataset}.png", "html": "out/x.html"},
               name="tiny")
    (tmp_path / "out").mkdir()
    res = cdi_plugins.run(r)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tiny.cxi", "tiny.png", "x.html"]
    assert cdi_plugins.load(tmp_path / "out" / "tiny.cxi").chi2 == pytest.approx(res.chi2)
    # existing outputs are refused before anything is computed (no progress event at all)
    events = []
    with pytest.raises(CDIError, match="tiny.cxi: exists; pass --overwrite"):
        cdi_plugins.run(r, progress=lambda **e: events.append(e))
    assert events == []
    # write=False: the result only, as before
    cdi_plugins.run(r, write=False)
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_run_all_checks_every_output_before_the_first_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = {**recipe("3*ER"), "output": {"path": "{dataset}.cxi"},
         "datasets": [{"name": "a"}, {"name": "b"}]}
    (tmp_path / "b.cxi").write_text("mine")
    with pytest.raises(CDIError, match="b.cxi: exists"):
        cdi_plugins.run_all(r)
    assert not (tmp_path / "a.cxi").exists()
    assert (tmp_path / "b.cxi").read_text() == "mine"


def test_compare_is_an_api_function(tmp_path):
    a, b = tmp_path / "er.yaml", tmp_path / "hio.yaml"
    a.write_text("data: {simulate: {shape: 32}}\nthreads: 1\nsteps: 20*ER\n")
    b.write_text("data: {simulate: {shape: 32}}\nthreads: 1\nsteps: 10*HIO+10*ER\n")
    table = cdi_plugins.compare([a, b])
    assert list(table.results) == ["er", "hio"] and table.has_truth
    assert all(r.iterations == 20 and r.metadata["wall_seconds"] > 0 for r in table.results.values())
    assert table.problem.shape == (32, 32, 32)
    c = tmp_path / "other.yaml"
    c.write_text("data: {simulate: {shape: 32, seed: 9}}\nsteps: 20*ER\n")
    with pytest.raises(CDIError, match="other.yaml: this recipe's data differs"):
        cdi_plugins.compare([a, c])


def test_check_plan_reads_headers_only_and_finds_what_run_would_refuse(tmp_path):
    from cdi_plugins.pipeline import check_plan
    from cdi_plugins.recipe import load_recipe
    np.save(tmp_path / "d.npy", simulate_crystal(32, seed=1)["intensity"])
    np.save(tmp_path / "m.npy", np.zeros((32, 32, 30), bool))
    base = "data: {path: d.npy%s}\nsteps: 5*ER\n"
    (tmp_path / "ok.yaml").write_text(base % "" + "output: {path: r.cxi}\n")
    notes = check_plan(load_recipe(str(tmp_path / "ok.yaml")).dataset())
    assert notes == ["data: 32x32x32 float32, 0.1 MB", "writes: r.cxi"]
    cases = {
        ", prepare: {gaps: [':, 40:44, :']}": r"data.prepare.gaps: region ':, 40:44, :': index 40 is outside axis 1",
        ", mask: m.npy": r"m.npy: mask shape \(32, 32, 30\) does not match the data shape \(32, 32, 32\)",
    }
    for extra, message in cases.items():
        (tmp_path / "bad.yaml").write_text(base % extra)
        with pytest.raises(CDIError, match=message):
            check_plan(load_recipe(str(tmp_path / "bad.yaml")).dataset())
    (tmp_path / "over.yaml").write_text(base % "" + f"output: {{path: {tmp_path / 'd.npy'}}}\n")
    with pytest.raises(CDIError, match="d.npy: the run reads this file; an output must not replace it"):
        check_plan(load_recipe(str(tmp_path / "over.yaml")).dataset())
