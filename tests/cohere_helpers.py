"""What the cohere tests share: the simulated data, a recipe maker, an ER result, a cohere experiment folder."""

from __future__ import annotations

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins.io.cohere import write_config_rec

try:
    import cohere_core.controller.phasing  # noqa: F401
    HAVE_COHERE = True
except Exception:
    HAVE_COHERE = False

needs_cohere = pytest.mark.skipif(not HAVE_COHERE,
                                  reason="cohere-core is not installed: pip install 'cdi-plugins[cohere]'")

SIM = {"simulate": {"shape": 32, "seed": 1, "counts": 1e8}}


def _recipe(steps, **extra):
    return {"data": SIM, "backend": "numpy", "fft": "scipy", "seed": 0, "steps": steps, **extra}


@pytest.fixture(scope="module")
def er_result():
    # ER without a support update at its end: the object lies in its support
    return cdi_plugins.run(_recipe([{"algorithm": "er", "iterations": 30}, {"algorithm": "hio", "iterations": 60},
                                    {"algorithm": "er", "iterations": 30, "shrink_wrap_period": 0}]))


# ---- the adapter (needs cohere-core) -------------------------------------------------------


CONF = {"algorithm_sequence": "3*(20*ER+180*HIO)+20*ER", "hio_beta": 0.8, "shrink_wrap_trigger": [1, 5],
        "shrink_wrap_type": "GAUSS", "shrink_wrap_threshold": 0.15, "shrink_wrap_gauss_sigma": 1.5,
        "initial_support_area": [0.4, 0.4, 0.4], "reconstructions": 3, "twin_trigger": [2], "twin_halves": [0, 0],
        "ga_generations": 4}


def _experiment(tmp_path, conf):
    exp = tmp_path / "scan_54"
    (exp / "conf").mkdir(parents=True)
    (exp / "phasing_data").mkdir()
    write_config_rec(conf, exp / "conf" / "config_rec")
    from cdi_plugins.physics.simulate import simulate_crystal
    sim = simulate_crystal(32, seed=1)
    import tifffile
    tifffile.imwrite(exp / "phasing_data" / "data.tif", np.sqrt(sim["intensity"]).T.astype(np.float32))
    return exp, sim
