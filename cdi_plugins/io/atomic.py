"""Write output files atomically: all or nothing, never over an input.

:func:`atomic_path` hands out a hidden temporary file next to the target and
moves it into place with :func:`os.replace` only when the ``with`` block ends
without an exception, so a crash or an error midway leaves any existing file
exactly as it was and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import Iterable, Iterator

from cdi_plugins.errors import CDIError

__all__ = ["atomic_path", "check_writable"]


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _make_temp(target: str, loc: str) -> str:
    d, name = os.path.split(target)
    ext = os.path.splitext(name)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{ext}", dir=d)
    except OSError as exc:
        raise CDIError(f"cannot write in directory {d} ({exc.strerror or exc})", loc) from None
    os.close(fd)
    return tmp


def _remove_quietly(p: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(p)


def _checks(path, overwrite: bool, protect: Iterable) -> tuple[str, str]:
    loc = str(path)
    target = os.path.abspath(os.fspath(path))
    d = os.path.dirname(target)
    if not os.path.isdir(d):
        raise CDIError(f"output directory {d} does not exist", loc)
    if os.path.isdir(target):
        raise CDIError("is a directory; give a file name for the output", loc)
    for q in protect or ():
        if q is None:
            continue
        if _same_file(target, os.path.abspath(os.fspath(q))):
            raise CDIError(f"refusing to overwrite the input file {os.fspath(q)}; "
                           "choose another output name", loc)
    if os.path.lexists(target) and not overwrite:
        raise CDIError("exists; pass --overwrite to replace it", loc)
    if not os.access(d, os.W_OK | os.X_OK):
        raise CDIError(f"output directory {d} is not writable", loc)
    return target, loc


def check_writable(path, overwrite: bool = False, protect: Iterable = ()) -> None:
    """Check that *path* can be written, without writing it.

    Runs the same checks as :func:`atomic_path` (including creating and
    removing a probe file in the target directory), so a command line tool can
    fail before spending time on a computation.

    Parameters
    ----------
    path : str or os.PathLike
        The output file.
    overwrite : bool, default False
        Whether an existing *path* may be replaced.
    protect : iterable of str or os.PathLike
        Files that must never be overwritten (the inputs); compared after
        resolving links.

    Raises
    ------
    CDIError
        If the directory is missing or not writable, *path* is a directory,
        *path* exists and *overwrite* is false, or *path* is one of *protect*.
    """
    target, loc = _checks(path, overwrite, protect)
    _remove_quietly(_make_temp(target, loc))


@contextlib.contextmanager
def atomic_path(path, *, overwrite: bool = False, protect: Iterable = ()) -> Iterator[str]:
    """Context manager yielding a temporary path that replaces *path* on success.

    The temporary file is hidden (``.name.XXXX.tmp.ext``), lies in the same
    directory as *path* (so the final :func:`os.replace` is atomic) and has the
    same suffix.  It already exists (empty) when yielded; writers should open
    it for writing/truncation.  If the block raises, the temporary file is
    removed, *path* is left untouched and the exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        The final output file.
    overwrite : bool, default False
        Whether an existing *path* may be replaced.
    protect : iterable of str or os.PathLike
        Files that must never be overwritten (the inputs), even with
        *overwrite*.

    Yields
    ------
    str
        The temporary path to write to.

    Raises
    ------
    CDIError
        Before the block runs, for the reasons listed in
        :func:`check_writable`; after it, if the file cannot be moved into
        place.
    """
    target, loc = _checks(path, overwrite, protect)
    tmp = _make_temp(target, loc)
    try:
        yield tmp
    except BaseException:
        _remove_quietly(tmp)
        raise
    try:
        if not overwrite and os.path.lexists(target):
            raise CDIError("appeared while it was being written; pass --overwrite to replace it",
                           loc)
        # mkstemp makes the file 0600; give it what a plain open() would have
        # (or the mode of the file it replaces).
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise CDIError(f"cannot move the finished file into place "
                           f"({exc.strerror or exc})", loc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
