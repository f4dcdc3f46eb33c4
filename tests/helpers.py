"""Shared by several test files: a pattern of known oversampling, the shipped nn weights, a code payload,
and a small reconstruction written by `cdi run` with its picture and VTK file."""

import os

import numpy as np
import pytest

from cdi_plugins.algorithms.nn.network import builtin_weights
from cdi_plugins.cli import main

SHIPPED = "au32_w025_ft"      # the default: au32_w025 (first training stage) fine-tuned
needs_weights = pytest.mark.skipif(SHIPPED not in builtin_weights(), reason="shipped weights not installed")


def box_pattern(n, w):
    """|F|^2 of a box w[k] pixels wide on an n^3 grid: its oversampling is n / w[k] exactly."""
    obj = np.zeros((n, n, n), complex)
    obj[tuple(slice(n // 2 - k // 2, n // 2 - k // 2 + k) for k in w)] = 1
    return np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(obj)))) ** 2


class CodePayload:
    """Unpickling this runs ``os.mkdir(path)``: what a malicious weights or checkpoint file could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

RECIPE = """\
name: tiny
data:
  simulate: {shape: 32, seed: 0}
seed: 0
threads: 1
steps: "10*ER+40*HIO+20*ER"
geometry: {hkl: [1, 1, 1], lattice_constant: 4.078, energy: 9.0, voxel_size: 10}
output:
  png: "{dataset}.png"
  vti: "{dataset}.vti"
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """`cdi run` of a recipe with output.png and output.vti, in a scratch folder."""
    d = tmp_path_factory.mktemp("report")
    (d / "r.yaml").write_text(RECIPE)
    cwd = os.getcwd()
    os.chdir(d)
    try:
        rc = main(["run", "r.yaml", "--out", "res.cxi", "-q"])
    finally:
        os.chdir(cwd)
    assert rc == 0
    return d
