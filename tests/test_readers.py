"""Tests for cdi_plugins.io.readers: every supported format, and a clear error for every bad file."""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import pytest
import tifffile

from cdi_plugins.errors import CDIError
from cdi_plugins.io import read_array, read_intensity
from tests.io_helpers import cube, snapshot  # noqa: F401  (cube: fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
REAL_TIF = REPO.parent / "shared" / "data" / "au_3dcdinn_ft_crop_64.tif"


# ----------------------------------------------------------------------------- readers

@pytest.mark.parametrize("name, write", [("a.npy", np.save), ("stack.tif", tifffile.imwrite)])
def test_npy_and_multipage_tif_round_trip(tmp_path, cube, name, write):
    p = tmp_path / name
    write(p, cube)
    before = snapshot(p)
    out = read_intensity(p)
    assert out.dtype == np.float32 and out.shape == cube.shape and np.array_equal(out, cube)
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


def test_read_header_matches_what_read_array_returns(tmp_path, cube):
    from cdi_plugins.io import read_header
    np.save(tmp_path / "a.npy", cube.astype(np.uint16))
    np.savez(tmp_path / "b.npz", data=cube)
    tifffile.imwrite(tmp_path / "c.tif", cube.astype(np.float32))
    tifffile.imwrite(tmp_path / "d.tif", cube[..., None].astype(np.int32))       # a sample axis, squeezed
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f["entry_1/data_1/data"] = cube.astype(np.float64)
    (tmp_path / "frames").mkdir()
    for i, page in enumerate(cube):
        tifffile.imwrite(tmp_path / "frames" / f"f_{i}.tif", page.astype(np.uint32))
    for name in ("a.npy", "b.npz", "c.tif", "d.tif", "e.h5", "frames"):
        arr = read_array(tmp_path / name)
        assert read_header(tmp_path / name) == (arr.shape, arr.dtype), name


def test_read_header_of_a_npy_reads_only_the_header(tmp_path):
    from cdi_plugins.io import read_header
    path = tmp_path / "big.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1), np.float32))
    header["shape"] = (512, 512, 512)                         # 512 MB announced, only the header on disk
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    with pytest.raises(CDIError):
        read_array(path)                                      # the data is not there
    with pytest.raises((CDIError, ValueError)):
        read_header(path)                                     # mmap sees the file is too short
    fh = open(path, "ab")
    fh.truncate(path.stat().st_size + 512 ** 3 * 4)           # sparse file: the size is announced, not written
    fh.close()
    assert read_header(path) == ((512, 512, 512), np.dtype(np.float32))
