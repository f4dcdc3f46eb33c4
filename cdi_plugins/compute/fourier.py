"""Fourier-space numerics on host NumPy arrays: how oversampled a pattern is, centred crop/pad, band-limited
resampling.

Arrays are centred as everywhere in cdi-plugins: object centre and Bragg peak at index ``n // 2`` on
every axis, the far field being ``fftshift(fftn(ifftshift(obj)))``.

:func:`oversampling` estimates the oversampling ratio per axis from the intensity autocorrelation, with
one of two named presets (see its docstring for why there are two); :func:`crop_pad` cuts or pads an
array around its centre (or around any pixel); :func:`fourier_resample` interpolates a centred array onto
another grid over the same field of view by cropping or zero-padding its spectrum.
"""

from __future__ import annotations

import math

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["OVERSAMPLING_PRESETS", "oversampling", "window_slices", "crop_pad", "fourier_resample"]


# --------------------------------------------------------------------------------------------
# oversampling

#: The settings of each :func:`oversampling` preset; any of them can be overridden per call.
OVERSAMPLING_PRESETS = {
    # what ``cdi run`` prints and stores in Problem.metadata["oversampling_estimate"]
    "blob": {"threshold": 0.01, "sigma": 0.0, "region": "central", "width_offset": 1, "dtype": "float64",
             "decimals": 3},
    # what the nn step measures (and what the shipped weights' ``oversampling_target`` was measured with)
    "smoothed": {"threshold": 0.1, "sigma": 1.0, "region": "all", "width_offset": 0, "dtype": "float32",
                 "decimals": None},
}
_REGIONS = ("central", "all")
_DTYPES = ("float32", "float64")


