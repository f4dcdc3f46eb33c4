"""The output rule of cdi_plugins.io.atomic: never over an input, nothing left behind, Ctrl-C completes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cdi_plugins.cli import main
from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import atomic_path, input_scope, note_input
from cdi_plugins.physics.simulate import simulate_crystal


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
