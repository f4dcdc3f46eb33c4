"""Options of the projection algorithms that act during part of a step (cohere's triggers, PyNX's PSF).

* partial coherence (``pc_interval``): the modulus constraint compares the measured intensity with the
  calculated one blurred by a point-spread function (a real-space kernel acting on the intensity in
  detector pixels), which is re-estimated by Richardson-Lucy every N iterations (cohere's 'pc',
  PyNX's psf);
* low-pass data filter (``lowpass_iterations``): the measured amplitudes are multiplied by a Gaussian
  window whose width ramps from a fraction of the pattern to all of it (cohere 2.x's resolution trigger,
  whose fraction is of the whole array: its 0.7 is our 1.4; today's cohere blurs the data instead).  No
  simulated case was found where it helps (benchmarks/options_study.py --part lowpass, README);
* phase constraint (``phc_iterations``): in the early iterations a point inside the support whose phase
  lies outside [phc_min, phc_max] is treated as outside the support (cohere's phc);
* twin removal (``twin_trigger``): after N iterations the object is centred and all but one half of the
  array along each axis named in ``twin_halves`` is zeroed (cohere's twin trigger).

Every option is off by default, and an option that is off changes no operation of the step, so the
results of existing recipes stay bitwise the same.  Everything here is written against the backend's
array namespace ``xp`` (NumPy or CuPy).
"""

from __future__ import annotations

import math

import numpy as np

from cdi_plugins.compute.kernels import project_modulus
from cdi_plugins.core import CDIError, Param

__all__ = ["OPTION_PARAMS", "check_options", "Options"]

_HALVES_OK = lambda v: len(v) in (1, 2, 3) and all(h in (0, 1) for h in v)  # noqa: E731

OPTION_PARAMS = [
    Param("pc_interval", "int", 0,
          "partial coherence: re-estimate the PSF (Richardson-Lucy) every N iterations and blur the "
          "calculated intensity with it in the modulus constraint (0: off)", low=0),
    Param("pc_start", "int", 0, "partial coherence: iterations of this step run before the PSF is used", low=0),
    Param("pc_lucy_iterations", "int", 20, "Richardson-Lucy iterations per PSF estimate", low=1),
    Param("pc_kernel_size", "int", 9, "side (pixels, odd) of the box the PSF may occupy", low=1),
    Param("pc_sigma_init", "float", 1.0, "Gaussian width (pixels) of the first PSF guess", low=0,
          low_open=True),
    Param("lowpass_iterations", "int", 0,
          "low-pass data filter over the first N iterations: Gaussian window on the measured amplitudes "
          "ramping from lowpass_start of the pattern to all of it (0: off)", low=0),
    Param("lowpass_start", "float", 0.3, "window width (fraction of the half pattern) at the first iteration",
          low=0, high=1, low_open=True),
    Param("phc_iterations", "int", 0,
          "phase constraint over the first N iterations: points inside the support whose phase lies outside "
          "[phc_min, phc_max] count as outside (0: off)", low=0),
    Param("phc_min", "float", -1.57, "lowest phase (rad) allowed inside the support", low=-math.pi,
          high=math.pi),
    Param("phc_max", "float", 1.57, "highest phase (rad) allowed inside the support", low=-math.pi,
          high=math.pi),
    Param("twin_trigger", "int", 0,
          "twin removal: after this many iterations of the step, centre the object and zero all but one half "
          "of the array along each axis of twin_halves (0: off)", low=0),
    Param("twin_halves", "list", [0, 0],
          "twin removal: per axis (1 to 3 entries), the half kept: 0 the lower, 1 the upper",
          accept=_HALVES_OK),
]


def check_options(params: dict) -> None:
    """Refuse option values that are valid one by one but not together."""
    if "phc_min" in params and params["phc_min"] >= params["phc_max"]:
        raise CDIError("phc_min must be below phc_max")
    if "pc_kernel_size" in params and params["pc_kernel_size"] % 2 == 0:
        raise CDIError(f"pc_kernel_size must be odd (the PSF is centred on a pixel), got {params['pc_kernel_size']}")


# --------------------------------------------------------------------------------------------
# Partial coherence

