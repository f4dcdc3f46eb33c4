"""Tests for cdi_plugins.io: readers, atomic writes, CXI round trip."""

from __future__ import annotations

import json
import os
import pathlib

import h5py
import numpy as np
import pytest
import tifffile

from cdi_plugins.errors import CDIError
from cdi_plugins.io import (atomic_path, check_writable, load_cxi, read_array, read_intensity,
                            write_cxi)
from cdi_plugins.io import cxi as cxi_module
from cdi_plugins.core.result import Result

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_TIF = REPO.parent / "shared" / "data" / "au_3dcdinn_ft_crop_64.tif"


@pytest.fixture
def cube():
    rng = np.random.default_rng(1)
    return (rng.random((6, 7, 8)) * 100).astype(np.float32)


def snapshot(path):
    p = pathlib.Path(path)
    return p.read_bytes(), p.stat().st_mtime_ns


def make_result(shape=(8, 8, 8), truth=True):
    rng = np.random.default_rng(0)
    obj = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    support = rng.random(shape) > 0.5
    mask = np.zeros(shape, dtype=bool)
    mask[0, 0, :3] = True
    intensity = (rng.random(shape) * 10).astype(np.float32)
    return Result(
        obj=obj, support=support,
        history=[{"step": 1, "algorithm": "er", "iteration": 1, "chi2": 0.5},
                 {"step": 2, "algorithm": "hio", "iteration": 1, "chi2": 0.25,
                  "support_fraction": 0.125, "chi2_free": float("nan")}],
        timings=[0.1, 0.2],
        steps=[{"algorithm": "er", "params": {"iterations": 1}, "seconds": 0.1},
               {"algorithm": "hio", "params": {"iterations": 1, "beta": 0.9}, "seconds": 0.2}],
        intensity=intensity, mask=mask,
        metadata={"energy_kev": np.float64(9.0), "shape": np.array([8, 8, 8]),
                  "n": np.int64(3), "name": "au", "nested": {"pixel_m": 55e-6}},
        truth=obj * 2 if truth else None,
        recipe="steps: []\n", dataset="default", versions={"numpy": "x"})


# ----------------------------------------------------------------------------- readers

def test_npy_round_trip(tmp_path, cube):
    p = tmp_path / "a.npy"
    np.save(p, cube)
    before = snapshot(p)
    out = read_intensity(p)
    assert out.dtype == np.float32 and np.array_equal(out, cube)
    assert snapshot(p) == before


def test_npy_int_converted_to_float32_copy(tmp_path):
    a = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    p = tmp_path / "a.npy"
    np.save(p, a)
    out = read_intensity(p)
    assert out.dtype == np.float32 and out.flags.writeable
    assert np.array_equal(out, a)


def test_npz_single_and_named(tmp_path, cube):
    p1 = tmp_path / "one.npz"
    np.savez(p1, cube)
    assert np.array_equal(read_intensity(p1), cube)
    p2 = tmp_path / "two.npz"
    np.savez_compressed(p2, intensity=cube, other=cube * 2)
    before = snapshot(p2)
    assert np.array_equal(read_intensity(p2, dataset="other"), cube * 2)
    with pytest.raises(CDIError, match="two.npz") as e:
        read_intensity(p2)
    assert "intensity" in str(e.value) and "other" in str(e.value)
    with pytest.raises(CDIError, match="not found") as e:
        read_intensity(p2, dataset="nope")
    assert "two.npz" in str(e.value) and "intensity" in str(e.value)
    assert snapshot(p2) == before


def test_tif_multipage_round_trip(tmp_path, cube):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, cube)
    before = snapshot(p)
    out = read_intensity(p)
    assert out.shape == cube.shape and np.array_equal(out, cube)
    assert snapshot(p) == before


def test_tif_pages_written_separately_are_stacked(tmp_path, cube):
    p = tmp_path / "pages.tiff"
    with tifffile.TiffWriter(p) as w:
        for i, page in enumerate(cube):  # differing compression: not one tifffile series
            w.write(page, metadata=None, description=f"page {i}",
                    compression="zlib" if i % 2 else None)
    with tifffile.TiffFile(p) as tf:  # tifffile splits them: its first series is half the stack
        assert len(tf.series) > 1 and tf.asarray().shape[0] < cube.shape[0]
    assert np.array_equal(read_intensity(p), cube)
    q = tmp_path / "onelater.tif"  # one odd page at the end: series (n-1, h, w) and (h, w)
    with tifffile.TiffWriter(q) as w:
        for i, page in enumerate(cube):
            w.write(page, metadata=None, compression="zlib" if i == len(cube) - 1 else None)
    assert np.array_equal(read_intensity(q), cube)


