"""Read diffraction patterns from NumPy, TIFF (a stack or a folder of frames) and HDF5/CXI files.

Every problem a user can cause (a missing file, a wrong extension, a corrupt
file, a dataset that is not there, a 2-D image where a 3-D pattern is needed)
is raised as :class:`~cdi_plugins.errors.CDIError` whose location is the file
name.  Files are opened read-only and never modified.
"""

from __future__ import annotations

import os
import re

import numpy as np

from cdi_plugins.core.state import as_float32
from cdi_plugins.io.atomic import note_input
from cdi_plugins.errors import CDIError

__all__ = ["read_header", "read_array", "read_intensity", "tiff_frames", "SUPPORTED_EXTENSIONS"]

NUMPY_EXTENSIONS = (".npy", ".npz")
TIFF_EXTENSIONS = (".tif", ".tiff")
HDF5_EXTENSIONS = (".h5", ".hdf5", ".cxi", ".nxs")
SUPPORTED_EXTENSIONS = NUMPY_EXTENSIONS + TIFF_EXTENSIONS + HDF5_EXTENSIONS

# Where a CXI file keeps its diffraction data, in order of preference.
CXI_DATA_PATHS = ("/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data")

_MAX_LISTED = 8


def _short_list(items, limit: int = _MAX_LISTED) -> str:
    items = list(items)
    if not items:
        return "(none)"
    s = ", ".join(items[:limit])
    if len(items) > limit:
        s += f", ... ({len(items) - limit} more)"
    return s