def _window(shape, size: int) -> np.ndarray:
    """Box of side *size* (clipped to the array) around the origin of an FFT-ordered array."""
    w = np.zeros(shape, dtype=bool)
    h = [min(size // 2, (n - 1) // 2) for n in shape]
    idx = [np.r_[0:hk + 1, n - hk:n] if hk else np.r_[0:1] for hk, n in zip(h, shape)]
    w[np.ix_(*idx)] = True
    return w


def _gaussian_psf(shape, sigma: float, window: np.ndarray) -> np.ndarray:
    """Normalised Gaussian of width *sigma* in FFT order, cut to *window*."""
    r2 = sum(np.square(np.fft.fftfreq(n) * n)[tuple(slice(None) if j == k else None for j in range(3))]
             for k, n in enumerate(shape))
    g = np.exp(-r2 / (2.0 * sigma * sigma)) * window
    return (g / g.sum()).astype(np.float32)


class PartialCoherence:
    """A PSF acting on the intensity, estimated by Richardson-Lucy and applied in the modulus constraint."""

    def __init__(self, be, shape, dd, params):
        self._a = self._r = None     # scratch of project(): the fused kernels' KernelWork keeps none
        xp = be.xp
        self.be, self.shape = be, tuple(shape)
        self.iters = params["pc_lucy_iterations"]
        win = _window(self.shape, params["pc_kernel_size"])
        self.window = be.asarray(win)
        self.psf = be.asarray(_gaussian_psf(self.shape, params["pc_sigma_init"], win))
        self.otf = be.rfftn(self.psf)
        self.measured = (dd.d * dd.d).astype(xp.float32)   # zero where unconstrained
        self.known = None
        if dd.unc_idx is not None:   # unconstrained pixels carry no information on the PSF
            self.known = xp.ones(self.shape, dtype=bool)
            self.known.reshape(-1)[dd.unc_idx] = False
        self.tiny = xp.float32(1e-20)

    def blur(self, intensity):
        xp = self.be.xp
        out = self.be.irfftn(self.be.rfftn(intensity) * self.otf, self.shape).astype(xp.float32, copy=False)
        return xp.maximum(out, self.tiny, out=out)

    def estimate(self, x, support):
        """Richardson-Lucy update of the PSF from the object *x* confined to *support* (FFT order).

        With M = psf * C (C the coherent intensity of the object, * a circular convolution), each
        iteration is psf <- psf . [(M / (psf * C)) correlated with C] / sum(C), then cut to the
        kernel box and normalised to a sum of 1.
        """
        be, xp = self.be, self.be.xp
        f = be.fftn(x * support)
        coherent = (f.real * f.real + f.imag * f.imag).astype(xp.float32)
        spec_c = xp.conj(be.rfftn(coherent))
        total = coherent.sum()   # a device scalar (no host sync on CuPy)
        # where the model is ~0 but photons were counted (noise), measured / model would explode and
        # overflow float32 in the correlation: the model is floored at 1e-6 of its maximum there
        floor = xp.float32(1e-6) * coherent.max()
        psf = self.psf
        for _ in range(self.iters):
            ratio = self.measured / xp.maximum(self.blur(coherent), floor)
            if self.known is not None:
                ratio[~self.known] = 1.0
            corr = be.irfftn(be.rfftn(ratio) * spec_c, self.shape).astype(xp.float32, copy=False)
            new = xp.maximum(psf * corr / total, 0) * self.window
            norm = float(new.sum())
            if not (math.isfinite(norm) and norm > 0):
                break   # keep the last good PSF
            psf = new / xp.float32(norm)
            self.otf = be.rfftn(psf)
        self.psf = psf.astype(xp.float32, copy=False)

    def project(self, work, F, dd, d, dN):
        """Modulus constraint against the blurred intensity; in place on F, returns chi^2 (device)."""
        xp = work.xp
        if self._a is None:
            self._a = xp.empty(F.shape, dtype=xp.float32)
            self._r = xp.empty(F.shape, dtype=xp.float32)
        a = xp.abs(F, out=self._a)
        blurred = xp.sqrt(self.blur(a * a))
        r = xp.subtract(blurred, d, out=self._r)
        if dd.unc_idx is not None:
            r.reshape(-1)[dd.unc_idx] = 0
        chi = xp.vdot(r, r)
        xp.divide(dN, blurred, out=r)   # blurred >= 1e-10: no division by zero
        if dd.unc_idx is not None:
            r.reshape(-1)[dd.unc_idx] = dd.inv_n
        F *= r
        return chi


# --------------------------------------------------------------------------------------------
# Low-pass filter, phase constraint, twin removal

def _q2(shape) -> np.ndarray:
    """Squared reciprocal-space distance in FFT order, 1 at the middle of each face of the array."""
    return sum(np.square(2.0 * np.fft.fftfreq(n))[tuple(slice(None) if j == k else None for j in range(3))]
               for k, n in enumerate(shape)).astype(np.float32)


def _centre(be, a, shift):
    return be.xp.roll(a, shift, axis=(0, 1, 2))


def remove_twin(be, x, support, halves):
    """Centre the object (FFT order), zero all but the kept half along each axis of *halves*.

    Returns the shifted support.  Works in place on *x*.
    """
    xp = be.xp
    amp = be.to_numpy(xp.abs(be.fftshift(x))).astype(np.float64)
    total = amp.sum() or 1.0
    com = [float((amp.sum(axis=tuple(j for j in range(3) if j != k)) * np.arange(n)).sum() / total)
           for k, n in enumerate(amp.shape)]
    shift = tuple(int(round(n // 2 - c)) for n, c in zip(amp.shape, com))
    centred = _centre(be, be.fftshift(x), shift)
    for axis, keep in enumerate(halves):
        half = (centred.shape[axis] + 1) // 2
        cut = [slice(None)] * 3
        cut[axis] = slice(half, None) if keep == 0 else slice(0, half)
        centred[tuple(cut)] = 0
    x[...] = be.ifftshift(centred)
    return be.ifftshift(_centre(be, be.fftshift(support), shift))


class Options:
    """The options of one step: which are on, and what they do to an iteration."""

    def __init__(self, be, problem, dd, params):
        self.be, self.dd, self.p = be, dd, params
        xp = be.xp
        self.pc = PartialCoherence(be, problem.shape, dd, params) if params.get("pc_interval") else None
        self.lowpass = params.get("lowpass_iterations", 0)
        self.q2 = be.asarray(_q2(problem.shape)) if self.lowpass else None
        self.phc = params.get("phc_iterations", 0)
        self.twin = params.get("twin_trigger", 0)
        self.active = bool(self.pc or self.lowpass or self.phc or self.twin)
        self.scale = 1.0  # chi^2 normalisation of the current iteration relative to the full data
        self._xp = xp

    def prepare(self, it, x, s):
        """Data (and PSF) for iteration *it*: the low-pass window, a PSF estimate when one is due."""
        dd = self.dd
        self.d, self.dN, self.scale = dd.d, dd.dN, 1.0
        if it < self.lowpass:
            self.d, self.dN = self._filtered(it)
        self.use_pc = self.pc is not None and it >= self.p["pc_start"]
        if self.use_pc and (it - self.p["pc_start"]) % self.p["pc_interval"] == 0:
            self.pc.estimate(x, s)

    def project(self, work, F):
        """Modulus projection with the data of :meth:`prepare` (in place on F); chi^2 on the device."""
        if self.use_pc:
            return self.pc.project(work, F, self.dd, self.d, self.dN)
        return project_modulus(work, F, self.d, self.dN, self.dd.inv_n, self.dd.unc_idx)

    def _filtered(self, it):
        xp, dd = self._xp, self.dd
        frac = self.p["lowpass_start"] + (1.0 - self.p["lowpass_start"]) * it / self.lowpass
        g = xp.exp(self.q2 * xp.float32(-0.5 / (frac * frac)))
        d = dd.d * g
        norm = float(xp.vdot(d, d).real)
        self.scale = dd.norm / norm if norm > 0 else 1.0
        return d, dd.dN * g

    def inside(self, p, s, inside, it):
        """Flat indices where p is kept: the support, less (phc) the points of wrong phase."""
        if it >= self.phc:
            return inside
        xp = self._xp
        ph = xp.angle(p)
        return xp.flatnonzero(s & (ph >= self.p["phc_min"]) & (ph <= self.p["phc_max"]))

    def twin_now(self, x, s, it):
        """The support after twin removal at this iteration, or None when it is not this iteration."""
        if self.twin and it == self.twin:
            return remove_twin(self.be, x, s, self.p["twin_halves"])
        return None
