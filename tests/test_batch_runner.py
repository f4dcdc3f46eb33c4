"""cdi batch on a Dask LocalCluster (2 workers, shared by the module): failures, manifest, resume, --force,
Ctrl-C, and a third party's executor."""

import concurrent.futures as cf
import json
import os

import pytest

from cdi_plugins.batch.manifest import Manifest
from cdi_plugins.batch.runner import run_batch
from cdi_plugins.batch.tasks import scan_tasks
from cdi_plugins.core.registry import reset_registry
from cdi_plugins.pipeline import load
from tests.batch_helpers import Borrowed, cdi, use_executor, write_scans


@pytest.fixture(scope="module")
def cluster():
    from cdi_plugins.batch.cluster import make_local
    ex = make_local({"workers": 2, "threads": 1})
    yield ex
    ex.shutdown()


@pytest.fixture
def work(tmp_path, monkeypatch, cluster):
    monkeypatch.chdir(tmp_path)
    lent = Borrowed(cluster)
    use_executor("shared", lambda options: lent)
    yield tmp_path, lent
    reset_registry(None)


def manifest(tmp_path):
    return json.loads((tmp_path / "results" / "r_manifest.json").read_text())["scans"]


def test_a_corrupt_scan_fails_alone_with_its_reason_and_exit_status_1(work, capsys):
    tmp_path, lent = work
    write_scans(tmp_path, [1, 2, 3, 4, 5], corrupt=[3])
    rc, out, err = cdi(capsys, "batch", "r.yaml", "--scans", "1-5", "--executor", "shared")
    assert rc == 1
    assert "scan 3: FAILED:" in out and "not a NumPy" in out
    assert "4 done, 1 failed" in out
    scans = manifest(tmp_path)
    assert scans["3"]["status"] == "failed" and "scan_0003.npy" in scans["3"]["error"]
    for n in ("1", "2", "4", "5"):
        rec = scans[n]
        assert rec["status"] == "done" and rec["error"] is None
        assert 0 < rec["chi2"] < 1 and 0 < rec["support_fraction"] < 1 and rec["seconds"] > 0
        result = load(rec["outputs"][0])
        assert result.obj.shape == (32, 32, 32) and result.iterations == 20
    assert sorted(os.listdir(tmp_path / "results")) == ["r_manifest.json"] + [f"scan_{n}.cxi" for n in (1, 2, 4, 5)]
    assert lent.submitted == 5   # the corrupt file failed on a worker, not while planning


def test_rerun_after_an_interruption_runs_only_what_is_missing(work, capsys):
    tmp_path, lent = work
    write_scans(tmp_path, [1, 2, 3])
    assert cdi(capsys, "batch", "r.yaml", "--scans", "1-3", "--executor", "shared", "-q")[0] == 0
    # as an interrupted batch leaves it: scan 2's result gone, scan 3 cancelled before it finished
    (tmp_path / "results" / "scan_2.cxi").unlink()
    path = tmp_path / "results" / "r_manifest.json"
    doc = json.loads(path.read_text())
    doc["scans"]["3"]["status"] = "cancelled"
    path.write_text(json.dumps(doc))
    kept = os.stat(tmp_path / "results" / "scan_1.cxi").st_mtime_ns
    lent.submitted = 0
    rc, out, _ = cdi(capsys, "batch", "r.yaml", "--scans", "1-3", "--executor", "shared", "-q")
    assert rc == 0 and "2 done, 0 failed, 1 skipped" in out
    assert lent.submitted == 2
    assert os.stat(tmp_path / "results" / "scan_1.cxi").st_mtime_ns == kept
    assert all(rec["status"] == "done" for rec in manifest(tmp_path).values())
    assert (tmp_path / "results" / "scan_2.cxi").exists()

    rc, out, _ = cdi(capsys, "batch", "r.yaml", "--scans", "1-3", "--executor", "shared", "-q", "--force")
    assert rc == 0 and "3 done" in out
    assert os.stat(tmp_path / "results" / "scan_1.cxi").st_mtime_ns != kept


def test_an_existing_file_the_batch_did_not_write_is_refused_before_anything_runs(work, capsys):
    tmp_path, lent = work
    write_scans(tmp_path, [1, 2])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "scan_2.cxi").write_text("someone else's")
    rc, out, err = cdi(capsys, "batch", "r.yaml", "--scans", "1-2", "--executor", "shared")
    assert rc == 2 and err.count("\n") == 1 and "scan_2.cxi" in err and "exists" in err
    assert lent.submitted == 0
    assert (tmp_path / "results" / "scan_2.cxi").read_text() == "someone else's"


def test_ctrl_c_cancels_the_rest_and_leaves_a_manifest_of_what_was_done(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_scans(tmp_path, [1, 2, 3, 4])
    tasks = scan_tasks("r.yaml", [1, 2, 3, 4])
    man = Manifest(str(tmp_path / "results" / "m.json"))
    made = []

    def factory():
        made.append(cf.ThreadPoolExecutor(1))
        return made[-1]

    def interrupt(record):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_batch(tasks, factory, man, progress=False, on_record=interrupt)
    scans = json.loads((tmp_path / "results" / "m.json").read_text())["scans"]
    done = [s for s, r in scans.items() if r["status"] == "done"]
    assert len(done) >= 1
    assert all(r["status"] in ("done", "cancelled") for r in scans.values())
    made[0].shutdown(wait=True)
    files = sorted(os.listdir(tmp_path / "results"))
    # only complete results (no temporary files), and every one of them is readable
    assert all(not f.startswith(".") for f in files)
    for f in files:
        if f.endswith(".cxi"):
            assert load(str(tmp_path / "results" / f)).iterations == 20


def test_a_third_party_executor_runs_a_batch_over_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_scans(tmp_path, [7, 8])
    pools = []

    def make(options):
        pools.append(cf.ThreadPoolExecutor(options["workers"] or 2))
        return pools[-1]
    use_executor("threads", make)
    try:
        rc, out, _ = cdi(capsys, "batch", "r.yaml", "--data", "scans/*.npy", "--out", "out/{dataset}.cxi",
                         "--executor", "threads", "--workers", "2", "--manifest", "out/m.json", "-q")
    finally:
        reset_registry(None)
    assert rc == 0 and "2 done" in out and len(pools) == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["m.json", "scan_0007.cxi", "scan_0008.cxi"]
    assert pools[0]._shutdown


@pytest.mark.parametrize("args, words", [
    (["--scans", "1-2", "--data", "x.npy"], ["--scans"]),
    (["--scans", "5-2"], ["--scans", "backwards"]),
    (["--scans", "1", "--executor", "slurmm"], ["--executor", "slurm"]),
    (["--scans", "1", "--data-template", "scans/scan.npy"], ["--data-template", "{scan}"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    write_scans(tmp_path, [1])
    rc, out, err = cdi(capsys, "batch", "r.yaml", *args)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