def test_tif_pages_of_differing_shape(tmp_path):
    p = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(p) as w:
        w.write(np.ones((4, 4), np.float32), metadata=None)
        w.write(np.ones((5, 4), np.float32), metadata=None)
    with pytest.raises(CDIError, match="mixed.tif.*differing"):
        read_array(p)


def test_tif_2d_rejected_with_shape(tmp_path):
    p = tmp_path / "flat.tif"
    tifffile.imwrite(p, np.ones((5, 9), np.float32))
    assert read_array(p).shape == (5, 9)
    with pytest.raises(CDIError) as e:
        read_intensity(p)
    assert "flat.tif" in str(e.value) and "(5, 9)" in str(e.value)


def test_4d_and_complex_rejected(tmp_path):
    p = tmp_path / "four.npy"
    np.save(p, np.ones((2, 4, 4, 4), np.float32))
    with pytest.raises(CDIError, match=r"four\.npy.*\(2, 4, 4, 4\)"):
        read_intensity(p)
    p = tmp_path / "cplx.npy"
    np.save(p, np.ones((4, 4, 4), np.complex64))
    with pytest.raises(CDIError, match=r"cplx\.npy.*complex64"):
        read_intensity(p)


def test_h5_explicit_dataset(tmp_path, cube):
    p = tmp_path / "d.h5"
    with h5py.File(p, "w") as f:
        f["scan/a"] = cube
        f["scan/b"] = cube * 3
        f["scan/flat"] = np.ones((3, 3))
    before = snapshot(p)
    assert np.array_equal(read_intensity(p, dataset="/scan/b"), cube * 3)
    assert np.array_equal(read_intensity(p, dataset="scan/a"), cube)
    with pytest.raises(CDIError) as e:  # two 3-D datasets: ambiguous
        read_intensity(p)
    assert "d.h5" in str(e.value) and "/scan/a" in str(e.value)
    with pytest.raises(CDIError) as e:
        read_intensity(p, dataset="/scan/missing")
    assert "d.h5" in str(e.value) and "/scan/b" in str(e.value) and "not found" in str(e.value)
    with pytest.raises(CDIError, match="group"):
        read_intensity(p, dataset="/scan")
    assert snapshot(p) == before


def test_h5_single_3d_dataset_found(tmp_path, cube):
    p = tmp_path / "only.hdf5"
    with h5py.File(p, "w") as f:
        f["x/y/pattern"] = cube
        f["x/energy"] = 9.0
    assert np.array_equal(read_intensity(p), cube)


def test_cxi_default_paths(tmp_path, cube):
    p = tmp_path / "d.cxi"
    with h5py.File(p, "w") as f:
        f["entry_1/instrument_1/detector_1/data"] = cube
        f["entry_1/other"] = cube * 5
    assert np.array_equal(read_intensity(p), cube)
    p2 = tmp_path / "e.cxi"
    with h5py.File(p2, "w") as f:
        f["entry_1/data_1/data"] = cube * 2
        f["entry_1/instrument_1/detector_1/data"] = cube
    before = snapshot(p2)
    assert np.array_equal(read_intensity(p2), cube * 2)
    assert snapshot(p2) == before


def test_real_measured_pattern():
    if not REAL_TIF.exists():
        pytest.skip("real data file not present")
    before = snapshot(REAL_TIF)
    a = read_intensity(REAL_TIF)
    assert a.shape == (64, 64, 64) and a.dtype == np.float32
    assert np.unravel_index(np.argmax(a), a.shape) == (32, 31, 33)
    assert a.max() == pytest.approx(6.38e6, rel=1e-3)
    assert snapshot(REAL_TIF) == before


# ----------------------------------------------------------------------------- read errors

def test_missing_file(tmp_path):
    with pytest.raises(CDIError, match="nothere.npy.*not found"):
        read_intensity(tmp_path / "nothere.npy")


def test_directory(tmp_path):
    d = tmp_path / "dir.npy"
    d.mkdir()
    with pytest.raises(CDIError, match="dir.npy.*directory"):
        read_array(d)


def test_unknown_extension(tmp_path):
    p = tmp_path / "data.mat"
    p.write_bytes(b"xx")
    with pytest.raises(CDIError) as e:
        read_array(p)
    s = str(e.value)
    assert "data.mat" in s and ".npy" in s and ".tif" in s and ".cxi" in s


