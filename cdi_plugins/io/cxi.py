"""Write and read reconstruction results as CXI (1.6-style HDF5) files.

Layout written by :func:`write_cxi`::

    /cxi_version                                   160
    /entry_1/start_time                            ISO 8601 string
    /entry_1/data_1/data                           intensity (float32)
    /entry_1/instrument_1/detector_1/mask          mask (uint8, 1 = bad), if any
    /entry_1/image_1/data                          object (complex64, centred)
    /entry_1/image_1/support                       support (uint8)
    /entry_1/image_1/is_fft_shifted                0
    /entry_1/image_1/process_1/program             "cdi-plugins"
    /entry_1/image_1/process_1/version
    /entry_1/image_1/process_1/configuration/      recipe, versions, metadata (JSON)
    /entry_1/image_1/process_1/results/            chi2, step, iteration, algorithm,
                                                   history_json, step_seconds,
                                                   steps_json, dataset
    /entry_1/image_2/data, title = "truth"         true object, if known

:func:`load_cxi` reads such a file back into a :class:`~cdi_plugins.core.result.Result`.
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.core.result import Result
from cdi_plugins.io.atomic import atomic_path
from cdi_plugins.io.readers import _describe, _open_h5, check_input_file

__all__ = ["write_cxi", "load_cxi", "PROGRAM"]

PROGRAM = "cdi-plugins"
CXI_VERSION = 160

_IMAGE = "/entry_1/image_1"
_PROCESS = _IMAGE + "/process_1"
_CONFIG = _PROCESS + "/configuration"
_RESULTS = _PROCESS + "/results"
_DATA = "/entry_1/data_1/data"
_MASK = "/entry_1/instrument_1/detector_1/mask"
_TRUTH = "/entry_1/image_2"


def _package_version() -> str:
    try:
        from cdi_plugins._version import __version__
        return str(__version__)
    except Exception:
        pass
    try:
        from importlib.metadata import version
        return version("cdi-plugins")
    except Exception:
        return "unknown"


def _jsonable(o):
    """``default`` hook for :func:`json.dumps`: NumPy and other common types."""
    if isinstance(o, np.ndarray):
        return o.tolist() if o.dtype.kind != "c" else [[z.real, z.imag] for z in o.ravel().tolist()]
    if isinstance(o, np.generic):
        o = o.item()
        if isinstance(o, complex):
            return [o.real, o.imag]
        return o
    if isinstance(o, complex):
        return [o.real, o.imag]
    if isinstance(o, (bytes, bytearray)):
        return o.decode("utf-8", errors="replace")
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=str)
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, pathlib.PurePath):
        return str(o)
    if hasattr(o, "get") and hasattr(o, "__array__"):  # a CuPy array
        return np.asarray(o.get()).tolist()
    return str(o)


def _dumps(obj) -> str:
    return json.dumps(obj, default=_jsonable)


def _string(group, name: str, text: str):
    import h5py
    return group.create_dataset(name, data=str(text), dtype=h5py.string_dtype())


def _array(group, name: str, data: np.ndarray, dtype):
    data = np.ascontiguousarray(np.asarray(data), dtype=dtype)
    kw = {}
    if data.ndim >= 1 and data.size > 1024:
        kw = dict(compression="gzip", compression_opts=1, shuffle=True)
    return group.create_dataset(name, data=data, **kw)


def _host(a):
    """Bring a (possibly CuPy) array to the host."""
    if a is None:
        return None
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        a = a.get()
    return np.asarray(a)


def _write(f, result: Result) -> None:
    import h5py

    f.attrs["creator"] = PROGRAM
    f.create_dataset("cxi_version", data=np.int32(CXI_VERSION))
    entry = f.create_group("entry_1")
    entry.attrs["NX_class"] = "NXentry"
    _string(entry, "start_time",
            datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"))

    intensity = _host(result.intensity)
    if intensity is not None:
        data_1 = entry.create_group("data_1")
        data_1.attrs["NX_class"] = "NXdata"
        _array(data_1, "data", intensity, np.float32)
    mask = _host(result.mask)
    if mask is not None:
        det = entry.create_group("instrument_1/detector_1")
        _array(det, "mask", mask.astype(bool), np.uint8)

    image = entry.create_group("image_1")
    image.attrs["NX_class"] = "NXdata"
    _array(image, "data", _host(result.obj), np.complex64)
    _array(image, "support", _host(result.support).astype(bool), np.uint8)
    image.create_dataset("is_fft_shifted", data=np.int32(0))

    process = image.create_group("process_1")
    _string(process, "program", PROGRAM)
    _string(process, "version", _package_version())

    config = process.create_group("configuration")
    _string(config, "recipe", result.recipe or "")
    _string(config, "versions", _dumps(dict(result.versions or {})))
    _string(config, "metadata", _dumps(dict(result.metadata or {})))

    history = list(result.history or [])
    res = process.create_group("results")

    def num(rec, key, kind):
        v = rec.get(key) if isinstance(rec, dict) else None
        try:
            return kind(v)
        except (TypeError, ValueError):
            return math.nan if kind is float else -1

    res.create_dataset("chi2", data=np.array([num(r, "chi2", float) for r in history],
                                             dtype=np.float64))
    res.create_dataset("step", data=np.array([num(r, "step", int) for r in history],
                                             dtype=np.int32))
    res.create_dataset("iteration", data=np.array([num(r, "iteration", int) for r in history],
                                                  dtype=np.int32))
    algos = [str(r.get("algorithm", "")) if isinstance(r, dict) else "" for r in history]
    res.create_dataset("algorithm", data=np.array(algos, dtype=object),
                       shape=(len(algos),), dtype=h5py.string_dtype())
    _string(res, "history_json", _dumps(history))
    res.create_dataset("step_seconds", data=np.array([float(t) for t in (result.timings or [])],
                                                     dtype=np.float64))
    _string(res, "steps_json", _dumps(list(result.steps or [])))
    _string(res, "dataset", result.dataset if result.dataset is not None else "default")

    truth = _host(result.truth)
    if truth is not None:
        image_2 = entry.create_group("image_2")
        image_2.attrs["NX_class"] = "NXdata"
        _array(image_2, "data", truth, np.complex64)
        _string(image_2, "title", "truth")


def write_cxi(result: Result, path, *, overwrite: bool = False, protect=()) -> None:
    """Write a :class:`~cdi_plugins.core.result.Result` as a CXI 1.6-style HDF5 file.

    The file is written to a hidden temporary file and moved into place only
    when complete (see :func:`~cdi_plugins.io.atomic.atomic_path`).

    Parameters
    ----------
    result : Result
        What to write.  ``history``, ``steps``, ``metadata`` and ``versions``
        are stored as JSON (NumPy scalars and arrays become numbers and lists,
        complex numbers ``[re, im]``, anything else its ``str``); ``chi2``,
        ``step``, ``iteration`` and ``algorithm`` of each history record are
        also stored as arrays for other tools.
    path : str or os.PathLike
        The output file (``.cxi`` by convention).
    overwrite : bool, default False
        Whether an existing *path* may be replaced.
    protect : iterable of str or os.PathLike
        Input files that must never be overwritten.

    Raises
    ------
    CDIError
        If *path* cannot or may not be written; the message names the file.
    """
    import h5py

    loc = str(path)
    with atomic_path(path, overwrite=overwrite, protect=protect) as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                _write(f, result)
        except OSError as exc:  # disk full, quota, I/O error
            raise CDIError(f"cannot write the result file ({_describe(exc)})", loc) from None


def _read_string(ds) -> str:
    v = ds[()]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):  # a 1-element array written by another tool
        v = v.ravel()[0]
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return str(v)


def load_cxi(path) -> Result:
    """Read a result file written by :func:`write_cxi`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.cxi`` file written by cdi-plugins.

    Returns
    -------
    Result
        With ``obj`` complex64, ``support`` bool, ``intensity`` float32 and
        ``mask`` bool (or None when not stored), ``truth`` complex64 or None,
        ``history``/``steps``/``metadata``/``versions`` as decoded from JSON and
        ``timings`` a list of float.

    Raises
    ------
    CDIError
        If the file is missing or unreadable, or is not a cdi-plugins result
        (the message says what is missing).
    """
    import h5py

    loc = str(path)
    p = check_input_file(path)
    with _open_h5(p, loc) as f:
        program_ds = f.get(_PROCESS + "/program")
        if not isinstance(program_ds, h5py.Dataset):
            raise CDIError(f"not a cdi-plugins result file: {_PROCESS}/program is missing", loc)
        program = _read_string(program_ds)
        if program != PROGRAM:
            raise CDIError(f"not a cdi-plugins result file: written by {program!r}", loc)
        required = [_IMAGE + "/data", _IMAGE + "/support", _CONFIG + "/recipe",
                    _CONFIG + "/versions", _CONFIG + "/metadata", _RESULTS + "/history_json",
                    _RESULTS + "/step_seconds", _RESULTS + "/steps_json", _RESULTS + "/dataset"]
        missing = [name for name in required if not isinstance(f.get(name), h5py.Dataset)]
        if missing:
            raise CDIError(f"not a complete cdi-plugins result file: missing {', '.join(missing)}",
                           loc)
        try:
            obj = np.asarray(f[_IMAGE + "/data"][()], dtype=np.complex64)
            support = np.asarray(f[_IMAGE + "/support"][()]).astype(bool)
            history = json.loads(_read_string(f[_RESULTS + "/history_json"]))
            steps = json.loads(_read_string(f[_RESULTS + "/steps_json"]))
            timings = [float(t) for t in np.asarray(f[_RESULTS + "/step_seconds"][()]).ravel()]
            metadata = json.loads(_read_string(f[_CONFIG + "/metadata"]))
            versions = json.loads(_read_string(f[_CONFIG + "/versions"]))
            recipe = _read_string(f[_CONFIG + "/recipe"])
            dataset = _read_string(f[_RESULTS + "/dataset"])
            intensity = None
            if isinstance(f.get(_DATA), h5py.Dataset):
                intensity = np.asarray(f[_DATA][()], dtype=np.float32)
            mask = None
            if isinstance(f.get(_MASK), h5py.Dataset):
                mask = np.asarray(f[_MASK][()]).astype(bool)
            truth = None
            if isinstance(f.get(_TRUTH + "/data"), h5py.Dataset):
                title = f.get(_TRUTH + "/title")
                if title is None or _read_string(title) == "truth":
                    truth = np.asarray(f[_TRUTH + "/data"][()], dtype=np.complex64)
        except Exception as exc:  # corrupt datasets, bad JSON
            raise CDIError(f"cannot read the result file ({_describe(exc)})", loc) from None
    return Result(obj=obj, support=support, history=history, timings=timings, steps=steps,
                  intensity=intensity, mask=mask, metadata=metadata, truth=truth,
                  recipe=recipe, dataset=dataset, versions=versions)