def _settings(preset: str, overrides: dict) -> dict:
    if preset not in OVERSAMPLING_PRESETS:
        raise CDIError(f"unknown oversampling preset {preset!r}; known: {', '.join(OVERSAMPLING_PRESETS)}")
    cfg = dict(OVERSAMPLING_PRESETS[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise CDIError(f"unknown oversampling setting(s) {unknown}; known: {', '.join(cfg)}")
    cfg.update(overrides)
    if cfg["region"] not in _REGIONS:
        raise CDIError(f"oversampling region must be one of {', '.join(_REGIONS)}, got {cfg['region']!r}")
    if cfg["dtype"] not in _DTYPES:
        raise CDIError(f"oversampling dtype must be one of {', '.join(_DTYPES)}, got {cfg['dtype']!r}")
    if not 0 < cfg["threshold"] < 1:
        raise CDIError(f"oversampling threshold must be in (0, 1), got {cfg['threshold']!r}")
    return cfg


def oversampling(intensity, mask=None, *, preset: str = "blob", **overrides) -> tuple:
    """Oversampling ratio per axis, estimated from the intensity autocorrelation.

    The autocorrelation of the object, ``|IFFT(I)|``, is about twice as wide as the object on every
    axis: an object *w* pixels wide gives an autocorrelation ``2 w - 1`` pixels wide.  The extent *e* of
    the autocorrelation above ``threshold`` times its maximum gives ``os = 2 n / (e + width_offset)``
    (array size over object size).  Phase retrieval needs at least 2 on every axis; 3 or more is
    comfortable.  Masked pixels count as 0, as do NaN, infinite and negative values.

    Two presets exist because two callers measure it for different purposes, and each must keep giving
    the figures it always gave:

    ``"blob"`` (the default)
        What ``cdi run`` prints ("oversampling estimate (autocorrelation)") and stores in
        ``Problem.metadata["oversampling_estimate"]``: the raw autocorrelation (float64, no smoothing),
        its **connected central blob** above **1 %** of the maximum, ``os = 2 n / (e + 1)`` (the exact
        relation ``e = 2 w - 1``), rounded to 3 decimals.  Thresholding trims the tails, so on simulated
        faceted crystals it is 5-20 % above the true value.
    ``"smoothed"``
        What the ``nn`` step uses to put a pattern on the network's grid, stored in its history record
        (``oversampling``): the autocorrelation in float32, **Gaussian-smoothed** (sigma 1 pixel,
        periodic), **every voxel** above **10 %** of the maximum, ``os = 2 n / e``.  The higher
        threshold cuts more of the tails, so it reads about 25-35 % higher than ``"blob"`` on the same
        pattern.  The shipped network weights record the oversampling they were trained at
        (``oversampling_target``) measured this way, so this preset must not change while they are in
        use.

    Parameters
    ----------
    intensity : array_like
        Intensity, peak near the centre (any number of axes; 3 in practice).
    mask : array_like of bool, optional
        True where a pixel is not measured.
    preset : str
        ``"blob"`` or ``"smoothed"`` (see :data:`OVERSAMPLING_PRESETS`).
    **overrides
        Any setting of the preset: ``threshold`` (fraction of the maximum, in (0, 1)), ``sigma``
        (Gaussian smoothing in pixels, 0 for none), ``region`` (``"central"``: the connected blob through
        the centre; ``"all"``: every voxel above the threshold), ``width_offset`` (pixels added to the
        extent), ``dtype`` (``"float32"`` or ``"float64"``: the precision of the FFT), ``decimals``
        (round the result; None to keep it as is).

    Returns
    -------
    tuple of float
        One value per axis; NaN on every axis when the intensity is 0 everywhere.

    Raises
    ------
    CDIError
        An unknown preset or setting, or a setting out of range.
    """
    import scipy.fft
    from scipy import ndimage
    cfg = _settings(preset, overrides)
    a = np.array(intensity, dtype=cfg["dtype"])
    if mask is not None:
        a[np.asarray(mask, dtype=bool)] = 0.0
    a = np.where(np.isfinite(a), np.maximum(a, 0), 0).astype(cfg["dtype"], copy=False)
    ac = np.abs(scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(a), workers=-1)))
    if cfg["sigma"]:
        ac = ndimage.gaussian_filter(ac, cfg["sigma"], mode="wrap")
    peak = ac.max()
    if not peak > 0:
        return (math.nan,) * a.ndim
    above = ac > cfg["threshold"] * peak
    if cfg["region"] == "central":
        labels, _ = ndimage.label(above)
        above = labels == labels[tuple(n // 2 for n in a.shape)]
    out = []
    for axis, n in enumerate(a.shape):
        idx = np.flatnonzero(above.any(axis=tuple(j for j in range(a.ndim) if j != axis)))
        extent = int(idx[-1] - idx[0] + 1) if idx.size else n
        os_ = 2.0 * n / (extent + cfg["width_offset"])
        out.append(round(os_, cfg["decimals"]) if cfg["decimals"] is not None else float(os_))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# crop / pad and resampling


def window_slices(shape, out_shape, centre=None) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Where an *out_shape* window with pixel *centre* of a *shape* array at its ``m // 2`` overlaps it.

    Returns ``(src, dst)``: ``window[dst] = array[src]``.  *centre* defaults to ``n // 2`` on every axis
    (the array's own centre).

    Raises
    ------
    CDIError
        When the window does not overlap the array on some axis.
    """
    if centre is None:
        centre = tuple(n // 2 for n in shape)
    src, dst = [], []
    for n, m, c in zip(shape, out_shape, centre):
        lo = c - m // 2                         # array index of window index 0
        s0, s1 = max(lo, 0), min(lo + m, n)
        if s1 <= s0:
            raise CDIError(f"the window of {m} pixels around pixel {c} misses the data")
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    return tuple(src), tuple(dst)


def crop_pad(a, shape, value=0, *, centre=None) -> np.ndarray:
    """Crop or pad *a* to *shape*, keeping index ``n // 2`` (or pixel *centre*) at ``m // 2``.

    Pixels of the result outside *a* are *value*; the dtype is *a*'s.

    Raises
    ------
    CDIError
        When a *centre* puts the window off the array on some axis.
    """
    a = np.asarray(a)
    out = np.full(tuple(shape), value, dtype=a.dtype)
    src, dst = window_slices(a.shape, tuple(shape), centre)
    out[dst] = a[src]
    return out


def fourier_resample(a, shape) -> np.ndarray:
    """Band-limited (Fourier) interpolation of a centred array onto *shape* (same field of view).

    The centred spectrum is cropped or zero-padded (:func:`crop_pad`); values keep their scale (a
    constant stays the same constant, so ``sum |a|^2`` grows with the number of voxels), and resampling
    up and back down returns the original exactly.  Returns complex128.
    """
    import scipy.fft
    a = np.asarray(a, dtype=np.complex128)
    f = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(a)))
    f = crop_pad(f, shape)
    out = scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(f)))
    return out * (np.prod(shape) / np.prod(a.shape))
