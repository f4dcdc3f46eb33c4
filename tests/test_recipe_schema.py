"""Tests for cdi_plugins.recipe.schema: the keys of a recipe, and the texts of its data, output and
run-setting checks (ParamModels whose messages are the ones recipes always gave)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.core.params import Param, ParamModel
from cdi_plugins.physics.simulate import SIMULATE
from cdi_plugins.recipe import load_recipe
from cdi_plugins.recipe.schema import DATA, DATA_KEYS, OUTPUT, OUTPUT_KEYS, SETTINGS, TOP_KEYS

from tests.conftest import HAVE_GPU
from tests.recipe_cases import HEAD, error, lines, write

SIM = {"data": {"simulate": {"shape": 32}}, "steps": "5*ER"}


def set_error(key, value) -> str:
    return error(SIM, overrides=[(key, value)])


def test_data_section_errors():
    assert "no data" in error("steps: 5*ER\n")
    assert "give exactly one of data.path or data.simulate" in error(
        "data: {path: x.npy, simulate: {shape: 32}}\nsteps: 5*ER\n")


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device works here")
def test_cupy_backend_without_gpu_is_a_clear_error(tmp_path):
    path = write(tmp_path, lines(*HEAD, "backend: cupy", "steps: 5*ER"))
    msg = error(path)
    assert msg.startswith(f"{path}:4: backend: ")
    assert "CuPy" in msg and "GPU" in msg
    # validation without the backend check still accepts it (a recipe can be checked for another machine)
    assert load_recipe(path, check_backend=False).dataset().backend == "cupy"


def test_thirty_two_cubed_simulation_validates():
    plan = load_recipe({"data": {"simulate": {"shape": 32, "seed": 0}}, "steps": "5*ER"}).dataset()
    assert plan.data.simulate["shape"] == 32
    assert os.path.basename(plan.source) == "<recipe>"


def test_models_cover_the_section_keys():
    assert list(SETTINGS.params) == ["backend", "fft", "threads", "seed", "runs", "average", "select"]
    assert set(SETTINGS.params) < set(TOP_KEYS)
    # the raw-scan keys (data.frames, beamline, spec, ...) have their validator with the scan code
    from cdi_plugins.physics.scan import SCAN_KEYS
    assert set(DATA.params) | {"simulate", "prepare"} | set(SCAN_KEYS) == set(DATA_KEYS)
    assert tuple(OUTPUT.params) == OUTPUT_KEYS
    assert SIMULATE.defaults()["shape"] == 64        # data.simulate's model lives with simulate_crystal


@pytest.mark.parametrize("key, value, message", [
    ("threads", 0, "threads must be an integer >= 1 or null, got 0"),
    ("threads", 2.0, "threads must be an integer >= 1 or null, got 2.0"),
    ("threads", True, "threads must be an integer >= 1 or null, got True"),
    ("seed", -1, "seed must be an integer >= 0 or null, got -1"),
    ("seed", 1.5, "seed must be an integer >= 0 or null, got 1.5"),
    ("seed", "x", "seed must be an integer >= 0 or null, got 'x'"),
    ("seed", np.int64(3), "seed must be an integer >= 0 or null, got np.int64(3)"),
    ("runs", 0, "runs must be an integer >= 1 or null, got 0"),
    ("average", 9, "average = 9 needs at least as many runs (runs = 1)"),
    ("backend", "gpu", "backend must be one of auto, numpy, cupy; got 'gpu'"),
    ("backend", "nmpy", "backend must be one of auto, numpy, cupy; got 'nmpy' (did you mean 'numpy'?)"),
    ("backend", None, "backend must be one of auto, numpy, cupy; got None"),
    ("backend", 5, "backend must be one of auto, numpy, cupy; got 5"),
    ("backend", [1], "backend must be one of auto, numpy, cupy; got [1]"),
    ("fft", "scpy", "fft must be one of auto, pyfftw, scipy, mkl, torch, cupy; got 'scpy' (did you mean 'scipy' or 'cupy'?)"),
    ("output.path", None, "output.path must be a string"),
    ("output.path", 3, "output.path must be a string"),
    ("output.overwrite", "maybe", "output.overwrite must be true or false"),
    ("output.overwrite", None, "output.overwrite must be true or false"),
    ("output.png", "x.jpg", "output.png must be a file name ending in .png, got 'x.jpg'"),
    ("output.png", 5, "output.png must be a file name ending in .png, got 5"),
    ("output.vti", "a.png", "output.vti must be a file name ending in .vti, got 'a.png'"),
    ("output.cohere_dir", "", "output.cohere_dir must be a folder name, got ''"),
    ("output.cohere_dir", 5, "output.cohere_dir must be a folder name, got 5"),
    ("output.bogus", 1, "unknown key 'bogus'; allowed: path, overwrite, png, vti, html, cohere_dir"),
    ("output", 3, "output must be a mapping, got an integer"),
    ("data.dataset", 5, "data.dataset must be a string, got 5"),
    ("data.mask", 5, "data.mask must be a string, got 5"),
    ("data.mask_dataset", [1], "data.mask_dataset must be a string, got [1]"),
    ("data.free_fraction", 0.7, "'free_fraction' = 0.7 is out of range [0, 0.5)"),
    ("data.free_fraction", None, "'free_fraction' may not be null"),
    ("data.free_fraction", "x", "'free_fraction' must be a number, got 'x'"),
    ("data.simulate", 5, "data.simulate must be a mapping"),
    ("data.simulate.shape", 8, "'shape' = 8 is out of range [16, 1024]"),
    ("select", "chi_free", "select must be one of auto, chi2, chi2_free, llk_free; got 'chi_free' (did you mean 'chi2_free' or 'llk_free'?)"),
    ("select", "llk_free", "select: llk_free needs free pixels: set data.free_fraction (e.g. 0.05)"),
    ("workers", 0, "workers must be auto or an integer in [1, 1,024], got 0"),
    ("workers", "many", "workers must be auto or an integer in [1, 1,024], got 'many'"),
    ("workers", 2.0, "workers must be auto or an integer in [1, 1,024], got 2.0"),
])
def test_setting_messages(key, value, message):
    assert set_error(key, value) == f"--set {key}: {message}"


@pytest.mark.parametrize("key, value, attribute, expected", [
    ("threads", None, "threads", None),
    ("seed", None, "seed", None),
    ("runs", None, "runs", 1),
    ("average", None, "average", 1),
    ("fft", "scipy", "fft", "scipy"),
    ("workers", None, "workers", "auto"),
    ("workers", 3, "workers", 3),
    ("select", "chi2", "select", "chi2"),
])
def test_null_and_valid_settings(key, value, attribute, expected):
    plan = load_recipe(SIM, overrides=[(key, value)]).dataset()
    assert getattr(plan, attribute) == expected


def test_output_values_that_pass():
    for over in ([("output", None)], [("output", "")], [("output.png", "A.PNG"), ("output.cohere_dir", None)]):
        load_recipe(SIM, overrides=over)


@pytest.mark.parametrize("data, message", [
    # a recipe with several mistakes reports the same first one as before the schema was a ParamModel
    ("{free_fraction: 0.7, path: 5}", "data.path: data.path must be a string, got 5"),
    ("{dataset: 3, path: 5}", "data.path: data.path must be a string, got 5"),
    ("{free_fraction: 0.7, path: missing.npy}", "data.path: data file not found: "),
    ("{simulate: {shape: 8}, free_fraction: 2, prepare: {bogus: 1}}",
     "data.simulate.shape: 'shape' = 8 is out of range [16, 1024]"),
    ("{simulate: {shape: 32}, mask: nomask.npy, free_fraction: 2}", "data.mask: mask file not found: "),
])
def test_first_of_several_data_errors(data, message):
    assert error(f"data: {data}\nsteps: 5*ER\n").startswith(f"<recipe>:1: {message}")


def test_first_of_several_setting_and_output_errors():
    text = lines(*HEAD, "steps: 5*ER", "runs: 0", "seed: -1", "backend: gpu")
    assert error(text) == "<recipe>:7: backend: backend must be one of auto, numpy, cupy; got 'gpu'"
    text = lines(*HEAD, "steps: 5*ER", "output: {cohere_dir: '', png: 1, path: 3, overwrite: maybe, vti: x}")
    assert error(text) == "<recipe>:5: output.path: output.path must be a string"
    text = lines(*HEAD, "steps: 5*ER", "output: {cohere_dir: '', bogus: 1, vti: x}")
    assert error(text).startswith("<recipe>:5: output.bogus: unknown key 'bogus'")


# --------------------------------------------------------------------------- the Param features the schema uses


def test_param_message_replaces_every_generic_text():
    p = Param("backend", "str", "auto", choices=("auto", "numpy"), message="{name}: one of a, b; got {value!r}{suggest}")
    for bad, got in ((None, "None"), (3, "3"), ("nmpy", "'nmpy' (did you mean 'numpy'?)")):
        with pytest.raises(CDIError) as info:
            p.check(bad, "here")
        assert str(info.value) == f"here: backend: one of a, b; got {got}"
    assert p.check("numpy", "here") == "numpy"


def test_param_strict_int_refuses_integral_floats_and_numpy_scalars():
    loose, strict = Param("n", "int", 0), Param("n", "int", 0, strict=True)
    assert loose.check(2.0, "") == 2 and loose.check(np.int64(2), "") == 2
    for bad in (2.0, np.int64(2), True):
        with pytest.raises(CDIError, match="'n' must be an integer"):
            strict.check(bad, "")
    assert strict.check(2, "") == 2


def test_param_accept_rule_and_defaults_unchanged():
    p = Param("png", "str", None, nullable=True, accept=lambda v: v.endswith(".png"))
    assert p.check("a.png", "") == "a.png" and p.check(None, "") is None
    with pytest.raises(CDIError, match=r"^w: 'png' = 'a.jpg' is not accepted$"):
        p.check("a.jpg", "w")
    # without the new fields a model validates as it always did
    model = ParamModel([Param("beta", "float", 0.9, low=0, high=1, low_open=True)])
    with pytest.raises(CDIError, match=r"'beta' = 1.5 is out of range \(0, 1\]"):
        model.validate({"beta": 1.5})


def test_a_null_data_path_is_one_line():
    with pytest.raises(CDIError, match=r"<recipe>:1: data.path: data.path must name the data file"):
        load_recipe("data: {path: null}\nsteps: 5*ER\n")
