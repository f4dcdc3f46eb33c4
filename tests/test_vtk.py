"""Tests for cdi_plugins.io.vtk: .vti files that ParaView opens, read back exactly."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from cdi_plugins import CDIError
from cdi_plugins.io import read_vti, write_vti


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    shape = (7, 5, 6)  # all different: a transposed axis cannot pass
    return {
        "amplitude": rng.random(shape, dtype=np.float32),
        "phase": (rng.random(shape) * 6 - 3).astype(np.float32),
        "support": rng.random(shape) > 0.5,
        "strain": rng.normal(0, 1e-3, shape),                        # float64 stays float64
    }


def header(path) -> ET.Element:
    raw = path.read_bytes()
    cut = raw.find(b"<AppendedData")
    return ET.fromstring(raw[:cut] + b"</VTKFile>")


def test_round_trip_is_exact(tmp_path, arrays):
    p = tmp_path / "obj.vti"
    write_vti(p, arrays, spacing=(2.0, 3.0, 4.5), origin=(10.0, 0.0, -9.0))
    back = read_vti(p)
    assert back["shape"] == (7, 5, 6)
    assert back["spacing"] == (2.0, 3.0, 4.5) and back["origin"] == (10.0, 0.0, -9.0)
    assert list(back["arrays"]) == ["amplitude", "phase", "support", "strain"]
    for name in ("amplitude", "phase", "strain"):
        np.testing.assert_array_equal(back["arrays"][name], arrays[name])
        assert back["arrays"][name].dtype == arrays[name].dtype
    assert back["arrays"]["support"].dtype == np.uint8
    np.testing.assert_array_equal(back["arrays"]["support"].astype(bool), arrays["support"])


def test_header_is_what_paraview_expects(tmp_path, arrays):
    p = tmp_path / "obj.vti"
    write_vti(p, arrays, spacing=(1.5, 1.5, 1.5))
    root = header(p)
    assert root.tag == "VTKFile" and root.get("type") == "ImageData"
    assert root.get("byte_order") == "LittleEndian" and root.get("header_type") == "UInt64"
    image = root.find("ImageData")
    assert image.get("WholeExtent") == "0 6 0 4 0 5"
    assert image.get("Spacing") == "1.5 1.5 1.5"
    assert image.find("Piece").get("Extent") == "0 6 0 4 0 5"
    point_data = image.find("Piece/PointData")
    assert point_data.get("Scalars") == "amplitude"
    types = {d.get("Name"): d.get("type") for d in point_data.iter("DataArray")}
    assert types == {"amplitude": "Float32", "phase": "Float32", "support": "UInt8", "strain": "Float64"}
    offsets = [int(d.get("offset")) for d in point_data.iter("DataArray")]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_array_axis_0_is_vtk_x(tmp_path):
    """VTK stores x fastest: the first values in the file walk along array axis 0."""
    a = np.zeros((4, 3, 2), dtype=np.float32)
    i, j, k = np.indices(a.shape)
    a[...] = i + 10 * j + 100 * k
    p = tmp_path / "order.vti"
    write_vti(p, {"index": a})
    raw = p.read_bytes()
    start = raw.index(b"_", raw.index(b"<AppendedData")) + 1 + 8   # skip the 64-bit size
    first = np.frombuffer(raw[start:start + 4 * 5], "<f4")
    assert first.tolist() == [0.0, 1.0, 2.0, 3.0, 10.0]


def test_reads_base64_and_ascii_written_by_other_tools(tmp_path):
    import base64
    a = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    body = base64.b64encode(np.uint32(a.nbytes).tobytes() + a.tobytes(order="F")).decode()
    text = f"""<?xml version="1.0"?>
<VTKFile type="ImageData" version="0.1" byte_order="LittleEndian">
  <ImageData WholeExtent="0 1 0 1 0 1" Origin="0 0 0" Spacing="1 1 1">
    <Piece Extent="0 1 0 1 0 1"><PointData>
      <DataArray type="Float32" Name="b64" format="binary">{body}</DataArray>
      <DataArray type="Int32" Name="txt" format="ascii">{" ".join(str(int(v)) for v in a.ravel(order="F"))}</DataArray>
    </PointData></Piece>
  </ImageData>
