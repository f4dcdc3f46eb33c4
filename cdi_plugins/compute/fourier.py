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

__all__ = ["OVERSAMPLING_PRESETS", "oversampling", "full_from_half", "window_slices", "crop_pad", "fourier_resample"]


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

    It is computed on the Hermitian half of the grid (a real FFT: the autocorrelation of a real pattern is
    point-symmetric), smoothed there with ``scipy.ndimage.gaussian_filter``'s kernel, in the pattern's
    FFT order (its centring shifts change only the phase): the figures of the plain full-grid computation
    at a fraction of the cost (about 4 ms at 64^3, 40 ms at 128^3 on one core).

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
    cfg = _settings(preset, overrides)
    dtype = np.dtype(cfg["dtype"])
    a = np.array(intensity, dtype=dtype)
    if mask is not None:
        a[np.asarray(mask, dtype=bool)] = 0.0
    a[~((a >= 0) & (a < np.inf))] = 0.0                     # NaN, infinite and negative values
    half = _autocorrelation_half(a)
    if cfg["sigma"]:
        half = _gaussian_wrap_half(half, cfg["sigma"], a.shape)
    peak = half.max()
    if not peak > 0:
        return (math.nan,) * a.ndim
    above = half > dtype.type(cfg["threshold"]) * peak
    if cfg["region"] == "central":
        full = np.fft.fftshift(full_from_half(above, a.shape))
        from scipy import ndimage
        labels, _ = ndimage.label(full)
        full = labels == labels[tuple(n // 2 for n in a.shape)]
        rows = [full.any(axis=tuple(j for j in range(a.ndim) if j != axis)) for axis in range(a.ndim)]
    else:
        # the full autocorrelation is point-symmetric: the set above the threshold is the half's set and
        # its reflection, so each axis' projection is the half's projection and its reflection
        rows = []
        for axis, n in enumerate(a.shape):
            p = above.any(axis=tuple(j for j in range(a.ndim) if j != axis))
            if axis == a.ndim - 1:
                full_p = np.zeros(n, bool)
                full_p[:p.size] = p
                k = np.arange(p.size, n)
                full_p[k] = p[n - k]
            else:
                full_p = p | p[-np.arange(n) % n]
            rows.append(np.fft.fftshift(full_p))
    out = []
    for row, n in zip(rows, a.shape):
        idx = np.flatnonzero(row)
        extent = int(idx[-1] - idx[0] + 1) if idx.size else n
        os_ = 2.0 * n / (extent + cfg["width_offset"])
        out.append(round(os_, cfg["decimals"]) if cfg["decimals"] is not None else float(os_))
    return tuple(out)


def _autocorrelation_half(a: np.ndarray) -> np.ndarray:
    """``|FFT(a)|`` of a real array on the Hermitian half of the grid (last axis ``n // 2 + 1`` long).

    The autocorrelation ``|IFFT(I)|`` differs from it only by the factor ``1 / N`` and the reflection
    ``k -> -k`` (``|F(-k)| = |F(k)|`` for a real input), and the shifts that centre it only change the
    phase: the half grid in the FFT's own order carries all of it for half the cost.
    """
    import scipy.fft
    return np.abs(scipy.fft.rfftn(a, workers=1))


def _reflect_leading(x: np.ndarray) -> np.ndarray:
    """``x[-k0 % n0, -k1 % n1, ..., :]``: *x* reflected through index 0 on every axis but the last."""
    axes = tuple(range(x.ndim - 1))
    return np.roll(np.flip(x, axes), (1,) * len(axes), axes) if axes else x.copy()


def _beyond_half(half: np.ndarray, n: int, k: np.ndarray) -> np.ndarray:
    """Columns *k* (indices ``>= n // 2 + 1`` of a last axis *n* long) of the point-symmetric array whose
    Hermitian half is *half*: ``x(k0, .., k) = half(-k0, .., n - k)``."""
    return _reflect_leading(half[..., n - k])


def full_from_half(half: np.ndarray, shape) -> np.ndarray:
    """The full grid (FFT order) of a point-symmetric array given on its Hermitian half."""
    n, h = shape[-1], half.shape[-1]
    out = np.empty(shape, dtype=half.dtype)
    out[..., :h] = half
    if n > h:
        out[..., h:] = _reflect_leading(np.flip(half[..., 1:n - h + 1], -1))
    return out


def _gaussian_wrap_half(half: np.ndarray, sigma: float, shape) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(full, sigma, mode="wrap")`` of a point-symmetric array of *shape*
    given on its Hermitian half (:func:`full_from_half`), returned on the half.

    The same normalised kernel truncated at 4 sigma, one axis after the other, each as a product with the
    (circulant) matrix of the periodic correlation; along the halved last axis the pixels beyond the half
    come from the reflection ``x(-k) = x(k)``.  Sums in the array's dtype.
    """
    w = _gaussian_taps(float(sigma)).astype(half.dtype)
    radius = len(w) // 2
    out = half
    for axis, n in enumerate(shape[:-1]):
        out = _taps(np.take(out, np.arange(-radius, n + radius) % n, axis=axis), w, axis, n)
    n, h = shape[-1], half.shape[-1]
    k = np.arange(-radius, h + radius) % n                 # the last axis' pixels the taps reach
    direct = k < h
    if n - h >= radius:                                      # the usual case: slices, no gather
        ext = np.concatenate([_beyond_half(out, n, k[:radius]), out, _beyond_half(out, n, k[-radius:])],
                             axis=-1) if radius else out
    else:
        ext = np.empty(half.shape[:-1] + (k.size,), dtype=half.dtype)
        ext[..., direct] = out[..., k[direct]]
        ext[..., ~direct] = _beyond_half(out, n, k[~direct])
    return _taps(ext, w, half.ndim - 1, h)


def _gaussian_taps(sigma: float) -> np.ndarray:
    """The normalised Gaussian kernel of ``scipy.ndimage.gaussian_filter`` (truncated at 4 sigma)."""
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / sigma ** 2 * x ** 2)
    return w / w.sum()


def _taps(ext: np.ndarray, w: np.ndarray, axis: int, n: int) -> np.ndarray:
    """``sum_j w[j] ext[j:j + n]`` along *axis*: the correlation of a padded array with symmetric taps *w*
    (in place, no BLAS: its threads would spin on a shared machine)."""
    def window(j):
        sl = [slice(None)] * ext.ndim
        sl[axis] = slice(j, j + n)
        return ext[tuple(sl)]
    r = len(w) // 2
    out = np.multiply(window(r), w[r])
    tmp = np.empty_like(out)
    for j in range(r):                                       # w[j] == w[-1 - j]
        np.add(window(j), window(len(w) - 1 - j), out=tmp)
        tmp *= w[j]
        out += tmp
    return out


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


def fourier_resample(a, shape, dtype=np.complex128) -> np.ndarray:
    """Band-limited (Fourier) interpolation of a centred array onto *shape* (same field of view).

    The centred spectrum is cropped or zero-padded (:func:`crop_pad`); values keep their scale (a
    constant stays the same constant, so ``sum |a|^2`` grows with the number of voxels), and resampling
    up and back down returns the original exactly.  Returns *dtype* (complex128 or complex64: the
    precision of the FFTs).
    """
    import scipy.fft
    a = np.asarray(a, dtype=dtype)
    f = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(a)))
    f = crop_pad(f, shape)
    out = scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(f), overwrite_x=True))
    out *= out.real.dtype.type(np.prod(shape) / np.prod(a.shape))
    return out
