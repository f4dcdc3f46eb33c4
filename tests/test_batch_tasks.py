import pytest

from cdi_plugins.batch.tasks import data_tasks, fill_scan, parse_scans, scan_tasks
from cdi_plugins.errors import CDIError
from tests.batch_helpers import write_scans


def test_scan_ranges():
    assert parse_scans("50-53") == [50, 51, 52, 53]
    assert parse_scans("3,5, 9-11,5") == [3, 5, 9, 10, 11]
    for bad in ("a-b", "5-2", "1-", ""):
        with pytest.raises(CDIError, match="--scans"):
            parse_scans(bad)


def test_scan_fields_are_filled_and_other_fields_kept():
    assert fill_scan("s/scan_{scan:04d}/{dataset}_{scan}.cxi", 7) == "s/scan_0007/{dataset}_7.cxi"


def test_tasks_resolve_data_relative_to_the_recipe_and_fill_output_templates(tmp_path, monkeypatch):
    write_scans(tmp_path, [1])
    monkeypatch.chdir("/")
    (task,) = scan_tasks(str(tmp_path / "r.yaml"), [12])
    assert task.data == str(tmp_path / "scans" / "scan_0012.npy") and task.scan == "12"
    assert ("output.path", "results/scan_12.cxi") in task.overrides
    a, b = data_tasks(str(tmp_path / "r.yaml"), ["x/a.npy", "y/b.npy"])
    assert (a.scan, b.scan) == ("a", "b")
    a, b = data_tasks(str(tmp_path / "r.yaml"), ["x/a.npy", "y/a.npy"])
    assert a.scan != b.scan


def test_a_recipe_with_several_datasets_is_refused(tmp_path):
    (tmp_path / "r.yaml").write_text("steps: ER\ndatasets: [{name: a, data: {path: a.npy}}]\n")
    with pytest.raises(CDIError, match="one dataset"):
        scan_tasks(str(tmp_path / "r.yaml"), [1])
