"""VTK XML image files (``.vti``) and structured grids (``.vts``) that ParaView, VisIt and ``vtk`` open.

:func:`write_vti` writes 3-D arrays on a regular grid as point data of one
``ImageData`` piece, binary and uncompressed (raw appended data with 64-bit
block sizes), atomically.  Array axis 0 is VTK's x (the data are written in
Fortran order), so a voxel ``a[i, j, k]`` sits at
``origin + (i, j, k) * spacing``.  :func:`read_vti` reads such files back
(and the base64 ``binary`` and ``ascii`` encodings of uncompressed files other
tools write).  :func:`write_vts` writes arrays on a grid whose every point is
given (a rocking scan's skewed grid, ``r = T (n - N/2)`` nm); :func:`read_vti`
reads those too (with ``points``).
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import atomic_path
from cdi_plugins.io.readers import _describe, check_input_file

__all__ = ["write_vti", "write_vts", "read_vti"]

_VTK_TYPES = {
    np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64",
    np.dtype(np.int8): "Int8", np.dtype(np.uint8): "UInt8", np.dtype(np.int16): "Int16",
    np.dtype(np.uint16): "UInt16", np.dtype(np.int32): "Int32", np.dtype(np.uint32): "UInt32",
    np.dtype(np.int64): "Int64", np.dtype(np.uint64): "UInt64",
}
_NUMPY_TYPES = {v: k for k, v in _VTK_TYPES.items()}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_ .()/-]*$")


def _vtk_array(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == bool:
        a = a.astype(np.uint8)
    elif np.iscomplexobj(a):
        raise CDIError(f"array '{name}' is complex; write its amplitude and phase as separate arrays")
    elif a.dtype not in _VTK_TYPES:
        a = a.astype(np.float64 if a.dtype.itemsize > 4 else np.float32)
    return a.astype(a.dtype.newbyteorder("<"), copy=False)


def _prepare(arrays: dict, loc: str) -> tuple[dict, tuple]:
    if not arrays:
        raise CDIError("no arrays to write", loc)
    shape = None
    prepared = {}
    for name, a in arrays.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise CDIError(f"array name {name!r} is not a plain name", loc)
        try:
            a = _vtk_array(name, a)
        except CDIError as e:
            raise e.at(loc) from None
        if a.ndim != 3:
            raise CDIError(f"array '{name}' has shape {a.shape}; VTK image data here is 3-D", loc)
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise CDIError(f"array '{name}' has shape {a.shape}, others {shape}", loc)
        prepared[name] = a
    return prepared, shape


def _write(path, kind: str, grid_attrs: str, shape, prepared: dict, points=None, *, overwrite, protect) -> None:
    """One piece of *kind* (ImageData or StructuredGrid), point data appended raw with 64-bit block sizes."""
    extent = " ".join(f"0 {n - 1}" for n in shape)
    lines = ['<?xml version="1.0"?>',
             f'<VTKFile type="{kind}" version="1.0" byte_order="LittleEndian" header_type="UInt64">',
             f'  <{kind} WholeExtent="{extent}"{grid_attrs}>',
             f'    <Piece Extent="{extent}">',
             f'      <PointData Scalars="{next(iter(prepared))}">']
    offset = 0
    blocks = []

    def block(data: bytes) -> int:
        nonlocal offset
        at = offset
        blocks.append(np.uint64(len(data)).astype("<u8").tobytes() + data)
        offset += len(blocks[-1])
        return at

    for name, a in prepared.items():
        at = block(np.asfortranarray(a).tobytes(order="F"))
        lines.append(f'        <DataArray type="{_VTK_TYPES[a.dtype.newbyteorder("=")]}" Name="{name}" '
                     f'NumberOfComponents="1" format="appended" offset="{at}"/>')
    lines += ['      </PointData>', '      <CellData/>']
    if points is not None:
        # x fastest: point (i, j, k) of the Fortran-ordered arrays, its 3 coordinates together
        data = np.ascontiguousarray(points.astype("<f4").transpose(2, 1, 0, 3)).tobytes()
        at = block(data)
        lines += ['      <Points>', f'        <DataArray type="Float32" Name="Points" NumberOfComponents="3" '
                  f'format="appended" offset="{at}"/>', '      </Points>']
    lines += ['    </Piece>', f'  </{kind}>', '  <AppendedData encoding="raw">']
    head = ("\n".join(lines) + "\n   _").encode("ascii")
    tail = b"\n  </AppendedData>\n</VTKFile>\n"
    with atomic_path(path, overwrite=overwrite, protect=protect) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(head)
                for b in blocks:
                    fh.write(b)
                fh.write(tail)
        except OSError as exc:
            raise CDIError(f"cannot write the VTK file ({_describe(exc)})", str(path)) from None


def write_vts(path, arrays: dict, points, *, overwrite: bool = False, protect=()) -> None:
    """Write 3-D arrays as a VTK XML StructuredGrid: *points* (n0, n1, n2, 3) is where each voxel sits (nm).

    The arrays are as for :func:`write_vti`; ParaView draws the grid as it is (skewed or curved).
    """
    loc = str(path)
    prepared, shape = _prepare(arrays, loc)
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != tuple(shape) + (3,) or not np.isfinite(pts).all():
        raise CDIError(f"points must be finite, of shape {tuple(shape) + (3,)}, got {pts.shape}", loc)
    _write(path, "StructuredGrid", "", shape, prepared, pts, overwrite=overwrite, protect=protect)


def write_vti(path, arrays: dict, *, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
              overwrite: bool = False, protect=()) -> None:
    """Write 3-D arrays as a VTK XML ImageData file.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``.vti``), written atomically.
    arrays : dict of str -> ndarray
        Point-data arrays, all of the same 3-D shape.  bool becomes UInt8;
        complex is refused.  The first one is the active scalar.
    spacing : 3 floats
        Grid step along array axes 0, 1, 2 (e.g. the voxel size in nm).
    origin : 3 floats
        Position of voxel ``[0, 0, 0]``.
    overwrite : bool
    protect : iterable of paths
        Input files that must never be overwritten.

    Raises
    ------
    CDIError
        For no arrays, a shape mismatch, a non-3-D or complex array, a bad
        name, or an output that cannot be written.
    """
    loc = str(path)
    prepared, shape = _prepare(arrays, loc)
    spacing = [float(v) for v in spacing]
    origin = [float(v) for v in origin]
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise CDIError(f"spacing must be 3 positive numbers, got {spacing}", loc)
    if len(origin) != 3 or not all(np.isfinite(origin)):
        raise CDIError(f"origin must be 3 finite numbers, got {origin}", loc)
    attrs = (f' Origin="{" ".join(repr(v) for v in origin)}" Spacing="{" ".join(repr(v) for v in spacing)}" '
             'Direction="1 0 0 0 1 0 0 0 1"')
    _write(path, "ImageData", attrs, shape, prepared, overwrite=overwrite, protect=protect)


def read_vti(path) -> dict:
    """Read a VTK XML ImageData file (uncompressed) into NumPy arrays.

    Returns
    -------
    dict
        ``arrays`` (name -> ndarray shaped like the grid, axis 0 = x),
        ``spacing``, ``origin`` (tuples of 3 floats) and ``shape``.

    Raises
    ------
    CDIError
        If the file is missing, not VTK ImageData, compressed, or truncated.
    """
    loc = str(path)
    p = check_input_file(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CDIError(f"cannot read ({exc.strerror or exc})", loc) from None
    cut = raw.find(b"<AppendedData")
    appended = b""
    if cut >= 0:
        start = raw.find(b"_", raw.find(b">", cut)) + 1
        if start <= 0:
            raise CDIError("not a valid VTK file: appended data without its '_' marker", loc)
        appended = raw[start:]
        head = raw[:cut] + b"</VTKFile>"
        enc = re.search(rb'encoding="(\w+)"', raw[cut:raw.find(b">", cut)])
        encoding = enc.group(1).decode() if enc else "raw"
    else:
        head, encoding = raw, None
    try:
        root = ET.fromstring(head)
    except ET.ParseError as exc:
        raise CDIError(f"not a valid VTK XML file ({exc})", loc) from None
    kind = root.get("type")
    if root.tag != "VTKFile" or kind not in ("ImageData", "StructuredGrid"):
        raise CDIError(f"not a VTK ImageData or StructuredGrid file (type {kind!r})", loc)
    if root.get("compressor"):
        raise CDIError("compressed VTK files are not supported by this reader", loc)
    if root.get("byte_order", "LittleEndian") != "LittleEndian":
        raise CDIError("big-endian VTK files are not supported by this reader", loc)
    header = np.dtype("<u8") if root.get("header_type", "UInt32") == "UInt64" else np.dtype("<u4")
    image = root.find(kind)
    if image is None:
        raise CDIError(f"no {kind} element", loc)
    ext = [int(v) for v in image.get("WholeExtent", "").split()]
    if len(ext) != 6:
        raise CDIError("ImageData has no 3-D WholeExtent", loc)
    shape = tuple(ext[2 * i + 1] - ext[2 * i] + 1 for i in range(3))
    spacing = tuple(float(v) for v in image.get("Spacing", "1 1 1").split())
    origin = tuple(float(v) for v in image.get("Origin", "0 0 0").split())
    arrays = {}
    points = None
    for da in image.iter("DataArray"):
        name = da.get("Name")
        ncomp = int(da.get("NumberOfComponents", "1"))
        dtype = _NUMPY_TYPES.get(da.get("type"))
        if dtype is None:
            raise CDIError(f"array '{name}': unsupported type {da.get('type')!r}", loc)
        dtype = dtype.newbyteorder("<")
        fmt = da.get("format", "ascii")
        count = int(np.prod(shape)) * ncomp
        if fmt == "appended":
            off = int(da.get("offset", "0"))
            if encoding != "raw":
                raise CDIError(f"appended data encoded as {encoding!r} is not supported", loc)
            if off + header.itemsize > len(appended):
                raise CDIError(f"array '{name}': the file is truncated", loc)
            nbytes = int(np.frombuffer(appended, header, 1, off)[0])
            body = appended[off + header.itemsize: off + header.itemsize + nbytes]
            if len(body) != nbytes or nbytes != count * dtype.itemsize:
                raise CDIError(f"array '{name}': the file is truncated or the sizes disagree", loc)
            a = np.frombuffer(body, dtype)
        elif fmt == "binary":
            body = base64.b64decode("".join((da.text or "").split()))
            a = np.frombuffer(body[header.itemsize:header.itemsize + count * dtype.itemsize], dtype)
        else:
            a = np.array((da.text or "").split(), dtype=dtype)
        if a.size != count:
            raise CDIError(f"array '{name}' holds {a.size} values, the grid {count}", loc)
        if ncomp == 3 and kind == "StructuredGrid" and name == "Points":
            points = np.array(a.reshape(shape[::-1] + (3,)).transpose(2, 1, 0, 3), order="C")
            continue
        arrays[name] = np.array(a.reshape(shape, order="F"), order="C")
    out = {"arrays": arrays, "spacing": spacing, "origin": origin, "shape": shape}
    if kind == "StructuredGrid":
        out.update(spacing=None, origin=None, points=points)
    return out
