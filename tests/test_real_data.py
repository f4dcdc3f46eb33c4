"""The real measured gold pattern, end to end, through configs/real_au.yaml.

Nobody knows this crystal's true object, so the reconstructions are judged as a
scientist would judge them: chi^2 must fall by more than 10x, each support must
be one compact object, and two independent reconstructions (an HIO recipe and a
RAAR recipe, different random starts) must agree after alignment.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np
import pytest

import cdi_plugins
from cdi_plugins.cli import main
from cdi_plugins.io import read_vti
from cdi_plugins.report import compare, summarize

from tests.conftest import REAL_DATA

REPO = pathlib.Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(REAL_DATA), reason="real data file not present"),
]


def digest(path) -> tuple:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest(), os.stat(path).st_mtime_ns


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Run configs/real_au.yaml once (both reconstructions) in a scratch folder."""
    d = tmp_path_factory.mktemp("real_au")
    (d / "results").mkdir()
    before = digest(REAL_DATA)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        # scipy.fft, not pyFFTW: FFTW_MEASURE picks plans by timing, so rounding, and with it HIO's
        # chaotic path, differs from machine to machine (HIO vs RAAR measured 0.24 here, 0.32 on a
        # fresh clone); pocketfft gives the same numbers everywhere (0.27)
        rc = main(["run", str(REPO / "configs" / "real_au.yaml"), "-q", "--set", "threads=1", "--set", "fft=scipy"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return {"dir": d / "results", "input_before": before,
            "hio": cdi_plugins.load(d / "results" / "real_au_hio.cxi"),
            "raar": cdi_plugins.load(d / "results" / "real_au_raar.cxi"),
            "nn_ad": cdi_plugins.load(d / "results" / "real_au_nn_ad.cxi")}


@pytest.mark.parametrize("name", ["hio", "raar"])
def test_reconstruction_converges(outputs, name):
    s = summarize(outputs[name])
    assert s["chi2_end"] < 0.1 * s["chi2_start"], s
    chi = np.array([h["chi2"] for h in outputs[name].history])
    assert chi[-1] < 1.5 * chi.min()                  # it ends near its lowest, not on a spike
    first = chi[[h["step"] == 1 for h in outputs[name].history]]
    assert first[-1] < 0.1 * first[0]                 # the first ER alone already falls by 10x


@pytest.mark.parametrize("name", ["hio", "raar", "nn_ad"])
def test_support_is_one_compact_object(outputs, name):
    s = summarize(outputs[name])
    assert s["components"] == 1, s
    assert 0.002 < s["support_fraction"] < 0.05, s


def test_nn_ad_pipeline_converges_near_the_iterative_result(outputs):
    s = summarize(outputs["nn_ad"])
    assert [st["algorithm"] for st in outputs["nn_ad"].steps] == ["nn", "ad"]
    assert s["chi2_end"] < 0.1 * s["chi2_start"], s
    c = compare(outputs["nn_ad"], outputs["hio"])
    print(f"\nreal_au: normalised difference nn_ad vs hio after alignment: {c['difference']:.4f}")
    # measured 0.33 here (scipy.fft; 0.28 with pyFFTW), as close as the two iterative recipes come
    # to each other (0.27-0.32); it was 0.40 before the coarse-to-fine AD and the fine-tuned
    # weights: this bound guards against falling back
    assert c["difference"] < 0.4


def test_the_two_reconstructions_agree(outputs):
    c = compare(outputs["raar"], outputs["hio"])
    print(f"\nreal_au: normalised difference raar vs hio after alignment: {c['difference']:.4f}")
    assert c["difference"] < 0.3


def test_preparation_was_applied_and_the_input_left_alone(outputs):
    md = outputs["hio"].metadata
    assert md["preparation"]["peak"] == [32, 31, 33] and md["preparation"]["shift"] == [0, 1, -1]
    assert np.unravel_index(np.argmax(outputs["hio"].intensity), (64, 64, 64)) == (32, 32, 32)
    assert all(v > 2 for v in md["oversampling_estimate"])
    assert md["averaged_runs"][0] == md["best_run"] and len(md["averaged_runs"]) == 3
    assert digest(REAL_DATA) == outputs["input_before"]


@pytest.mark.parametrize("name", ["hio", "raar"])
def test_pictures_and_paraview_files(outputs, name):
    d = outputs["dir"]
    assert (d / f"real_au_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vti = read_vti(d / f"real_au_{name}.vti")
    assert {"amplitude", "phase", "support", "displacement", "strain"} <= set(vti["arrays"])
    assert vti["spacing"] == (20.0, 20.0, 20.0)
    strain = vti["arrays"]["strain"][vti["arrays"]["support"].astype(bool)]
    assert np.isfinite(strain).all() and np.abs(strain).max() < 0.01   # a gold crystal: well below 1 %
