"""The README's plugin example (examples/plugin) installs as written and its step runs from a recipe."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "plugin")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(EXAMPLE, source)        # pip builds in the source tree: keep the checkout clean
    # --no-build-isolation: build with this environment's setuptools, no download; --no-deps: cdi-plugins
    # is already installed here
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
                           "--disable-pip-version-check", "--target", str(target), str(source)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def cdi(target, *args, cwd):
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, "-m", "cdi_plugins.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


def test_the_plugin_example_installs_and_its_step_runs(installed, tmp_path):
    proc = cdi(installed, "algorithms", cwd=tmp_path)
    assert proc.returncode == 0 and "scale" in proc.stdout and "multiply the object by a factor" in proc.stdout
    proc = cdi(installed, "plugins", cwd=tmp_path)
    assert "my_algorithms (my-cdi-plugin 0.1.0): ok  my_package.plugin  algorithms: scale" in proc.stdout
    (tmp_path / "r.yaml").write_text("data: {simulate: {shape: 32}}\n"
                                     "steps: [{algorithm: er, iterations: 5}, {algorithm: scale, factor: 2}]\n")
    proc = cdi(installed, "run", "r.yaml", "--out", "o.cxi", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.cxi").exists()
    # used as a first step it says what is wrong, in one line
    (tmp_path / "first.yaml").write_text("data: {simulate: {shape: 32}}\nsteps: [{algorithm: scale}]\n")
    proc = cdi(installed, "run", "first.yaml", "--out", "f.cxi", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "scale refines an object: put a step before it" in proc.stderr
