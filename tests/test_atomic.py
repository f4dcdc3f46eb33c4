"""Tests for cdi_plugins.io.atomic: atomic writes, overwrite rules, protected inputs (also every file a command
reads), unwritable places, Ctrl-C and SIGTERM during a write, temporary files of killed runs."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cdi_plugins.cli import main
from cdi_plugins.errors import CDIError
from cdi_plugins.io import atomic_path, check_writable, write_cxi
from cdi_plugins.io.atomic import input_scope, note_input
from cdi_plugins.physics.simulate import simulate_crystal
from tests.io_helpers import make_result, snapshot


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


# ------------------------------------------------------------------ the one rule for every writer


def test_a_file_read_in_the_scope_is_never_written_even_through_a_hard_link(tmp_path):
    data = tmp_path / "data.npy"
    data.write_bytes(b"measured")
    os.link(data, tmp_path / "alias.npy")
    with input_scope():
        note_input(data)
        for target in (data, tmp_path / "alias.npy", tmp_path / "." / "data.npy"):
            with pytest.raises(CDIError, match="refusing to overwrite the input file"):
                with atomic_path(target, overwrite=True) as tmp:
                    open(tmp, "w").write("result")
    assert data.read_bytes() == b"measured"
    with atomic_path(data, overwrite=True) as tmp:      # outside the scope it is an ordinary file
        open(tmp, "w").write("result")


def test_compare_cannot_write_its_picture_over_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "data.npy", simulate_crystal(32, seed=1)["intensity"])
    before = (tmp_path / "data.npy").read_bytes()
    (tmp_path / "a.yaml").write_text("data: {simulate: {shape: 32}}\nsteps: 3*ER\n")
    rc = main(["compare", "a.yaml", "a.yaml", "--data", "data.npy", "--png", "data.npy", "--overwrite", "-q"])
    assert rc == 2 and "refusing to overwrite the input file" in capsys.readouterr().err
    assert (tmp_path / "data.npy").read_bytes() == before


def test_ctrl_c_while_writing_completes_the_file_then_interrupts(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as tmp:
            with open(tmp, "w") as fh:
                fh.write("new, ")
                os.kill(os.getpid(), signal.SIGINT)          # Ctrl-C in the middle of the write
                fh.write("complete")
    assert target.read_text() == "new, complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_second_ctrl_c_abandons_the_write_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, overwrite=True) as tmp:
            with open(tmp, "w") as fh:
                fh.write("new")
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
                fh.write(" never")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from cdi_plugins.io.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        open(tmp, "w").write("half")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_temporary_file_left_by_a_killed_run_is_removed_by_the_next_write(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "big.cxi")])
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".big.cxi.") and left[0].endswith(".tmp.cxi")
    with atomic_path(tmp_path / "other.txt") as tmp:
        open(tmp, "w").write("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]


def _catches_sigterm(pid) -> bool:
    """Whether process *pid* has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            caught = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc to see the handler")
def test_sigterm_during_a_run_exits_and_leaves_no_temporary_file(tmp_path):
    (tmp_path / "r.yaml").write_text("data: {simulate: {shape: 64}}\nsteps: 100000*ER\n")
    proc = subprocess.Popen([sys.executable, "-m", "cdi_plugins.cli", "run", "r.yaml", "--out", "o.cxi", "-q"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not _catches_sigterm(proc.pid):
        time.sleep(0.05)                                # until the CLI has installed its handler
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_a_temporary_file_of_another_host_is_left_alone(tmp_path):
    from cdi_plugins.io.atomic import _host
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)                                       # a process id that no longer runs here
    other = tmp_path / f".big.cxi.{_host()}x-{dead}.abcd.tmp.cxi"   # another host, same pid: still writing there
    mine = tmp_path / f".big.cxi.{_host()}-{dead}.abcd.tmp.cxi"     # this host, writer gone: stale
    other.write_text("being written")
    mine.write_text("stale")
    with atomic_path(tmp_path / "x.txt") as tmp:
        open(tmp, "w").write("x")
    assert other.exists() and not mine.exists()
