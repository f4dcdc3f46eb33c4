"""Live frame sources: a folder of one-TIFF-per-frame files and a growing HDF5 file.

A frame is handed out once, in order, and only once it is complete: when a later frame exists, or when its
size (HDF5: the dataset's length) has not changed for ``settle`` seconds and it reads back whole.  A writer
that is slower than ``settle`` between two chunks of one file is the one case this cannot tell from a finished
frame; raise ``--settle`` for such a detector."""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["FolderSource", "HDF5Source", "frame_index"]

_TRAILING = re.compile(r"(\d+)(?=\D*$)")
TIFF_EXT = (".tif", ".tiff")


def frame_index(name: str) -> int:
    """The frame number of a file name: its last group of digits (``scan_0121_00007.tif`` -> 7)."""
    m = _TRAILING.search(os.path.splitext(name)[0])
    return int(m.group(1)) if m else -1


class _Wakeup:
    """A watchdog observer (inotify, or polling with *poll*) that wakes :meth:`wait` when the folder changes."""

    def __init__(self, folder: str, poll: bool, interval: float):
        self.event = threading.Event()
        self.observer = None
        try:
            from watchdog.events import FileSystemEventHandler
            if poll:
                from watchdog.observers.polling import PollingObserver as Observer
                kw = {"timeout": interval}
            else:
                from watchdog.observers import Observer
                kw = {}
        except ImportError:
            return   # no watchdog: the source polls on its own every `interval`
        event = self.event

        class Handler(FileSystemEventHandler):
            def on_any_event(self, ev):
                event.set()
        self.observer = Observer(**kw)
        self.observer.schedule(Handler(), folder, recursive=False)
        self.observer.daemon = True
        self.observer.start()

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)


class FolderSource:
    """Frames as one 2-D TIFF each in *folder*, numbered by the trailing digits of their names."""

    def __init__(self, folder: str, *, poll: bool = False, settle: float = 1.0, interval: float = 0.25):
        if not os.path.isdir(folder):
            raise CDIError("not a folder (cdi watch --frames takes the folder a scan's frames are written to)",
                           folder)
        self.folder, self.settle, self.interval = folder, float(settle), float(interval)
        self.taken: set[str] = set()
        self.seen: dict[str, tuple] = {}   # name -> (size, mtime_ns, since)
        self.wakeup = _Wakeup(folder, poll, interval)

    def _listing(self) -> list[str]:
        names = [n for n in os.listdir(self.folder)
                 if n.lower().endswith(TIFF_EXT) and not n.startswith(".")]
        return sorted(names, key=lambda n: (frame_index(n), n))

    def _settled(self, name: str, now: float) -> bool:
        try:
            st = os.stat(os.path.join(self.folder, name))
        except FileNotFoundError:
            return False
        key = (st.st_size, st.st_mtime_ns)
        old = self.seen.get(name)
        if old is None or old[:2] != key:
            self.seen[name] = (*key, now)
            return False
        return st.st_size > 0 and now - old[2] >= self.settle

    def poll(self) -> list[tuple[int, np.ndarray]]:
        import tifffile
        now = time.monotonic()
        names = self._listing()
        out = []
        for i, name in enumerate(names):
            if name in self.taken:
                continue
            later = i + 1 < len(names)
            if not later and not self._settled(name, now):
                break
            try:
                frame = np.asarray(tifffile.imread(os.path.join(self.folder, name)))
            except Exception:   # not whole yet (or never will be: then the watch's timeout ends the scan)
                break
            if frame.ndim != 2:
                raise CDIError(f"a frame must be a 2-D image, got shape {frame.shape}", os.path.join(self.folder, name))
            self.taken.add(name)
            out.append((frame_index(name), frame))
        return out

    def wait(self, timeout: float) -> None:
        self.wakeup.wait(min(timeout, self.interval))

    def close(self) -> None:
        self.wakeup.close()


class HDF5Source:
    """Frames along the first axis of a dataset (``entry/data/data``) of an HDF5 file written with SWMR."""

    def __init__(self, path: str, *, dataset: str = "entry/data/data", settle: float = 1.0, interval: float = 0.25,
                 **_):
        self.path, self.dataset, self.settle, self.interval = path, dataset, float(settle), float(interval)
        self.fh = None
        self.taken = 0
        self.length = (-1, 0.0)

    def _open(self):
        if self.fh is None and os.path.exists(self.path):
            import h5py
            try:
                self.fh = h5py.File(self.path, "r", swmr=True, libver="latest")
            except OSError:
                return None   # not yet in SWMR mode: try again at the next poll
        return self.fh

    def poll(self) -> list[tuple[int, np.ndarray]]:
        fh = self._open()
        if fh is None or self.dataset not in fh:
            return []
        ds = fh[self.dataset]
        ds.refresh()
        n = int(ds.shape[0])
        now = time.monotonic()
        if n != self.length[0]:
            self.length = (n, now)
        ready = n if now - self.length[1] >= self.settle else n - 1
        out = [(i, np.asarray(ds[i])) for i in range(self.taken, max(self.taken, ready))]
        self.taken += len(out)
        return out

    def wait(self, timeout: float) -> None:
        time.sleep(min(timeout, self.interval))

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
