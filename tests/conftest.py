import os

import pytest

from cdi_plugins.compute.backend import available_backends

GPU_REASON = available_backends()["cupy"]
HAVE_GPU = GPU_REASON == "ok"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"no usable GPU: {GPU_REASON}")
    for item in items:
        if "gpu" in item.keywords and not HAVE_GPU:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # FFTW wisdom goes to a per-session folder, never to the user's home
    monkeypatch.setenv("CDI_PLUGINS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def small_crystal():
    """A 40^3 noise-free simulated crystal (dict from simulate_crystal)."""
    from cdi_plugins.physics.simulate import simulate_crystal
    return simulate_crystal(40, seed=1, counts=1e9, noise=False)


REAL_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "au_3dcdinn_ft_crop_64.tif")
