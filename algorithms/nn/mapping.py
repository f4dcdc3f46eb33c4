"""Between the data's grid and the network's: a pattern of any size onto the 32^3 network input at the
oversampling the weights were trained at, and a prediction back onto the data's grid.

The Fourier numerics underneath (the oversampling estimate, crop/pad, band-limited resampling) are the
framework's, :mod:`cdi_plugins.compute.fourier`; the oversampling is measured with its ``"smoothed"``
preset, the one the shipped weights' ``oversampling_target`` was measured with.
"""

from __future__ import annotations

import numpy as np

from cdi_plugins.compute import fourier
from cdi_plugins.compute.fourier import crop_pad

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
    i = np.asarray(intensity, dtype=np.float32)
    os_ = tuple(oversampling) if oversampling is not None else fourier.oversampling(i, mask, preset=OVERSAMPLING_PRESET)
    c = max(4, int(round(size * min(os_) / target)))
    crop = crop_pad(i, (c, c, c))                          # a copy: the masked pixels are zeroed in it
    if mask is not None:
        crop[crop_pad(np.asarray(mask, dtype=bool), (c, c, c), True)] = 0.0
    if c != size:
        crop = _linear_resample(crop, size)
    x = np.sqrt(np.clip(crop, 0, None)).astype(np.float32)
    m = float(x.max())
    return (x / m if m > 0 else x), c, os_


def from_network(obj, data_shape, c: int) -> np.ndarray:
    """Map an object predicted on the network grid back onto the data's grid (Fourier interpolation).

    A network voxel spans ``N_k / c`` data voxels on axis k, so the network's field of view covers
    ``size * N_k / c`` data voxels: the object is Fourier-resampled to that many voxels, then centre-cropped
    or padded to the data shape.
    """
    import torch
    obj = np.asarray(obj)
    m = tuple(max(1, int(round(obj.shape[k] * data_shape[k] / c))) for k in range(3))
    # fourier_resample(obj, m) in complex64 on torch's FFT (several times faster than SciPy's on one thread)
    t = torch.from_numpy(np.ascontiguousarray(obj, dtype=np.complex64))
    f = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(t))).numpy()
    f = torch.from_numpy(crop_pad(f, m))
    out = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(f))).numpy()
    out *= np.float32(np.prod(m) / np.prod(obj.shape))
    return crop_pad(out, data_shape)


def _linear_resample(a: np.ndarray, size: int) -> np.ndarray:
    """*a* (``c`` pixels per axis, centre ``c // 2``) interpolated linearly at ``size`` points per axis
    ``c / size`` apart around its centre: ``scipy.ndimage.map_coordinates(order=1, mode="constant")`` on
    that grid (0 at a point outside ``[0, c - 1]`` on any axis), done one axis at a time, as trilinear
    interpolation is separable."""
    out = a.astype(np.float64)
    for axis in range(a.ndim):
        c = out.shape[axis]
        pos = c // 2 + (np.arange(size) - size // 2) * (c / size)
        lo = np.clip(np.floor(pos).astype(np.intp), 0, c - 1)
        frac = pos - lo
        inside = (pos >= 0) & (pos <= c - 1)
        shape = (-1,) + (1,) * (a.ndim - 1 - axis)
        w_lo = np.where(inside, 1.0 - frac, 0.0).reshape(shape)
        w_hi = np.where(inside, frac, 0.0).reshape(shape)
        out = out.take(lo, axis=axis) * w_lo + out.take(np.minimum(lo + 1, c - 1), axis=axis) * w_hi
    return out
