"""Tests for cdi_plugins.io.atomic: atomic writes, overwrite rules, protected inputs, unwritable places."""

from __future__ import annotations

import os
import pathlib

import pytest

from cdi_plugins.errors import CDIError
from cdi_plugins.io import atomic_path, check_writable, write_cxi
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
