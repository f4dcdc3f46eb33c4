"""The cluster: section and the Slurm / PBS job scripts, checked as text (no scheduler needed)."""

import pytest

from cdi_plugins.batch.cluster import job_script, read_cluster
from cdi_plugins.errors import CDIError
from tests.batch_helpers import RECIPE, cdi, write_scans

CLUSTER = """cluster:
  queue: debug
  account: CDI
  walltime: "00:30:00"
  cores: 32
  memory: 64GB
  gpus: 4
  job_script_prologue: ["module load conda"]
"""


def test_slurm_job_script_asks_for_the_gpus_and_runs_one_reconstruction_per_worker(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE + CLUSTER)
    text = job_script("slurm", {"cluster": read_cluster(str(tmp_path / "r.yaml"))})
    for line in ("#SBATCH -p debug", "#SBATCH -A CDI", "#SBATCH --gres=gpu:4", "#SBATCH -t 00:30:00",
                 "#SBATCH --cpus-per-task=32", "module load conda", "export CDI_GPUS_PER_JOB=4"):
        assert line in text, text
    assert "--nworkers 4" in text and "--nthreads 1" in text


def test_pbs_job_script_selects_cpus_gpus_and_memory(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE + CLUSTER)
    text = job_script("pbs", {"cluster": read_cluster(str(tmp_path / "r.yaml"))})
    assert "#PBS -l select=1:ncpus=32:ngpus=4:mem=64GB" in text, text
    assert "#PBS -q debug" in text and "#PBS -A CDI" in text and "walltime=00:30:00" in text


def test_without_gpus_there_is_no_gpu_request(tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE + "cluster: {queue: cpu, cores: 4}\n")
    c = read_cluster(str(tmp_path / "r.yaml"))
    assert "gres" not in job_script("slurm", {"cluster": c})
    assert "select=1:ncpus=4:mem=4GB" in job_script("pbs", {"cluster": c})


@pytest.mark.parametrize("section, words", [
    ("cluster: {queue: a, coress: 4}", ["r.yaml:6", "cluster.coress", "cores"]),
    ("cluster: {gpus: -1}", ["cluster.gpus", ">= 0"]),
    ("cluster: {memory: 64}", ["cluster.memory", "64GB"]),
    ("cluster: [a]", ["cluster must be a mapping"]),
])
def test_a_wrong_cluster_section_is_one_line_naming_the_recipe_place(tmp_path, section, words):
    (tmp_path / "r.yaml").write_text(RECIPE + section + "\n")
    with pytest.raises(CDIError) as e:
        read_cluster(str(tmp_path / "r.yaml"))
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_dry_run_prints_the_plan_and_the_job_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_scans(tmp_path, [1, 2])
    (tmp_path / "r.yaml").write_text(RECIPE + CLUSTER)
    rc, out, _ = cdi(capsys, "batch", "r.yaml", "--scans", "1-3", "--executor", "slurm", "--dry-run")
    assert rc == 0
    assert "3 scans: 2 to run on 'slurm', 0 complete already, 1 cannot run" in out
    assert "fail 3:" in out and "data file not found" in out
    assert "#SBATCH --gres=gpu:4" in out
    assert not (tmp_path / "results" / "scan_1.cxi").exists()
