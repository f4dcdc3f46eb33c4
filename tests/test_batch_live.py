"""cdi watch: frames written slowly and in chunks into a folder (polling observer); previews, the final run,
and never a half-written frame."""

import io
import os
import threading
import time

import numpy as np
import pytest
import tifffile

from cdi_plugins.batch.frames import FolderSource, frame_index
from cdi_plugins.batch.live import pad_frames, passed_peak, watch
from cdi_plugins.core.registry import get_registry
from cdi_plugins.physics.simulate import simulate_crystal
from tests.batch_helpers import RECIPE


def write_frames(folder, volume, pause=0.04, chunks=3):
    """One TIFF per rocking step, each written non-atomically in *chunks* pieces with pauses between."""
    for i, frame in enumerate(volume):
        buf = io.BytesIO()
        tifffile.imwrite(buf, frame)
        data = buf.getvalue()
        step = len(data) // chunks + 1
        with open(os.path.join(folder, f"scan_0121_{i:05d}.tif"), "wb") as fh:
            for k in range(0, len(data), step):
                fh.write(data[k:k + step])
                fh.flush()
                time.sleep(pause)


def test_frames_are_numbered_by_their_trailing_digits():
    assert frame_index("scan_0121_00007.tif") == 7 and frame_index("f12b.tiff") == 12


def test_a_half_written_last_frame_is_not_taken_until_it_settles(tmp_path):
    src = FolderSource(str(tmp_path), poll=True, settle=0.3, interval=0.05)
    try:
        frame = np.arange(64, dtype=np.float32).reshape(8, 8)
        buf = io.BytesIO()
        tifffile.imwrite(buf, frame)
        data = buf.getvalue()
        (tmp_path / "f_0.tif").write_bytes(data[: len(data) // 2])
        assert src.poll() == []
        time.sleep(0.4)
        assert src.poll() == []   # settled but unreadable: still not taken
        (tmp_path / "f_0.tif").write_bytes(data)
        time.sleep(0.4)
        src.poll()
        time.sleep(0.35)
        got = src.poll()
        assert len(got) == 1 and np.array_equal(got[0][1], frame)
        assert src.poll() == []   # handed out once
    finally:
        src.close()


def test_rocking_curve_peak_and_padding():
    assert not passed_peak([1, 2, 3]) and passed_peak([1, 5, 2]) and not passed_peak([1, 5, 4])
    assert not passed_peak([5, 1, 0.5, 0.4])   # a high first frame is not a rocking curve's peak
    vol = pad_frames([np.ones((2, 2))] * 3, 5)
    assert vol.shape == (5, 2, 2) and vol[3:].sum() == 0


def test_watch_follows_a_scan_previews_it_and_runs_the_recipe_at_the_end(tmp_path):
    pytest.importorskip("torch")
    volume = simulate_crystal(32, seed=3)["intensity"]
    frames = tmp_path / "scan_0121"
    frames.mkdir()
    (tmp_path / "r.yaml").write_text(RECIPE.replace('"scans/scan_{scan:04d}.npy"', "unused.npy"))
    (tmp_path / "unused.npy").write_bytes(b"")
    writer = threading.Thread(target=write_frames, args=(str(frames), volume))
    lines = []
    writer.start()
    try:
        rep = watch(str(tmp_path / "r.yaml"), str(frames), source=get_registry().frame_source("folder"),
                    options={"poll": True, "settle": 0.5, "interval": 0.05}, expected=32, timeout=20,
                    preview_every=8, out_dir=str(tmp_path / "out"), log=lines.append)
    finally:
        writer.join()
    assert np.array_equal(rep.frames, volume)    # every frame whole, in order
    assert len(rep.curve) == 32 and int(np.argmax(rep.curve)) == int(np.argmax(volume.sum(axis=(1, 2))))
    assert rep.previews and rep.previews[0][0] < 32
    assert (tmp_path / "out" / "scan_0121_preview.png").read_bytes()[:4] == b"\x89PNG"
    assert rep.ended == "expected count reached"
    assert rep.batch.ok and os.path.exists(tmp_path / "out" / "scan_0121.cxi")
    assert any("rocking curve peak" in line for line in lines)
    assert sorted(os.listdir(frames)) == [f"scan_0121_{i:05d}.tif" for i in range(32)]   # inputs untouched


def test_the_hdf5_source_follows_a_growing_swmr_file(tmp_path):
    import h5py

    from cdi_plugins.batch.frames import HDF5Source
    volume = np.arange(8 * 6 * 6, dtype=np.float32).reshape(8, 6, 6)
    path = str(tmp_path / "scan.h5")
    with h5py.File(path, "w", libver="latest") as f:
        ds = f.create_dataset("entry/data/data", shape=(0, 6, 6), maxshape=(None, 6, 6), dtype="f4", chunks=(1, 6, 6))
        f.swmr_mode = True
        src = HDF5Source(path, settle=0.2, interval=0.05)
        try:
            got = []
            for i, frame in enumerate(volume):
                ds.resize(i + 1, axis=0)
                ds[i] = frame
                ds.flush()
                got += src.poll()                    # the newest frame is held back until it settles
                assert [k for k, _ in got] == list(range(len(got))) and len(got) <= i
            time.sleep(0.3)
            got += src.poll()
        finally:
            src.close()
    assert [k for k, _ in got] == list(range(8))
    assert np.array_equal(np.stack([a for _, a in got]), volume)


def test_cdi_watch_from_the_command_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    import concurrent.futures as cf

    from tests.batch_helpers import cdi, use_executor
    use_executor("threads", lambda options: cf.ThreadPoolExecutor(1))
    volume = simulate_crystal(32, seed=4)["intensity"]
    frames = tmp_path / "scan_0007"
    frames.mkdir()
    write_frames(str(frames), volume, pause=0, chunks=1)          # the whole scan is already there
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text("data: {simulate: {shape: 32}}\nfft: scipy\nthreads: 1\nsteps: 20*ER\n")
    rc, out, err = cdi(capsys, "watch", "r.yaml", "--frames", frames, "--expected", "32", "--poll", "--settle",
                       "0.2", "--timeout", "10", "--preview-every", "16", "--out-dir", "out", "--executor", "threads")
    assert rc == 0, err
    assert (tmp_path / "out" / "scan_0007.cxi").exists()
    assert (tmp_path / "out" / "scan_0007_preview.png").read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(np.load(tmp_path / "out" / "scan_0007_data.npy"), volume)
    rc, out, err = cdi(capsys, "watch", "r.yaml", "--frames", tmp_path / "nothing.txt", "--poll")
    assert rc == 2 and err.count("\n") == 1 and "no frame source reads this" in err
