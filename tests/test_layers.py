"""The layer rules of docs/layers.md, enforced with import-linter (contracts in setup.cfg [importlinter]).

The built-in plugins live in algorithms/ but are installed as cdi_plugins.algorithms (setup.cfg
package_dir), a mapping import-linter's file scan does not follow; the test lays the package out as it is
installed (a copy in a temporary folder) and lints that.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


@pytest.fixture(scope="module")
def installed_layout(tmp_path_factory):
    if not os.path.exists(LINT):
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("layout")
    ignore = shutil.ignore_patterns("__pycache__", "*.pt")
    shutil.copytree(os.path.join(ROOT, "cdi_plugins"), root / "cdi_plugins", ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "algorithms"), root / "cdi_plugins" / "algorithms", ignore=ignore)
    return root


def lint(layout, config):
    env = {**os.environ, "PYTHONPATH": str(layout)}
    # run from the copy so that the checkout's own cdi_plugins/ is not first on sys.path
    return subprocess.run([LINT, str(config)], cwd=layout, env=env, capture_output=True, text=True)


def test_every_layer_contract_is_kept(installed_layout):
    proc = lint(installed_layout, os.path.join(ROOT, "setup.cfg"))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 5 kept, 0 broken." in proc.stdout


def test_a_framework_module_importing_an_algorithm_breaks_a_contract(installed_layout, tmp_path):
    # the check can fail: a copy where core imports the iterative plugin is caught
    bad = tmp_path / "bad"
    shutil.copytree(installed_layout, bad)
    with open(bad / "cdi_plugins" / "core" / "sequence.py", "a") as fh:
        fh.write("\nfrom cdi_plugins.algorithms import iterative  # noqa\n")
    proc = lint(bad, os.path.join(ROOT, "setup.cfg"))
    assert proc.returncode != 0
    assert "cdi_plugins.core is not allowed to import cdi_plugins.algorithms" in proc.stdout
