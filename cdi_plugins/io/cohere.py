"""cohere's experiment folders, in and out.

* :func:`write_cohere_results` writes a result in cohere's ``results_phasing``
  layout (``image.npy``, ``support.npy``, ``errors.npy``, ``errors.txt``,
  ``metrics.txt``) so that cohere-ui's display and post-processing read it, and
  so that cohere can continue from it (``continue_dir``);
  :func:`read_cohere_results` reads such a folder back.
* :func:`read_config_rec` / :func:`write_config_rec` read and write cohere's
  ``conf/config_rec`` (``key = value`` lines, Python literals).

Turning a config_rec into a recipe and importing a whole experiment folder belong to the cohere plugin
(``cdi_plugins.algorithms.cohere.experiment``, the ``cdi import-cohere`` command): they need to know
its algorithm.

Conventions at this boundary: cohere's objects are the complex conjugates of
ours (its forward model is ``ifftn``), its saved images are normalised to a
maximum modulus of 1, its data files hold amplitudes sqrt(I) (centred), and its
TIFF files are transposed on read and write.  None of this needs cohere-core
installed, except the optional ``metrics.txt`` values other than chi.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["write_cohere_results", "read_cohere_results", "read_config_rec", "write_config_rec"]


# --------------------------------------------------------------------------------------------
# results_phasing


def _metrics(image: np.ndarray, errs) -> dict:
    chi = float(errs[-1]) if len(errs) else float("nan")
    try:  # cohere's own definitions, when it is installed
        import cohere_core.utilities.dvc_utils as dvut
        dvut.set_lib_from_pkg("np")
        m = dvut.all_metrics(image, [chi])
        return {k: float(v) for k, v in m.items()}
    except Exception:
        a = np.abs(image)
        return {"chi": chi, "sharpness": float(np.sum(a ** 4))}


def write_cohere_results(result, directory, *, overwrite: bool = False) -> str:
    """Write *result* (a :class:`~cdi_plugins.Result` or a State-like object with
    ``obj``, ``support`` and ``history``) as a cohere ``results_phasing`` folder.

    The folder appears all at once (written next to it, then renamed).  An
    existing folder is replaced only with *overwrite* and only if it holds an
    ``image.npy`` (so that no unrelated folder is ever deleted).

    Returns the folder's path.
    """
    target = os.path.abspath(os.fspath(directory))
    loc = os.fspath(directory)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise CDIError(f"output directory {parent} does not exist", loc)
    if os.path.lexists(target):
        if not overwrite:
            raise CDIError("exists; pass --overwrite to replace it", loc)
        if not os.path.isdir(target) or not os.path.exists(os.path.join(target, "image.npy")):
            raise CDIError("exists and is not a cohere results folder (no image.npy); refusing to replace it", loc)
    obj = np.asarray(result.obj)
    if hasattr(obj, "get"):  # a CuPy array
        obj = obj.get()
    support = np.asarray(result.support.get() if hasattr(result.support, "get") else result.support)
    errs = np.array([h["chi2"] for h in result.history if "chi2" in h], dtype=np.float32)
    mx = float(np.abs(obj).max()) or 1.0
    image = (np.conj(obj) / mx).astype(np.complex64)  # cohere's convention: conjugate, max-normalised
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=parent)
    except OSError as exc:
        raise CDIError(f"cannot write in directory {parent} ({exc.strerror or exc})", loc) from None
    try:
        np.save(os.path.join(tmp, "image.npy"), image)
        np.save(os.path.join(tmp, "support.npy"), support.astype(np.int64))
        np.save(os.path.join(tmp, "errors.npy"), errs)
        with open(os.path.join(tmp, "errors.txt"), "w") as fh:
            fh.write("\n".join(map(str, errs.tolist())))
        with open(os.path.join(tmp, "metrics.txt"), "w") as fh:
            fh.write(str(_metrics(image, errs)))
        os.chmod(tmp, 0o755)
        if os.path.lexists(target):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.", dir=parent)
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CDIError(f"cannot write the cohere results folder: {exc}", loc) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _optional(d: str, name: str):
    """``d/name`` as an array (never unpickled), or None when the file is not there."""
    p = os.path.join(d, name)
    return np.load(p, allow_pickle=False) if os.path.exists(p) else None


def read_cohere_results(directory) -> dict:
    """Read a cohere ``results_phasing`` folder (ours or cohere's).

    Returns ``{"obj": complex64 in our convention (conjugated back), "support": bool,
    "errors": float array or None, "metrics": dict or None, "coherence": array or None}``.
    The object keeps cohere's max-normalisation (its scale is not stored).
    """
    d = os.fspath(directory)
    p = os.path.join(d, "image.npy")
    if not os.path.isfile(p):
        raise CDIError("not a cohere results folder: no image.npy", d)
    try:
        image = np.load(p, allow_pickle=False)     # a pickle in a shared folder must not run code
        support = _optional(d, "support.npy")
        support = support > 0 if support is not None else np.abs(image) > 0
        errors = _optional(d, "errors.npy")
        coherence = _optional(d, "coherence.npy")
        metrics = None
        if os.path.exists(os.path.join(d, "metrics.txt")):
            with open(os.path.join(d, "metrics.txt")) as fh:
                metrics = ast.literal_eval(fh.read().strip() or "{}")
    except (OSError, ValueError, SyntaxError) as exc:
        raise CDIError(f"cannot read the cohere results folder: {exc}", d) from None
    return {"obj": np.conj(image).astype(np.complex64), "support": support.astype(bool), "errors": errors,
            "metrics": metrics, "coherence": coherence}


# --------------------------------------------------------------------------------------------
# config_rec


def read_config_rec(path) -> dict:
    """Parse a cohere config file (``key = value``, Python literals; ``#`` and ``/`` start comments)."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise CDIError(f"cannot read: {exc.strerror or exc}", p) from None
    out = {}
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith(("#", "/")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value.startswith("("):
            value = value.replace("(", "[").replace(")", "]")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise CDIError(f"{key.strip()}: cannot read value {value!r} (strings must be in quotes)",
                           f"{p}:{n}") from None
    return out


def write_config_rec(conf: dict, path, *, overwrite: bool = False) -> None:
    """Write *conf* in cohere's config format (atomically)."""
    from cdi_plugins.io.atomic import atomic_path
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for key, value in conf.items():
                fh.write(f'{key} = "{value}"\n' if isinstance(value, str) else f"{key} = {value!r}\n")
