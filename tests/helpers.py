"""Shared by several test files: a pattern of known oversampling, the shipped nn weights, a code payload."""

import os

import numpy as np
import pytest

from cdi_plugins.algorithms.nn.network import builtin_weights

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