def _describe(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(msg) > 200:
        msg = msg[:200] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def check_input_file(path) -> str:
    """Check that *path* names an existing regular file; return it as a string.

    Raises
    ------
    CDIError
        If the file does not exist or is a directory.
    """
    p = os.fspath(path)
    loc = str(path)
    if os.path.isdir(p):
        raise CDIError("is a directory, expected a data file", loc)
    if not os.path.exists(p):
        parent = os.path.dirname(os.path.abspath(p))
        if not os.path.isdir(parent):
            raise CDIError(f"file not found (directory {parent} does not exist)", loc)
        raise CDIError("file not found", loc)
    if not os.path.isfile(p):
        raise CDIError("is not a regular file", loc)
    if not os.access(p, os.R_OK):
        raise CDIError("file is not readable (permission denied)", loc)
    note_input(p)  # protected from every write of this run (io.atomic)
    return p


def _extension(p: str) -> str:
    return os.path.splitext(p)[1].lower()


# --------------------------------------------------------------------------- NumPy

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


def _read_numpy(p: str, loc: str, dataset: str | None) -> np.ndarray:
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise CDIError(f"cannot read ({exc.strerror or exc})", loc) from None
    if not (head.startswith(_NPY_MAGIC) or head.startswith(_ZIP_MAGIC)):
        what = "empty" if not head else "not a NumPy .npy/.npz file (no NumPy or zip header)"
        raise CDIError(f"{what}; cannot read it as a NumPy file", loc)
    try:
        obj = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise CDIError("holds pickled data or an object array, which is never loaded "
                           "(allow_pickle=False); save a plain numeric array instead", loc) from None
        raise CDIError(f"cannot read as a NumPy file ({_describe(exc)})", loc) from None
    except Exception as exc:  # corrupt/truncated file, bad zip, ...
        raise CDIError(f"cannot read as a NumPy file ({_describe(exc)})", loc) from None

    if isinstance(obj, np.ndarray):
        if dataset is not None:
            raise CDIError(f"dataset {dataset!r} was given but a .npy file holds a single "
                           "array; leave dataset out", loc)
        if obj.dtype.hasobject:
            raise CDIError("holds an object array, which is never loaded; "
                           "save a plain numeric array instead", loc)
        return obj

    # An NpzFile (np.load detects the zip whatever the extension says).
    with obj as z:
        keys = list(z.files)
        if dataset is not None:
            key = dataset
            if key not in keys:
                raise CDIError(f"dataset {dataset!r} not found; the archive holds: "
                               f"{_short_list(keys)}", loc)
        elif len(keys) == 1:
            key = keys[0]
        elif not keys:
            raise CDIError("the .npz archive holds no arrays", loc)
        else:
            raise CDIError(f"the .npz archive holds {len(keys)} arrays ({_short_list(keys)}); "
                           "name the one to use as the dataset", loc)
        try:
            arr = z[key]
        except ValueError as exc:
            if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
                raise CDIError(f"array {key!r} is an object array (pickled), which is never "
                               "loaded (allow_pickle=False)", loc) from None
            raise CDIError(f"cannot read array {key!r} ({_describe(exc)})", loc) from None
        except Exception as exc:
            raise CDIError(f"cannot read array {key!r} ({_describe(exc)})", loc) from None
    return arr


# --------------------------------------------------------------------------- TIFF

def _read_tiff(p: str, loc: str, dataset: str | None) -> np.ndarray:
    import tifffile

    if dataset is not None:
        raise CDIError(f"dataset {dataset!r} was given but TIFF files have no named "
                       "datasets; leave dataset out", loc)
    try:
        with tifffile.TiffFile(p, mode="rb") as tf:
            npages = len(tf.pages)
            if npages == 0:
                raise CDIError("the TIFF file holds no images", loc)
            if len(tf.series) == 1:
                arr = tf.series[0].asarray()  # the whole stack when pages form one series
            else:
                arr = None
            if arr is None or (arr.ndim == 2 and npages > 1):
                # Pages that tifffile does not see as one series (differing
                # compression or descriptions, say): taking only its first
                # series would silently drop pages, so stack every page when
                # they agree and refuse otherwise.
                pages = [page.asarray() for page in tf.pages]
                kinds = sorted({f"{pg.shape} {pg.dtype}" for pg in pages})
                if len(kinds) != 1:
                    raise CDIError(f"the TIFF file holds {npages} pages of differing shape "
                                   f"or type ({_short_list(kinds)}); cannot stack them into "
                                   "a 3-D array", loc)
                arr = np.stack(pages)
    except CDIError:
        raise
    except Exception as exc:  # TiffFileError, truncated data, bad compression, ...
        raise CDIError(f"cannot read as a TIFF file ({_describe(exc)})", loc) from None
    arr = np.asarray(arr)
    # Drop singleton sample/channel axes (e.g. shape (n, h, w, 1)) but keep a 2-D page 2-D.
    while arr.ndim > 3 and 1 in arr.shape:
        arr = arr.squeeze(axis=arr.shape.index(1))
    return arr


def _natural_key(name: str):
    """'frame_2.tif' sorts before 'frame_10.tif'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def tiff_frames(folder) -> list[str]:
    """The TIFF files of *folder* in frame order (natural sort: 2 before 10); hidden files are skipped."""
    names = [n for n in os.listdir(folder)
             if not n.startswith(".") and _extension(n) in TIFF_EXTENSIONS
             and os.path.isfile(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(names, key=_natural_key)]


def _read_tiff_folder(p: str, loc: str, dataset: str | None) -> np.ndarray:
    import tifffile

    if dataset is not None:
        raise CDIError(f"dataset {dataset!r} was given but a folder of TIFF frames has no named "
                       "datasets; leave dataset out", loc)
    try:
        frames = tiff_frames(p)
    except OSError as exc:
        raise CDIError(f"cannot list the directory ({exc.strerror or exc})", loc) from None
    if not frames:
        raise CDIError("is a directory with no .tif/.tiff frames; give a data file or a folder of "
                       "TIFF frames (one 2-D image per file)", loc)
    pages, first = [], None
    for f in frames:
        name = os.path.basename(f)
        note_input(f)
        try:
            img = np.asarray(tifffile.imread(f))
        except Exception as exc:
            raise CDIError(f"frame {name}: cannot read as a TIFF file ({_describe(exc)})", loc) from None
        while img.ndim > 2 and 1 in img.shape:
            img = img.squeeze(axis=img.shape.index(1))
        if img.ndim != 2:
            raise CDIError(f"frame {name} holds a {img.ndim}-D array of shape {img.shape}; a folder "
                           "of frames needs one 2-D image per file", loc)
        if first is None:
            first = (name, img.shape, img.dtype)
        elif img.shape != first[1]:
            raise CDIError(f"frame {name} has shape {img.shape} but {first[0]} has {first[1]}; "
                           "every frame must have the same shape", loc)
        pages.append(img)
    return np.stack(pages)


# --------------------------------------------------------------------------- HDF5

def _open_h5(p: str, loc: str):
    import h5py

    try:
        try:
            return h5py.File(p, "r", locking=False)
        except TypeError:  # very old h5py without the locking argument
            return h5py.File(p, "r")
    except Exception as exc:
        raise CDIError(f"cannot open as an HDF5 file ({_describe(exc)})", loc) from None


def _list_datasets(f) -> list[tuple[str, tuple]]:
    import h5py

    found: list[tuple[str, tuple]] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append(("/" + name, tuple(obj.shape) if obj.shape is not None else ()))

    f.visititems(visit)
    return found


def _format_datasets(found) -> str:
    return _short_list(f"{name} {shape}" for name, shape in found)


def _read_hdf5(p: str, loc: str, dataset: str | None, header: bool = False):
    import h5py

    with _open_h5(p, loc) as f:
        try:
            if dataset is not None:
                name = "/" + dataset.lstrip("/")
                obj = f.get(name, default=None)
                if obj is None:
                    raise CDIError(f"dataset {name!r} not found; the file holds: "
                                   f"{_format_datasets(_list_datasets(f))}", loc)
                if not isinstance(obj, h5py.Dataset):
                    raise CDIError(f"{name!r} is a group, not a dataset; the file holds: "
                                   f"{_format_datasets(_list_datasets(f))}", loc)
            else:
                obj = None
                for name in CXI_DATA_PATHS:
                    cand = f.get(name, default=None)
                    if isinstance(cand, h5py.Dataset):
                        obj = cand
                        break
                if obj is None:
                    found = _list_datasets(f)
                    three_d = [(n, s) for n, s in found if len(s) == 3]
                    if len(three_d) == 1:
                        name = three_d[0][0]
                        obj = f[name]
                    elif not three_d:
                        raise CDIError("no dataset given and no 3-D dataset found (looked at "
                                       f"{', '.join(CXI_DATA_PATHS)}); the file holds: "
                                       f"{_format_datasets(found)}", loc)
                    else:
                        raise CDIError(f"no dataset given and {len(three_d)} 3-D datasets found "
                                       f"({_format_datasets(three_d)}); name the one to use "
                                       "as the dataset", loc)
            if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype) is not None:
                raise CDIError(f"dataset {obj.name!r} holds strings or objects, not numbers", loc)
            if header:
                return tuple(obj.shape), np.dtype(obj.dtype)
            return np.asarray(obj[()])
        except CDIError:
            raise
        except Exception as exc:  # corrupt chunks, missing filters, broken links, ...
            raise CDIError(f"cannot read HDF5 data ({_describe(exc)})", loc) from None


# --------------------------------------------------------------------------- public

def read_header(path, *, dataset: str | None = None) -> tuple[tuple, np.dtype]:
    """Shape and dtype of what :func:`read_array` would return, reading as little as the format allows.

    ``.npy`` files are memory-mapped (only the header is read), HDF5 datasets and single-series TIFF
    stacks report their shape from their metadata, a folder of TIFF frames counts its frames and opens the
    first; other layouts (``.npz``, multi-series TIFF) are read.  Raises what :func:`read_array` raises.
    """
    loc = str(path)
    if os.path.isdir(os.fspath(path)):
        frames = tiff_frames(os.fspath(path)) if os.access(os.fspath(path), os.R_OK) else []
        if frames and dataset is None:
            shape, dtype = read_header(frames[0])
            if len(shape) == 2:
                return (len(frames), *shape), dtype
        a = read_array(path, dataset=dataset)
        return a.shape, a.dtype
    p = check_input_file(path)
    ext = _extension(p)
    try:
        if ext in HDF5_EXTENSIONS:
            return _read_hdf5(p, loc, dataset, header=True)
        if ext == ".npy" and dataset is None:
            with open(p, "rb") as fh:
                if fh.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                    a = np.load(p, mmap_mode="r", allow_pickle=False)
                    if not a.dtype.hasobject:
                        return tuple(a.shape), a.dtype
        if ext in TIFF_EXTENSIONS and dataset is None:
            import tifffile
            with tifffile.TiffFile(p, mode="rb") as tf:
                if len(tf.series) == 1 and tf.series[0].ndim >= 3:
                    shape = list(tf.series[0].shape)
                    while len(shape) > 3 and 1 in shape:   # as read_array squeezes sample axes
                        shape.remove(1)
                    return tuple(shape), np.dtype(tf.series[0].dtype)
    except CDIError:
        raise
    except Exception:  # anything unusual: let the full reader give its precise message
        pass
    a = read_array(path, dataset=dataset)
    return a.shape, a.dtype


def read_array(path, *, dataset: str | None = None) -> np.ndarray:
    """Read one array from a NumPy, TIFF or HDF5/CXI file.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``, ``.npz``, ``.tif``/``.tiff`` or ``.h5``/``.hdf5``/``.cxi``/``.nxs``
        (case-insensitive), or a folder of TIFF frames (one 2-D image per
        file, stacked along axis 0 in natural order: ``frame_2`` before
        ``frame_10``; other files in the folder are ignored).
    dataset : str, optional
        For ``.npz``: the array name (needed when the archive holds more than
        one).  For HDF5: the dataset path.  Without it an HDF5 file is searched
        at ``/entry_1/data_1/data``, then
        ``/entry_1/instrument_1/detector_1/data``, then for its only 3-D
        dataset.  Not allowed for ``.npy`` and TIFF.

    Returns
    -------
    numpy.ndarray
        The array as stored (any dtype and dimensionality; a single-page TIFF
        comes back 2-D, a multi-page stack 3-D).

    Raises
    ------
    CDIError
        Located at the file name, if the file is missing, a directory, of an
        unsupported type, corrupt or unreadable, holds pickled/object data, or
        the dataset cannot be found (the message lists what is there).
    """
    loc = str(path)
    if os.path.isdir(os.fspath(path)):
        return _read_tiff_folder(os.fspath(path), loc, dataset)
    p = check_input_file(path)
    ext = _extension(p)
    if ext in NUMPY_EXTENSIONS:
        return _read_numpy(p, loc, dataset)
    if ext in TIFF_EXTENSIONS:
        return _read_tiff(p, loc, dataset)
    if ext in HDF5_EXTENSIONS:
        return _read_hdf5(p, loc, dataset)
    raise CDIError(f"unsupported file type {ext or '(no extension)'!r}; supported: "
                   f"{', '.join(SUPPORTED_EXTENSIONS)}", loc)


def read_intensity(path, *, dataset: str | None = None) -> np.ndarray:
    """Read a 3-D diffraction intensity as a new float32 array.

    Parameters
    ----------
    path : str or os.PathLike
        Any file :func:`read_array` reads.
    dataset : str, optional
        See :func:`read_array`.

    Returns
    -------
    numpy.ndarray of float32, shape (n0, n1, n2)
        A fresh copy.  NaN, infinities and negative values are *not* checked
        here (:meth:`cdi_plugins.core.state.Problem.from_array` does that).

    Raises
    ------
    CDIError
        Everything :func:`read_array` raises, and if the array is not 3-D or
        not of a real numeric dtype; the message names the file and shape.
    """
    loc = str(path)
    arr = read_array(path, dataset=dataset)
    if arr.ndim != 3:
        hint = ""
        if arr.ndim == 2 and _extension(os.fspath(path)) in TIFF_EXTENSIONS:
            hint = " (a single-page TIFF; a 3-D pattern needs a multi-page stack)"
        raise CDIError(f"expected a 3-D intensity array, got {arr.ndim}-D with shape "
                       f"{tuple(arr.shape)}{hint}", loc)
    if arr.dtype.kind not in "iuf":
        raise CDIError(f"intensity must be real numbers, got dtype {arr.dtype} with shape "
                       f"{tuple(arr.shape)}", loc)
    return as_float32(arr, loc)