@pytest.mark.parametrize("name, content", [
    ("bad.npy", b"this is just text\n"),
    ("bad.npz", b"PK\x03\x04 truncated zip"),
    ("bad.tif", b"II*\x00\x08\x00\x00\x00\x05\x00"),  # truncated TIFF header
    ("bad.tiff", b"not a tiff at all"),
    ("bad.h5", b"not an hdf5 file\n" * 10),
    ("bad.cxi", b""),
])
def test_corrupt_files(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    before = snapshot(p)
    with pytest.raises(CDIError) as e:
        read_intensity(p)
    assert name in str(e.value)
    assert snapshot(p) == before


def test_truncated_real_tif(tmp_path, cube):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, cube)
    p = tmp_path / "cut.tif"
    p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CDIError, match="cut.tif"):
        read_intensity(p)


def test_text_renamed_npy_message(tmp_path):
    p = tmp_path / "notes.npy"
    p.write_text("hello\n")
    with pytest.raises(CDIError, match="notes.npy.*not a NumPy"):
        read_array(p)


def test_truncated_npy(tmp_path, cube):
    good = tmp_path / "good.npy"
    np.save(good, cube)
    p = tmp_path / "cut.npy"
    p.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CDIError, match="cut.npy"):
        read_intensity(p)


def test_object_npy_refused(tmp_path):
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(CDIError, match="obj.npy.*(pickle|object)"):
        read_array(p)
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(CDIError, match="obj.npz.*(pickle|object)"):
        read_array(p)


def test_h5_string_dataset_refused(tmp_path):
    p = tmp_path / "s.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("s", data="hello", dtype=h5py.string_dtype())
    with pytest.raises(CDIError, match="s.h5"):
        read_array(p, dataset="s")


def test_dataset_for_tif_refused(tmp_path, cube):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, cube)
    with pytest.raises(CDIError, match="stack.tif"):
        read_array(p, dataset="x")


# ----------------------------------------------------------------------------- atomic

def test_atomic_temp_path_and_success(tmp_path):
    target = tmp_path / "out.cxi"
    with atomic_path(target) as tmp:
        tmp = pathlib.Path(tmp)
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".cxi"
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert sorted(os.listdir(tmp_path)) == ["out.cxi"]
    # A plain open() would have honoured the umask, not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_atomic_failure_leaves_existing_file(tmp_path):
    target = tmp_path / "out.npy"
    target.write_bytes(b"original")
    before = snapshot(target)
    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            pathlib.Path(tmp).write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["out.npy"]


def test_atomic_refuses_existing_without_overwrite(tmp_path):
    target = tmp_path / "out.cxi"
    target.write_bytes(b"original")
    with pytest.raises(CDIError, match="out.cxi.*exists.*--overwrite"):
        check_writable(target)
    with pytest.raises(CDIError, match="exists"):
        with atomic_path(target):
            pass
    assert target.read_bytes() == b"original"
    check_writable(target, overwrite=True)
    assert os.listdir(tmp_path) == ["out.cxi"]


def test_atomic_refuses_protected_input(tmp_path):
    inp = tmp_path / "input.cxi"
    inp.write_bytes(b"measured")
    link = tmp_path / "link.cxi"
    link.symlink_to(inp)
    for target in (inp, link, tmp_path / "." / "input.cxi"):
        with pytest.raises(CDIError, match="input file"):
            check_writable(target, overwrite=True, protect=[str(inp)])
        with pytest.raises(CDIError, match="input file"):
            with atomic_path(target, overwrite=True, protect=(inp,)):
                pass
    assert inp.read_bytes() == b"measured"


def test_unwritable_directory(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "out.cxi"
    with pytest.raises(CDIError, match="does not exist"):
        check_writable(target)
    with pytest.raises(CDIError, match="out.cxi"):
        write_cxi(make_result(), target)


def test_readonly_directory(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(CDIError, match="not writable"):
            check_writable(d / "out.cxi")
    finally:
        d.chmod(0o700)


def test_unwritable_directory_simulated(tmp_path, monkeypatch):
    """Root ignores permissions, so fake both refusals the checks rely on."""
    import tempfile

    from cdi_plugins.io import atomic as atomic_module

    monkeypatch.setattr(atomic_module.os, "access", lambda *a, **k: False)
    with pytest.raises(CDIError, match="out.cxi.*not writable"):
        check_writable(tmp_path / "out.cxi")
    monkeypatch.undo()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CDIError, match="out.cxi.*cannot write.*Permission denied"):
        check_writable(tmp_path / "out.cxi")
    with pytest.raises(CDIError, match="out.cxi"):
        write_cxi(make_result(), tmp_path / "out.cxi")
    assert os.listdir(tmp_path) == []


def test_output_is_directory(tmp_path):
    (tmp_path / "out.cxi").mkdir()
    with pytest.raises(CDIError, match="directory"):
        check_writable(tmp_path / "out.cxi", overwrite=True)


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
