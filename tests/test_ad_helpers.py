"""What the AD refiner's tests share: the test crystals, one torch thread, step parameters and contexts.

It holds no tests: tests/test_ad_*.py import what they use from it, and a fixture imported into a
test module is that module's fixture (tests/conftest.py would give them to every test file).
"""

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdi_plugins import State, get_registry  # noqa: E402
from cdi_plugins.compute.backend import get_backend  # noqa: E402
from cdi_plugins.core.state import Context  # noqa: E402
from cdi_plugins.physics.simulate import simulate_crystal  # noqa: E402

N = 32
# the random-start recipe of configs/ad_only.yaml
RANDOM_START = {"iterations": 600, "feedback_iterations": 400, "shrink_wrap_period": 20,
                "shrink_wrap_sigma_final": 0.5, "shrink_wrap_only_on_improvement": False,
                "plateau_patience": 0}


@pytest.fixture(scope="module")
def clean():
    """A noise-free 32^3 crystal: its truth is an exact minimum of every loss."""
    return simulate_crystal(N, noise=False, seed=2, counts=1e8)


@pytest.fixture(scope="module")
def noisy():
    return simulate_crystal(N, seed=1, counts=1e8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch's OpenMP threads on a busy machine turn a microsecond FFT into milliseconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def params(**values):
    return get_registry().get("ad").params.validate(values)


def ctx(seed=0, events=None):
    progress = (lambda **e: events.append(e)) if events is not None else (lambda **e: None)
    return Context(backend=get_backend("numpy"), rng=np.random.default_rng(seed), progress=progress,
                   logger=logging.getLogger("test"), step=1)


def truth_state(sim):
    t = sim["truth"]
    return State(obj=t.copy(), support=np.abs(t) > 0.01 * np.abs(t).max())


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
