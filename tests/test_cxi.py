"""Tests for cdi_plugins.io.cxi: the CXI round trip, its layout, overwrite rules, foreign files."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from cdi_plugins.core.result import Result
from cdi_plugins.errors import CDIError
from cdi_plugins.io import cxi as cxi_module
from cdi_plugins.io import load_cxi, read_intensity, write_cxi
from tests.io_helpers import cube, make_result, snapshot  # noqa: F401  (cube: fixture)


# ----------------------------------------------------------------------------- CXI

def test_cxi_round_trip(tmp_path):
    r = make_result()
    p = tmp_path / "r.cxi"
    write_cxi(r, p)
    back = load_cxi(p)
    assert back.obj.dtype == np.complex64 and np.array_equal(back.obj, r.obj)
    assert back.support.dtype == bool and np.array_equal(back.support, r.support)
    assert back.intensity.dtype == np.float32 and np.array_equal(back.intensity, r.intensity)
    assert back.mask.dtype == bool and np.array_equal(back.mask, r.mask)
    assert back.truth.dtype == np.complex64 and np.array_equal(back.truth, r.truth)
    assert json.dumps(back.history) == json.dumps(r.history)  # NaN-safe equality
    assert back.history[0] == r.history[0]
    assert back.timings == r.timings and all(type(t) is float for t in back.timings)
    assert back.steps == r.steps
    assert back.metadata == {"energy_kev": 9.0, "shape": [8, 8, 8], "n": 3, "name": "au",
                             "nested": {"pixel_m": 55e-6}}
    assert back.recipe == r.recipe and back.dataset == r.dataset
    assert back.versions == r.versions
    assert back.chi2 == 0.25 and back.iterations == 2
    assert os.listdir(tmp_path) == ["r.cxi"]


def test_cxi_layout(tmp_path):
    r = make_result()
    p = tmp_path / "r.cxi"
    write_cxi(r, p)
    with h5py.File(p, "r") as f:
        assert f["cxi_version"][()] == 160
        assert f["entry_1/start_time"].asstr()[()]
        assert f["entry_1/data_1/data"].dtype == np.float32
        assert f["entry_1/image_1/data"].dtype == np.complex64
        assert f["entry_1/image_1/support"].dtype == np.uint8
        assert f["entry_1/image_1/is_fft_shifted"][()] == 0
        proc = f["entry_1/image_1/process_1"]
        assert proc["program"].asstr()[()] == "cdi-plugins"
        assert proc["version"].asstr()[()]
        assert proc["configuration/recipe"].asstr()[()] == "steps: []\n"
        res = proc["results"]
        assert res["chi2"].dtype == np.float64 and list(res["chi2"][()]) == [0.5, 0.25]
        assert res["step"].dtype == np.int32 and list(res["step"][()]) == [1, 2]
        assert list(res["iteration"][()]) == [1, 1]
        assert list(res["algorithm"].asstr()[()]) == ["er", "hio"]
        assert list(res["step_seconds"][()]) == [0.1, 0.2]
        assert res["dataset"].asstr()[()] == "default"
        assert f["entry_1/image_2/title"].asstr()[()] == "truth"
    # The intensity in a result file can be read back as input.
    assert np.array_equal(read_intensity(p), r.intensity)


def test_cxi_minimal_result(tmp_path):
    r = Result(obj=np.ones((4, 4, 4), np.complex64), support=np.ones((4, 4, 4), bool),
               history=[], timings=[])
    p = tmp_path / "m.cxi"
    write_cxi(r, p)
    back = load_cxi(p)
    assert back.intensity is None and back.mask is None and back.truth is None
    assert back.history == [] and back.timings == [] and back.steps == []
    assert back.metadata == {} and back.versions == {} and back.recipe == ""


def test_cxi_overwrite_rules(tmp_path):
    p = tmp_path / "r.cxi"
    write_cxi(make_result(), p)
    with pytest.raises(CDIError, match="r.cxi.*exists"):
        write_cxi(make_result(), p)
    write_cxi(make_result(truth=False), p, overwrite=True)
    assert load_cxi(p).truth is None
    with pytest.raises(CDIError, match="input file"):
        write_cxi(make_result(), p, overwrite=True, protect=[p])


def test_cxi_failure_midway_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "r.cxi"
    write_cxi(make_result(), p)
    before = snapshot(p)

    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    # Fails after the object and configuration have been written.
    monkeypatch.setattr(cxi_module, "_dumps", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_cxi(make_result(), p, overwrite=True)
    assert snapshot(p) == before
    assert os.listdir(tmp_path) == ["r.cxi"]
    monkeypatch.undo()
    assert load_cxi(p).chi2 == 0.25


def test_load_cxi_rejects_foreign_files(tmp_path, cube):
    p = tmp_path / "foreign.cxi"
    with h5py.File(p, "w") as f:
        f["entry_1/data_1/data"] = cube
    with pytest.raises(CDIError, match="foreign.cxi.*program"):
        load_cxi(p)
    p2 = tmp_path / "partial.cxi"
    with h5py.File(p2, "w") as f:
        f.create_dataset("entry_1/image_1/process_1/program", data="cdi-plugins",
                         dtype=h5py.string_dtype())
    with pytest.raises(CDIError, match="partial.cxi.*missing.*image_1/data"):
        load_cxi(p2)
    with pytest.raises(CDIError, match="absent.cxi"):
        load_cxi(tmp_path / "absent.cxi")
    bad = tmp_path / "text.cxi"
    bad.write_text("hello")
    with pytest.raises(CDIError, match="text.cxi"):
        load_cxi(bad)
