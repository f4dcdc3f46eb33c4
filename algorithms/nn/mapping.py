"""Between the data's grid and the network's: a pattern of any size onto the 32^3 network input at the
oversampling the weights were trained at, and a prediction back onto the data's grid.

The Fourier numerics underneath (the oversampling estimate, crop/pad, band-limited resampling) are the
framework's, :mod:`cdi_plugins.compute.fourier`; the oversampling is measured with its ``"smoothed"``
preset, the one the shipped weights' ``oversampling_target`` was measured with.
"""

from __future__ import annotations

import numpy as np

from cdi_plugins.compute import fourier
from cdi_plugins.compute.fourier import crop_pad, fourier_resample

__all__ = ["OVERSAMPLING_PRESET", "to_network", "from_network"]

#: The :func:`cdi_plugins.compute.fourier.oversampling` preset of the nn step and of training.
OVERSAMPLING_PRESET = "smoothed"


def to_network(intensity, mask=None, *, target: float = 2.0, size: int = 32, oversampling=None) -> tuple:
    """Map a centred pattern of any size onto the network grid at the trained oversampling.

    The pattern is cropped (or zero-padded) to C pixels on every axis around the peak, with
    ``C = size * os_min / target``, then interpolated to ``size`` pixels per axis: the smallest per-axis
    oversampling becomes *target* and the aspect of the data is kept.  Returns ``(x, C, os)`` with x the
    network input (sqrt(I), max 1, float32).
    """
    import scipy.ndimage
    i = np.array(intensity, dtype=np.float32)
    if mask is not None:
        i[np.asarray(mask, dtype=bool)] = 0.0
    os_ = tuple(oversampling) if oversampling is not None else fourier.oversampling(i, preset=OVERSAMPLING_PRESET)
    c = max(4, int(round(size * min(os_) / target)))
    crop = crop_pad(i, (c, c, c))
    if c != size:
        coords = np.meshgrid(*[c // 2 + (np.arange(size) - size // 2) * (c / size)] * 3, indexing="ij")
        crop = scipy.ndimage.map_coordinates(crop, coords, order=1, mode="constant", cval=0.0)
    x = np.sqrt(np.clip(crop, 0, None)).astype(np.float32)
    m = float(x.max())
    return (x / m if m > 0 else x), c, os_


def from_network(obj, data_shape, c: int) -> np.ndarray:
    """Map an object predicted on the network grid back onto the data's grid (Fourier interpolation).

    A network voxel spans ``N_k / c`` data voxels on axis k, so the network's field of view covers
    ``size * N_k / c`` data voxels: the object is Fourier-resampled to that many voxels, then centre-cropped
    or padded to the data shape.
    """
    obj = np.asarray(obj)
    m = tuple(max(1, int(round(obj.shape[k] * data_shape[k] / c))) for k in range(3))
    return crop_pad(fourier_resample(obj, m), data_shape).astype(np.complex64)
