"""Write output files atomically: all or nothing, never over an input.  Every writer goes through here.

The rule, in one place:

* :func:`atomic_path` hands out a hidden temporary file next to the target and moves it into place with
  :func:`os.replace` only when the ``with`` block ends without an exception, so a crash or an error midway
  leaves any existing file exactly as it was.  The temporary file is removed on every exit path Python
  sees (errors, Ctrl-C, SIGTERM turned into an exit by the CLI); one left by a run killed outright
  (SIGKILL) carries its host and process id in its name and is removed by the next write to the same
  folder from that host once that process is gone (a writer on another host of a shared filesystem is
  never touched).
* Ctrl-C while the file is being written and moved into place is held until the move is done, then
  raised: the write completes (a second Ctrl-C abandons it and leaves the old file).
* No output may replace a file the run reads: the ones passed as *protect*, and every file noted with
  :func:`note_input` inside the current :func:`input_scope` (the CLI opens one per command; readers of
  data, masks, recipes, weights, checkpoints and results note what they open).  Files are compared by
  resolved path and by device and inode, so links and hard links do not slip through.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import signal
import socket
import stat
import tempfile
import threading
from typing import Iterable, Iterator

from cdi_plugins.errors import CDIError

__all__ = ["atomic_path", "check_writable", "input_scope", "note_input", "inputs", "same_file"]

log = logging.getLogger("cdi_plugins.io")

_INPUTS: contextvars.ContextVar = contextvars.ContextVar("cdi_plugins_inputs", default=None)


@contextlib.contextmanager
def input_scope() -> Iterator[list]:
    """Within this block, every file noted by :func:`note_input` is protected from every write."""
    token = _INPUTS.set([])
    try:
        yield _INPUTS.get()
    finally:
        _INPUTS.reset(token)


def note_input(path) -> None:
    """Record that the current run reads *path* (no effect outside an :func:`input_scope`)."""
    noted = _INPUTS.get()
    if noted is not None and path is not None:
        noted.append(os.path.abspath(os.fspath(os.path.expanduser(os.fspath(path)))))


def inputs() -> list[str]:
    """The files noted in the current :func:`input_scope`."""
    return list(_INPUTS.get() or [])


def same_file(a: str, b: str) -> bool:
    """Whether *a* and *b* are the same file: same device and inode, or the same resolved path."""
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):   # device and inode
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]+\.tmp(?P<ext>\.[^.]*)?$")


def _host() -> str:
    # in the temporary file's name: on a shared filesystem only this machine's dead writers are cleaned up
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours
        return True
    return True


def _clean_stale(d: str) -> None:
    """Remove temporary files in *d* left by writers that were killed (their process is gone)."""
    try:
        names = os.listdir(d)
    except OSError:
        return
    host = _host()
    for n in names:
        m = _TEMP.match(n)
        if m and m.group("host") == host and int(m.group("pid")) != os.getpid() and not _alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(d, n))
                log.warning("removed %s, left by a run that was killed while writing", os.path.join(d, n))


def _make_temp(target: str, loc: str) -> str:
    d, name = os.path.split(target)
    ext = os.path.splitext(name)[1]
    _clean_stale(d)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.{_host()}-{os.getpid()}.", suffix=f".tmp{ext}", dir=d)
    except OSError as exc:
        raise CDIError(f"cannot write in directory {d} ({exc.strerror or exc})", loc) from None
    os.close(fd)
    return tmp


@contextlib.contextmanager
def _interrupt_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block is done, then raise it; a second Ctrl-C raises at once."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
            signal.SIG_IGN, None):
        yield
        return
    pressed = []

    def hold(signum, frame):
        pressed.append(signum)
        if len(pressed) > 1:
            raise KeyboardInterrupt
    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


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
    for q in [*(protect or ()), *inputs()]:
        if q is None:
            continue
        if same_file(target, os.path.abspath(os.fspath(q))):
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
        with _interrupt_held():
            yield tmp
            _move_into_place(tmp, target, overwrite, loc)
    except BaseException:
        _remove_quietly(tmp)   # nothing to do once moved into place
        raise


def _move_into_place(tmp: str, target: str, overwrite: bool, loc: str) -> None:
    if not overwrite and os.path.lexists(target):
        raise CDIError("appeared while it was being written; pass --overwrite to replace it", loc)
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
        raise CDIError(f"cannot move the finished file into place ({exc.strerror or exc})", loc) from None
