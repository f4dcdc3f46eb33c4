"""Figures of merit: reciprocal-space chi^2 and the error against a known truth.

Both functions work on host NumPy arrays (a CuPy array is copied to the host
first).  Arrays are centred: object centre and Bragg peak at index ``n // 2``
on each axis, the far field being ``F = fftshift(fftn(ifftshift(obj)))``.
"""

from __future__ import annotations

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["chi2", "compare_to_truth", "far_field", "twin", "support_stats", "agreement"]


def _host(a, name: str) -> np.ndarray:
    if a is None:
        raise CDIError(f"{name} is None")
    if not isinstance(a, np.ndarray) and hasattr(a, "get"):   # CuPy and friends
        a = a.get()
    return np.asarray(a)


def far_field(obj) -> np.ndarray:
    """Far field of a centred object: ``fftshift(fftn(ifftshift(obj)))`` as complex64.

    Parameters
    ----------
    obj : array_like
        Complex object, centred.

    Returns
    -------
    ndarray of complex64
        Its Fourier transform, centred (zero frequency at ``n // 2``).
    """
    import scipy.fft
    o = _host(obj, "obj").astype(np.complex64, copy=False)
    return scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(o), workers=-1))


def twin(a) -> np.ndarray:
    """The twin image ``conj(a(-r))``, the point reflection taken about index ``n // 2``.

    For an even axis length this is ``np.roll(np.flip(a), 1)``; for an odd one,
    ``np.flip(a)``.  The twin has exactly the same diffraction intensity.
    """
    a = np.asarray(a)
    out = np.conj(np.flip(a))
    shifts = tuple(1 - n % 2 for n in a.shape)  # 2*(n//2) - (n-1)
    return np.roll(out, shifts, axis=tuple(range(a.ndim)))


def chi2(obj, intensity, mask=None) -> float:
    """Reciprocal-space amplitude error of an object against measured intensity.

    ``chi2 = sum_measured (|F| - sqrt(I))^2 / sum_measured I`` with
    ``F = fftshift(fftn(ifftshift(obj)))``; pixels where *mask* is True are
    not measured and are left out of both sums.

    Parameters
    ----------
    obj : array_like of complex
        Object, centred.
    intensity : array_like of float
        Measured intensity, Bragg peak at the centre, same shape as *obj*.
    mask : array_like of bool, optional
        True where a pixel is not measured.

    Returns
    -------
    float
        0 for a perfect fit; about 1 or more for an unrelated object.

    Raises
    ------
    CDIError
        On a shape mismatch or when the measured intensity sums to zero.
    """
    o = _host(obj, "obj")
    i = _host(intensity, "intensity")
    if o.shape != i.shape:
        raise CDIError(f"object shape {o.shape} does not match intensity shape {i.shape}")
    if mask is not None:
        m = _host(mask, "mask")
        if m.shape != i.shape:
            raise CDIError(f"mask shape {m.shape} does not match intensity shape {i.shape}")
        measured = ~m.astype(bool)
    else:
        measured = None
    amp = np.sqrt(np.maximum(i.astype(np.float32, copy=False), 0.0))
    fabs = np.abs(far_field(o))
    if measured is not None:
        amp, fabs = amp[measured], fabs[measured]
    denom = float(np.sum(amp * amp, dtype=np.float64))
    if not denom > 0.0:
        raise CDIError("the measured intensity sums to zero; chi^2 is undefined")
    d = fabs - amp
    return float(np.sum(d * d, dtype=np.float64) / denom)


# ----------------------------------------------------------------------------- registration

def _freqs(shape) -> list[np.ndarray]:
    """Angular frequencies 2*pi*k/n (k signed, numpy fftfreq order) per axis."""
    return [2.0 * np.pi * np.fft.fftfreq(n) for n in shape]


def _moments(p: np.ndarray, w: list[np.ndarray], s: np.ndarray) -> np.ndarray:
    """M[a,b,c] = sum_k p(k) w0^a w1^b w2^c exp(i w.s) for a, b, c in 0..2 (complex128)."""
    vec = []
    for wj, sj in zip(w, s):
        e = np.exp(1j * wj * sj)
        vec.append(np.stack([e, wj * e, wj * wj * e], axis=1))           # (n_j, 3)
    m = np.tensordot(p, vec[2], axes=([2], [0]))                          # (n0, n1, 3)
    m = np.einsum("abm,bn->anm", m, vec[1])                               # (n0, 3, 3)
    return np.einsum("anm,al->lnm", m, vec[0])                            # (3, 3, 3)