</VTKFile>
"""
    p = tmp_path / "other.vti"
    p.write_text(text)
    back = read_vti(p)["arrays"]
    np.testing.assert_array_equal(back["b64"], a)
    np.testing.assert_array_equal(back["txt"], a.astype(np.int32))


def test_readable_by_vtk_when_installed(tmp_path, arrays):
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy
    p = tmp_path / "obj.vti"
    write_vti(p, arrays, spacing=(2.0, 3.0, 4.5))
    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(str(p))
    reader.Update()
    img = reader.GetOutput()
    assert img.GetDimensions() == (7, 5, 6)
    got = vtk_to_numpy(img.GetPointData().GetArray("phase")).reshape((7, 5, 6), order="F")
    np.testing.assert_array_equal(got, arrays["phase"])


def test_writing_is_atomic_and_refuses_to_overwrite(tmp_path, arrays):
    p = tmp_path / "obj.vti"
    p.write_bytes(b"old")
    with pytest.raises(CDIError, match="exists"):
        write_vti(p, arrays)
    assert p.read_bytes() == b"old"
    write_vti(p, arrays, overwrite=True)
    assert read_vti(p)["shape"] == (7, 5, 6)
    assert sorted(os.listdir(tmp_path)) == ["obj.vti"]      # no temporary file left behind


@pytest.mark.parametrize("bad, words", [
    ({}, "no arrays"),
    ({"c": np.zeros((2, 2, 2), np.complex64)}, "complex"),
    ({"a": np.zeros((2, 2, 2)), "b": np.zeros((2, 2, 3))}, "shape"),
    ({"flat": np.zeros((2, 2))}, "3-D"),
    ({'a"b': np.zeros((2, 2, 2))}, "plain name"),
])
def test_bad_arrays_are_refused_and_nothing_written(tmp_path, bad, words):
    p = tmp_path / "bad.vti"
    with pytest.raises(CDIError, match=words) as info:
        write_vti(p, bad)
    assert "bad.vti" in str(info.value)
    assert not p.exists()


def test_reader_errors_name_the_file(tmp_path, arrays):
    p = tmp_path / "obj.vti"
    write_vti(p, arrays)
    cut = tmp_path / "cut.vti"
    cut.write_bytes(p.read_bytes()[:-200])
    with pytest.raises(CDIError, match="cut.vti.*truncated"):
        read_vti(cut)
    other = tmp_path / "grid.vti"
    other.write_text('<?xml version="1.0"?><VTKFile type="PolyData"></VTKFile>')
    with pytest.raises(CDIError, match="grid.vti.*not a VTK ImageData"):
        read_vti(other)
    with pytest.raises(CDIError, match="missing.vti.*not found"):
        read_vti(tmp_path / "missing.vti")


def test_vts_keeps_every_point_of_a_skewed_grid(tmp_path):
    from cdi_plugins.io.vtk import write_vts
    t = np.array([[10.0, 2.0, 0.0], [0.0, 9.0, 1.5], [3.0, 0.0, 12.0]])           # nm per index step
    shape = (4, 5, 6)
    n = np.stack(np.meshgrid(*[np.arange(k) - k // 2 for k in shape], indexing="ij"), axis=-1)
    points = n @ t.T
    amp = np.random.default_rng(0).random(shape).astype(np.float32)
    write_vts(tmp_path / "a.vts", {"amplitude": amp, "support": amp > 0.5}, points)
    assert header(tmp_path / "a.vts").get("type") == "StructuredGrid"
    back = read_vti(tmp_path / "a.vts")
    np.testing.assert_array_equal(back["arrays"]["amplitude"], amp)
    np.testing.assert_allclose(back["points"], points, rtol=1e-6)        # float32 coordinates, nm
    assert back["points"][1, 0, 0] - back["points"][0, 0, 0] == pytest.approx(t[:, 0])
    with pytest.raises(CDIError, match="points must be"):
        write_vts(tmp_path / "b.vts", {"amplitude": amp}, points[:-1])
