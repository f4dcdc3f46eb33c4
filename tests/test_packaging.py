"""A wheel built from this checkout, installed on its own, finds every plugin and the shipped weights."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = """
import json, cdi_plugins
from cdi_plugins.core.registry import get_registry
from cdi_plugins.algorithms.nn.network import builtin_weights
reg = get_registry()
print(json.dumps({"file": cdi_plugins.__file__,
                  "plugins": {p.name: p.status for p in reg.plugins},
                  "algorithms": reg.names(), "commands": sorted(reg.commands), "beamlines": sorted(reg.beamlines),
                  "executors": sorted(reg.executors), "frame_sources": sorted(reg.frame_sources),
                  "weights": {k: os.path.getsize(v) for k, v in builtin_weights().items()}}))
"""


@pytest.mark.slow
def test_a_wheel_installs_every_plugin_and_the_weights(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for part in ("cdi_plugins", "algorithms"):
        shutil.copytree(os.path.join(ROOT, part), src / part, ignore=ignore)
    for f in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, f), src / f)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("cdi_plugins-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "cdi_plugins/algorithms/nn/weights/au32_w025_ft.pt" in names
    assert not any(n.startswith(("algorithms/", "tests/")) for n in names)   # no top-level 'algorithms'
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--disable-pip-version-check", "--target", str(site), str(wheel)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", "import os\n" + CHECK], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    got = json.loads(proc.stdout)
    assert got["file"].startswith(str(site))                      # the installed copy, not the checkout
    assert got["plugins"] == {"ad": "ok", "batch": "ok", "beamlines": "ok", "cohere": "ok", "iterative": "ok", "nn": "ok"}
    assert got["executors"] == ["dask", "local", "pbs", "slurm"] and got["frame_sources"] == ["folder", "hdf5"]
    assert got["beamlines"] == ["aps_34idc", "generic", "nexus"]
    assert got["algorithms"] == ["ad", "asr", "cohere", "dm", "er", "hio", "nn", "raar", "sf"]
    assert {"train", "nn-eval", "import-cohere"} <= set(got["commands"])
    assert set(got["weights"]) == {"au32_w025", "au32_w025_ft", "au32_w025_ft2"}
    assert min(got["weights"].values()) > 100_000