def _cc_derivatives(p, w, s):
    """|CC(s)|^2 with its gradient and Hessian, CC(s) = sum_k p(k) exp(i w.s)."""
    m = _moments(p, w, s)
    c = m[0, 0, 0]
    unit = np.eye(3, dtype=int)
    g = np.array([1j * m[tuple(unit[j])] for j in range(3)])
    h = np.empty((3, 3), dtype=np.complex128)
    for j in range(3):
        for l in range(3):
            h[j, l] = -m[tuple(unit[j] + unit[l])]
    f = float(abs(c) ** 2)
    grad = 2.0 * np.real(np.conj(c) * g)
    hess = 2.0 * np.real(np.conj(g)[None, :] * g[:, None] + np.conj(c) * h)
    return f, grad, hess


def _register(rec: np.ndarray, fref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shift s (floats) maximising |sum_r rec(r + s) conj(ref(r))|; also returns fftn(rec).

    *fref* is ``fftn(ref)``.

    Integer peak of the FFT cross-correlation, then Newton's method on the
    exact band-limited (trigonometric) interpolation of the cross-correlation,
    evaluated by separable direct DFTs.
    """
    import scipy.fft
    fr = scipy.fft.fftn(rec, workers=-1)
    p = fr * np.conj(fref)
    cc = scipy.fft.ifftn(p, workers=-1)
    peak = np.unravel_index(int(np.argmax(np.abs(cc))), cc.shape)
    s = np.array([pk - n if pk > n // 2 else pk for pk, n in zip(peak, cc.shape)], dtype=np.float64)
    p = p.astype(np.complex128)
    w = _freqs(rec.shape)
    f, grad, hess = _cc_derivatives(p, w, s)
    for _ in range(30):
        try:
            step = -np.linalg.solve(hess, grad)
            ok = bool(np.all(np.linalg.eigvalsh(hess) < 0))
        except np.linalg.LinAlgError:
            ok = False
        if not ok or not np.all(np.isfinite(step)):
            # not concave here: a small gradient-ascent step instead
            gn = float(np.linalg.norm(grad))
            if gn == 0.0:
                break
            step = 0.1 * grad / gn
        big = float(np.max(np.abs(step)))
        if big > 0.5:
            step *= 0.5 / big
        for _ in range(20):
            f_new, g_new, h_new = _cc_derivatives(p, w, s + step)
            if f_new >= f:
                break
            step *= 0.5
        else:
            break
        s = s + step
        f, grad, hess = f_new, g_new, h_new
        if float(np.max(np.abs(step))) < 1e-7:
            break
    return s, fr


def _apply_shift(fr: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Inverse FFT of fr with a phase ramp: returns a(r + s) for fr = fftn(a)."""
    import scipy.fft
    w = _freqs(fr.shape)
    ramp = np.ones((1,) * fr.ndim, dtype=np.complex64)
    for j, (wj, sj) in enumerate(zip(w, s)):
        shape = [1] * fr.ndim
        shape[j] = -1
        ramp = ramp * np.exp(1j * wj * sj).astype(np.complex64).reshape(shape)
    return scipy.fft.ifftn(fr * ramp, workers=-1)


def compare_to_truth(rec, truth, *, support=None, scale: bool = False) -> dict:
    """Normalised error of a reconstruction after removing what phase retrieval cannot fix.

    The reconstruction is aligned to the truth for global phase, translation
    (integer and sub-pixel) and the twin image ``conj(rec(-r))``: both *rec*
    and its twin are registered by cross-correlation (FFT peak, then Newton
    refinement of the band-limited cross-correlation to ~1e-6 pixel), shifted
    by a Fourier phase ramp, and the better of the two is kept.

    Parameters
    ----------
    rec : array_like of complex, 3-D
        Reconstructed object, centred.
    truth : array_like of complex, 3-D
        True object, centred, same shape.
    support : array_like of bool, optional
        Region (in the truth's frame) over which the error and the global
        phase are computed, e.g. the true support, so that whatever the
        reconstruction holds outside it is ignored; default the whole array.
        The registration always uses the whole arrays.
    scale : bool, optional
        Also fit the best real scale factor (i.e. a complex scalar instead of
        only a phase).  Default False: the error includes any scale mismatch.

    Returns
    -------
    dict
        ``error``
            ``||c * rec_shifted - truth|| / ||truth||`` (float), where
            *rec_shifted* is *rec* (or its twin) translated onto the truth and
            ``c`` the fitted phase factor (complex scalar with ``scale=True``).
        ``twin``
            True if the twin of *rec* matched better.
        ``shift``
            Tuple of 3 floats: *rec* (or its twin) is the truth translated by
            this many pixels, i.e. ``rec(r) ~ truth(r - shift)``.
        ``phase``
            Global phase (radians) of *rec* relative to the truth.
        ``scale``
            Fitted amplitude factor (1.0 unless ``scale=True``); overall
            ``rec_shifted ~ scale * exp(1j * phase) * truth``.
        ``aligned``
            complex64 array, centred: ``c * rec_shifted``, directly comparable
            with *truth* (``aligned - truth`` is the error map).

    Raises
    ------
    CDIError
        On a shape mismatch, a non-3-D array, non-finite values or an all-zero
        input.
    """
    import scipy.fft
    r = _host(rec, "rec")
    t = _host(truth, "truth")
    if r.shape != t.shape:
        raise CDIError(f"reconstruction shape {r.shape} does not match truth shape {t.shape}")
    if r.ndim != 3:
        raise CDIError(f"expected 3-D arrays, got shape {r.shape}")
    r = r.astype(np.complex64, copy=False)
    t = t.astype(np.complex64, copy=False)
    for name, a in (("reconstruction", r), ("truth", t)):
        if not np.isfinite(a).all():
            raise CDIError(f"the {name} holds NaN or infinite values")
        if not np.any(a):
            raise CDIError(f"the {name} is zero everywhere")
    if support is not None:
        sup = _host(support, "support")
        if sup.shape != t.shape:
            raise CDIError(f"support shape {sup.shape} does not match truth shape {t.shape}")
        sup = sup.astype(bool)
        if not sup.any():
            raise CDIError("the support is empty")
        if not np.any(t[sup]):
            raise CDIError("the truth is zero everywhere inside the support")
    else:
        sup = None
    b = (t[sup] if sup is not None else t).astype(np.complex128)
    tnorm2 = float(np.sum(np.abs(b) ** 2))

    ft = scipy.fft.fftn(t, workers=-1)
    best = None
    for is_twin, cand in ((False, r), (True, twin(r))):
        s, fr = _register(cand, ft)
        aligned = _apply_shift(fr, s)
        a = (aligned[sup] if sup is not None else aligned).astype(np.complex128)
        inner = complex(np.vdot(a, b))                      # <a, b> = sum conj(a) b
        anorm2 = float(np.sum(np.abs(a) ** 2))
        if scale:
            c = inner / anorm2 if anorm2 > 0 else 0.0
        else:
            c = inner / abs(inner) if inner != 0 else 1.0
        diff = c * a - b
        err = float(np.sqrt(np.sum(np.abs(diff) ** 2) / tnorm2))
        if best is None or err < best["error"]:
            shift = tuple(float(v) for v in s)
            c_inv = 1.0 / c if c != 0 else 0.0   # rec_aligned ~ c_inv * truth
            best = {
                "error": err,
                "twin": is_twin,
                "shift": shift,
                "phase": float(np.angle(c_inv)) if c != 0 else 0.0,
                "scale": float(abs(c_inv)) if scale else 1.0,
                "aligned": (c * aligned).astype(np.complex64),
            }
    return best


# ----------------------------------------------------------------------------- judging a result without a truth

def support_stats(support) -> dict:
    """How compact a support is.

    Returns
    -------
    dict
        ``fraction`` (of the array), ``voxels``, ``components`` (face-connected
        parts, counted on the periodic array: a part cut by the array edge
        counts once) and ``largest`` (fraction of the support in its largest part).
    """
    from scipy import ndimage

    s = _host(support, "support").astype(bool)
    if s.ndim != 3:
        raise CDIError(f"expected a 3-D support, got shape {s.shape}")
    n = int(s.sum())
    if n == 0:
        return {"fraction": 0.0, "voxels": 0, "components": 0, "largest": 0.0}
    labels, count = ndimage.label(s)
    # the reconstruction is periodic: join parts that touch across opposite faces
    parent = list(range(count + 1))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for axis in range(3):
        a = np.take(labels, 0, axis=axis)
        b = np.take(labels, -1, axis=axis)
        for i, j in set(zip(a[(a > 0) & (b > 0)].tolist(), b[(a > 0) & (b > 0)].tolist())):
            parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(count + 1)])
    sizes = np.bincount(roots[labels[s]], minlength=count + 1)
    return {"fraction": n / s.size, "voxels": n, "components": int(np.count_nonzero(sizes)),
            "largest": float(sizes.max()) / n}


def agreement(a, b) -> dict:
    """Normalised difference between two reconstructions of the same data.

    *a* is aligned onto *b* (translation, global phase and twin, as in
    :func:`compare_to_truth`) and ``||a_aligned - b|| / ||b||`` is returned as
    ``difference`` with ``twin``, ``shift`` and ``phase``.  0 means identical;
    two unrelated objects of the same norm give about 1.4.
    """
    out = compare_to_truth(a, b)
    return {"difference": out["error"], "twin": out["twin"], "shift": out["shift"], "phase": out["phase"]}
