"""The AD refiner's forward model and losses, and the torch helpers the refiner works with.

Model
-----
With ``p`` the parameters, ``S`` the support and ``F = fftn(p * S)``
(unnormalised, FFT order), the modelled intensity is ``s^2 |F|^2`` where the
scale ``s`` is *fitted* in closed form at every evaluation: the least-squares
amplitude scale for the amplitude loss, the maximum-likelihood scale for the
Poisson loss, the ratio of maxima for the max-normalised loss (as 3D-CDI-NN).
A scale that is optimal for its loss contributes nothing to the gradient
(envelope theorem), so it is computed outside the graph, except for the
max-normalisation, which 3D-CDI-NN differentiates through.  The fitted scale
makes the loss blind to the magnitude of ``p``; ``p`` is normalised to an rms
of 1 inside the support at the start, so that a learning rate is a
dimensionless step (with Adam, about ``learning_rate`` of the typical value per
iteration) whatever the photon count or the incoming object.  The object handed
on is ``s * p * S`` with ``s`` the least-squares amplitude scale, so that its
far field matches the data in the chi^2 sense whatever the loss.

Parametrisation: real and imaginary parts (a float32 tensor of shape
``(*shape, 2)`` viewed as complex64), not amplitude and phase.  The model is
then linear in the parameters up to the modulus; the gradient is smooth
everywhere, whereas amplitude/phase has a phase derivative that vanishes or
blows up where the amplitude does (a random start and every support edge have
many such voxels) and a 2 pi wrap for the optimiser to fight; and it is what
3D-CDI-NN's refinement optimises.  The parameters are kept exactly zero outside
the support (the gradient is projected), which is the same as differentiating
``p * S`` but cheaper.

Losses (``m = s^2 |F|^2``, ``d = sqrt(I)``; sums over the measured pixels that
are not free pixels, exactly the pixels the iterative steps constrain):

* ``amplitude``: ``sum (s|F| - d)^2 / sum d^2`` (Gaussian noise on sqrt(I));
  it is the recorded chi^2.
* ``poisson``: the Poisson deviance ``sum m - I - I log(m / I)``, divided by
  ``sum I``.
* ``max_normalised``: ``sum (|F|/max|F| - d/max d)^2 / sum (d/max d)^2``,
  3D-CDI-NN's loss.

An optional isotropic total variation, divided by the object's rms (so that the
fitted scale cannot shrink it away) and computed on the support's bounding box
only, is added with weight ``tv_weight``.

The modulus-and-loss node is one custom autograd function (fused forward,
closed-form vector-Jacobian product, checked against finite differences in the
tests): composed from PyTorch's elementwise operations it cost more than the
two FFTs of an iteration on a CPU.

CPU fast path (:meth:`_Model.evaluate_fast`, :func:`fast_kernels`): on the CPU,
for the amplitude and Poisson losses without total variation and where numba is
installed, the refiner bypasses autograd.  ``F = fftn(x)`` (torch, MKL), one
numba pass (algorithms/ad/_kernels.py) that fits the scale, sums the loss,
chi^2 and chi2_free and turns ``F`` into ``gain * dL/dF`` in place, and one
unnormalised inverse FFT (``ifftn(norm="forward")``, the adjoint of the
unnormalised forward FFT) give ``gain * dL/dx``: the autograd path's gradient to
float32 rounding (tests/test_ad_fast.py), with the sums in float64.  Even with
the custom node, autograd cost ~0.3 ms of graph bookkeeping per evaluation and
the node's elementwise torch passes ~1.5 ms at 64^3 (against ~0.45 ms for the
numba pass); on the 32^3 coarse grid, where an FFT takes 0.05 ms, a whole
iteration went from ~0.7 to ~0.2 ms.  The torch path stays for CUDA, the TV
term, the max-normalised loss, without numba and with
``CDI_PLUGINS_KERNELS=numpy``.  Importing numba and its first kernel call make
a process's first AD step ~0.3 s slower (once).

Helpers: shrink-wrap on the optimisation device (Gaussian smoothing in Fourier
space with one real FFT pair), Fourier interpolation between the coarse and the
full grid, and the moves between the framework's backend (NumPy or CuPy) and
torch.  This module imports torch: the plugin imports it only when a step runs.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math

import numpy as np
import torch

from cdi_plugins.core import CDIError
from cdi_plugins.compute import kernels as ck
from cdi_plugins.compute.kernels import requested_kernels
from cdi_plugins.compute.support import problem_cache

from cdi_plugins.algorithms.ad.plugin import LOSSES

log = logging.getLogger("cdi_plugins.ad")

#: The losses the CPU fast path (:meth:`_Model.evaluate_fast`) evaluates without autograd.
FAST_LOSSES = ("amplitude", "poisson")
_TINY32 = float(np.finfo(np.float32).tiny)


@functools.lru_cache(maxsize=None)
def _import_kernels():
    """algorithms/ad/_kernels.py (numba), or None where numba cannot be imported."""
    try:
        from cdi_plugins.algorithms.ad import _kernels
    except Exception as exc:  # numba not installed (the ``fast`` extra), or a broken install
        log.debug("AD fast path unavailable (%s: %s): autograd on the CPU", exc.__class__.__name__, exc)
        return None
    return _kernels


def fast_kernels(device, loss: str, tv_weight: float):
    """The numba kernels of the CPU fast path when they apply to this run, else None (autograd).

    They apply on the CPU, for the losses in :data:`FAST_LOSSES`, without total variation, where
    numba is installed and ``CDI_PLUGINS_KERNELS`` is not ``numpy`` (the framework's switch to its
    NumPy reference kernels turns this path off too).
    """
    if device.type != "cpu" or loss not in FAST_LOSSES or tv_weight:
        return None
    if requested_kernels() == "numpy":     # an unknown value is a CDIError, as in the iterative steps
        return None
    return _import_kernels()


# --------------------------------------------------------------------------------------------
# The forward model and losses, written for any real dtype so that the gradient check can
# run them in float64.

class _Model:
    """Measured data in FFT order on one device, and the loss of an object against it.

    Parameters
    ----------
    intensity : numpy array, centred
    unconstrained : numpy bool array (centred) or None
        Pixels left out of the loss and of chi^2 (masked or free).
    free : numpy bool array (centred) or None
        Pixels whose chi^2 is recorded as ``chi2_free``.
    device : torch.device
    dtype : torch real dtype (float32 in runs; float64 for the gradient check)
    crop : tuple of int or None
        Keep only the central ``crop`` pixels of the pattern (the low spatial frequencies, for the
        coarse stage: an object on a ``crop`` grid with the same field of view).  The loss is
        that of the crop; ``chi`` and ``chi_free`` stay those of the whole pattern for the object
        Fourier-interpolated onto the full grid, whose far field is zero outside the crop: the
        measured amplitudes there count in full, so the history is comparable across stages and
        with the other steps at no extra FFT.
    """

    def __init__(self, intensity, unconstrained, free, device, dtype, crop=None):
        self.chi_extra = self.chi_norm = self.free_extra = None
        if crop is not None and tuple(crop) != tuple(intensity.shape):
            intensity, unconstrained, free = self._crop(intensity, unconstrained, free, crop)
        self.device, self.dtype = device, dtype
        self.shape = tuple(intensity.shape)
        n = intensity.size
        i_f = np.maximum(np.fft.ifftshift(np.asarray(intensity, dtype=np.float64)), 0.0)
        w = None
        if unconstrained is not None and np.any(unconstrained):
            w = ~np.fft.ifftshift(np.asarray(unconstrained, dtype=bool))
            i_f = np.where(w, i_f, 0.0)
        d = np.sqrt(i_f)
        self.w = None if w is None else self._tensor(w)
        self.d = self._tensor(d)
        self.negd = torch.neg(self.d)
        self.D = float(np.sum(i_f))                          # sum d^2 = sum I over constrained pixels
        if not self.D > 0:
            raise CDIError("the measured intensity is zero at every constrained pixel")
        self._i_f, self._n_constrained = i_f, int(np.count_nonzero(w)) if w is not None else n
        self.n = n
        self.free_idx = None
        if free is not None and np.any(free):
            fi = np.flatnonzero(np.fft.ifftshift(np.asarray(free, dtype=bool)))
            i_raw = np.fft.ifftshift(np.asarray(intensity, dtype=np.float64)).ravel()[fi]
            dfree = np.sqrt(np.maximum(i_raw, 0.0))
            self.free_idx = torch.from_numpy(fi).to(device)
            self.d_free = self._tensor(dfree)
            self.norm_free = float(np.sum(dfree ** 2)) or 1.0
        if self.chi_norm is None:                            # the whole pattern
            self.chi_norm, self.chi_extra = self.D, 0.0
        if self.free_extra is not None:                      # free pixels outside the crop count in full
            self.norm_free = self.free_norm_full

    def _crop(self, intensity, unconstrained, free, crop):
        """The central *crop* of the data; what lies outside it is kept as the sums chi^2 needs."""
        sl = tuple(slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(intensity.shape, crop))
        full = np.maximum(np.asarray(intensity, dtype=np.float64), 0.0)
        outside = np.ones(full.shape, dtype=bool)
        outside[sl] = False
        cons = ~unconstrained if unconstrained is not None else np.ones(full.shape, dtype=bool)
        self.chi_norm = float(np.sum(full[cons]))
        self.chi_extra = float(np.sum(full[cons & outside]))
        if free is not None and np.any(free):
            self.free_norm_full = float(np.sum(full[free])) or 1.0
            self.free_extra = float(np.sum(full[free & outside]))
        return (intensity[sl], None if unconstrained is None else unconstrained[sl],
                None if free is None else free[sl])

    def _tensor(self, a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=self.device, dtype=self.dtype)

    # what only the Poisson and the max-normalised losses use, made on their first use
    @functools.cached_property
    def I(self):                                             # noqa: E743 - the intensity, as in the papers
        return self._tensor(self._i_f)

    @functools.cached_property
    def ilogi_sum(self) -> float:
        i_f = self._i_f
        return float(np.sum(i_f * np.log(np.where(i_f > 0, i_f, 1.0))))    # sum I log I (0 log 0 = 0)

    @functools.cached_property
    def eps(self) -> float:
        # floor of the modelled intensity in the Poisson loss: keeps log and I/m finite where
        # the model is dark, far below one photon for counting data
        return 1e-6 * self.D / max(1, self._n_constrained)

    @functools.cached_property
    def dmax(self) -> float:
        return float(np.sqrt(self._i_f.max()))

    @functools.cached_property
    def dn(self):
        return self._tensor(np.sqrt(self._i_f) / self.dmax)

    @functools.cached_property
    def Dn(self) -> float:
        return float(np.sum((np.sqrt(self._i_f) / self.dmax) ** 2))

    def modulus(self, F, kind: str):
        """Loss of the far field *F* and what its gradient and the history need (no graph).

        Returns
        -------
        loss : 0-d tensor
        factor : real tensor, shape of F
        fscale : 0-d tensor or float
            ``fscale * factor = (dL/d|F|) / |F|``, zero at unconstrained pixels:
            ``dL/dF = fscale * factor * F`` (PyTorch's convention for a real function of a complex
            tensor); the scalar is kept apart so that the backward pass applies it with the
            incoming gradient, not in a pass of its own.
        info : dict of 0-d tensors
            ``chi`` and ``chi_free`` (None without free pixels): chi^2 of the far field
            scaled by the least-squares amplitude scale ``s``; ``s``; ``eta``: the factor
            that turns the gradient with respect to the object into ``x - P(x)``, P being
            the modulus "projection" the loss implies with its fitted scale (exactly the
            modulus projection for the amplitude loss); ``fix``: the factor that puts
            ``P(x)`` on the data's own scale.  Both are used by the feedback iterations.
        """
        tiny = torch.finfo(self.dtype).tiny
        a_all = (F * F.conj()).real.sqrt()                   # 3x faster than F.abs() on a CPU
        a = a_all if self.w is None else a_all * self.w
        af = a.reshape(-1)
        ad = torch.dot(af, self.d.reshape(-1))
        aa = torch.dot(af, af).clamp_min(tiny)
        s = ad / aa                                          # least-squares amplitude scale
        r = torch.addcmul(self.negd, a, s)                   # s |F| - d
        rf = r.reshape(-1)
        rr = torch.dot(rf, rf)
        chi = (rr + self.chi_extra) / self.chi_norm
        chi_free = None
        if self.free_idx is not None:
            e = s * a_all.reshape(-1)[self.free_idx] - self.d_free
            chi_free = (torch.dot(e, e) + (self.free_extra or 0.0)) / self.norm_free
        elif self.free_extra is not None:                    # every free pixel lies outside the crop
            chi_free = torch.full((), self.free_extra / self.norm_free, dtype=self.dtype, device=self.device)
        fscale = 1.0
        if kind == "amplitude":
            loss = rr / self.D
            factor = r.div_(a.clamp_min_(tiny))              # a is not needed any more
            fscale = s * (2.0 / self.D)
            eta = self.D / (2.0 * self.n * s * s).clamp_min(tiny)
            fix = s
        elif kind == "poisson":
            loss, factor, fscale, eta, fix = self._poisson(a, aa)
        elif kind == "max_normalised":
            loss, factor, eta, fix = self._max_normalised(a, af, a.clamp_min(tiny), tiny)
        else:
            raise CDIError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        return loss, factor, fscale, {"chi": chi, "chi_free": chi_free, "s": s, "eta": eta, "fix": fix}

    def _poisson(self, a, aa):
        """The Poisson deviance of the modulus *a* (``aa = sum a^2``): loss, factor, fscale, eta, fix."""
        s2 = self.D / aa                                     # maximum-likelihood intensity scale
        m = (a * a).mul_(s2).add_(self.eps)
        # deviance sum(m - I - I log(m/I)) / sum I, with sum m = sum I + n eps exactly
        loss = (self.eps * self.n - torch.dot(self.I.reshape(-1), torch.log(m).reshape(-1))
                + self.ilogi_sum) / self.D
        factor = torch.div(self.I, m).neg_().add_(1.0)
        if self.w is not None:
            factor.mul_(self.w)
        return loss, factor, s2 * (2.0 / self.D), aa / (2.0 * self.n), s2

    def _max_normalised(self, a, af, a_safe, tiny):
        """3D-CDI-NN's max-normalised L2 of the modulus *a*: loss, factor, eta, fix."""
        amax, kmax = torch.max(af, 0)
        amax = amax.clamp_min(tiny)
        r2 = (a / amax).sub_(self.dn)
        r2f = r2.reshape(-1)
        loss = torch.dot(r2f, r2f) / self.Dn
        # the maximum depends on the object too (3D-CDI-NN differentiates through it)
        corr = 2.0 * torch.dot(r2f, af) / (amax * amax * self.Dn)
        factor = r2.mul_(2.0 / (amax * self.Dn)).div_(a_safe)
        factor.reshape(-1).index_add_(0, kmax.reshape(1), (-corr / a_safe.reshape(-1)[kmax]).reshape(1))
        eta = amax * amax * self.Dn / (2.0 * self.n)
        return loss, factor, eta, self.dmax / amax

    def evaluate(self, p, kind: str, tv_weight: float = 0.0, box=None):
        """Loss of the parameters *p* (a graph tensor) and the detached ``info`` of :meth:`modulus`.

        *p* is the real view ``(*shape, 2)`` of the complex object in FFT order; *box*
        (from :func:`_tv_box`) is only needed for the total variation.
        """
        x = torch.view_as_complex(p)
        F = torch.fft.fftn(x)
        info = {}
        val = _ModulusLoss.apply(F, self, kind, info)
        if tv_weight:
            val = val + tv_weight * _tv(x, box if box is not None else _tv_box(x != 0, crop=False))
        return val, info

    @functools.cached_property
    def _fast_arrays(self):
        """The fast path's NumPy arrays: ``d`` with -1 at unconstrained pixels, the free pixels' flat
        indices (int64) and amplitudes (float32), empty without free pixels."""
        d = self.d.cpu().numpy().reshape(-1).copy()
        if self.w is not None:
            d[~self.w.cpu().numpy().reshape(-1).astype(bool)] = -1.0
        if self.free_idx is not None:
            fi = self.free_idx.cpu().numpy().astype(np.int64)
            dfree = self.d_free.cpu().numpy().astype(np.float32)
        else:
            fi, dfree = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        return d, fi, dfree

    def evaluate_fast(self, x, kind: str, gain: float, kernels):
        """What :meth:`evaluate` and its backward pass give, without autograd (CPU, float32, no TV).

        *x* is the complex64 object (FFT order, a view of the parameters); *kernels* is
        algorithms/ad/_kernels.py.  One forward FFT, one numba pass that fits the scale and turns
        ``F`` into ``gain * dL/dF`` in place (with the loss, chi^2 and chi2_free sums), and one
        unnormalised inverse FFT, the adjoint of the forward one: ``gain * dL/dx``.

        Returns
        -------
        loss : float
        info : dict of floats, as :meth:`modulus` (``chi_free`` None without free pixels)
        grad : complex64 tensor, the gradient of ``gain * loss`` with respect to *x*
        """
        F = torch.fft.fftn(x)
        Fr = _flat(F)
        d, fi, dfree = self._fast_arrays
        kscale = 2.0 * gain / self.D
        if kind not in FAST_LOSSES:
            raise CDIError(f"the fast path has no {kind!r} loss; it evaluates {', '.join(FAST_LOSSES)}")
        poisson = kind == "poisson"
        rr, lg, aa, s, s2, ff = kernels.evaluate(Fr, d, self._fast_intensity if poisson else d, fi, dfree, self.D,
                                                 self.eps if poisson else 0.0, kscale, poisson)
        if poisson:
            loss = (self.eps * self.n - lg + self.ilogi_sum) / self.D
            eta, fix = max(aa, _TINY32) / (2.0 * self.n), s2
        else:
            loss = rr / self.D
            eta, fix = self.D / max(2.0 * self.n * s * s, _TINY32), s
        chi_free = None
        if self.free_idx is not None:
            chi_free = (ff + (self.free_extra or 0.0)) / self.norm_free
        elif self.free_extra is not None:
            chi_free = self.free_extra / self.norm_free
        info = {"chi": (rr + self.chi_extra) / self.chi_norm, "chi_free": chi_free, "s": s, "eta": eta, "fix": fix}
        return loss, info, torch.fft.ifftn(F, norm="forward")

    @functools.cached_property
    def _fast_intensity(self):
        return self.I.cpu().numpy().reshape(-1)

    def scale(self, p, kernels=None):
        """Least-squares amplitude scale of the object *p* (no graph; a float with the fast path's
        *kernels*)."""
        if kernels is not None:
            F = torch.fft.fftn(torch.view_as_complex(p.detach()))
            return kernels.amplitude_scale(_flat(F), self._fast_arrays[0])
        with torch.no_grad():
            return self.modulus(torch.fft.fftn(torch.view_as_complex(p)), "amplitude")[3]["s"]


class _ModulusLoss(torch.autograd.Function):
    """The autograd node |F| -> loss: one fused forward and a closed-form vector-Jacobian product.

    Written as a custom node because composing abs, scale fit and loss from PyTorch's
    elementwise ops costs about twice the FFTs themselves on a CPU; its VJP is checked
    against finite differences in the tests.
    """

    @staticmethod
    def forward(ctx, F, model, kind, out):
        loss, factor, fscale, info = model.modulus(F.detach(), kind)
        out.update(info)
        # the amplitude loss *is* chi: hand out a detached alias, not the graph output
        out["chi"] = info["chi"].detach()
        ctx.save_for_backward(F, factor)
        ctx.fscale = fscale
        return loss

    @staticmethod
    def backward(ctx, g):
        F, factor = ctx.saved_tensors
        # on the real view: a complex tensor times a real one would first copy the real
        # one into a complex tensor (type promotion), a full extra pass over the array
        grad = torch.view_as_real(F) * (factor * (g * ctx.fscale)).unsqueeze(-1)
        return torch.view_as_complex(grad), None, None, None


def _model(problem, device, crop=None) -> _Model:
    """The float32 model of *problem* on *device* (cropped to *crop*), built once per problem."""
    def build():
        unc = problem.unconstrained
        return _Model(problem.intensity, unc if unc.any() else None, problem.free, device, torch.float32,
                      crop=crop)
    return problem_cache(problem, ("ad", str(device), None if crop is None else tuple(crop)), build)


# --------------------------------------------------------------------------------------------
# Total variation

def _tv_box(support, crop: bool = True):
    """Where the total variation is computed: the support's bounding box plus one pixel.

    Returns ``(index tensors per axis, number of support voxels)``.  The box wraps around
    the origin (the object is in FFT order); the support holds a few per cent of the
    array, so the box makes the term 10-30x cheaper than differencing the whole array.
    ``crop=False`` gives the whole array (same value, for the tests).
    """
    idx = []
    for k in range(support.ndim):
        n = support.shape[k]
        occ = support.any(dim=tuple(j for j in range(support.ndim) if j != k)).cpu().numpy()
        empty = ~occ
        # the longest circular run of empty rows is the gap the box need not cover
        best_len, best_end, run = 0, -1, 0
        for i in range(2 * n):
            run = run + 1 if empty[i % n] else 0
            if best_len < run <= n:
                best_len, best_end = run, i
        if not crop or best_len <= 2 or best_len >= n:
            idx.append(torch.arange(n, device=support.device))
        else:
            # from the last empty row before the object to the first one after it
            idx.append(torch.arange(best_end, best_end + n - best_len + 2, device=support.device) % n)
    return idx, max(1.0, float(support.sum()))


def _tv(x, box):
    """Isotropic total variation of x (zero outside the support) over *box*, relative to its rms.

    ``sum |grad x| / sqrt(n_support * sum |x|^2)``: blind to the overall scale like the data
    losses (otherwise the fitted scale would let the optimiser shrink the object to nothing),
    smoothed by a tiny epsilon so that it is differentiable where the gradient vanishes.
    """
    idx, n_s = box
    full = [len(i) == x.shape[k] for k, i in enumerate(idx)]
    for k in range(3):
        if not full[k]:
            x = x.index_select(k, idx[k])
    xr = torch.view_as_real(x)
    e2 = (xr * xr).sum()
    g2 = 0
    for k in range(3):
        if full[k]:              # the object may wrap around this axis: circular difference
            dx = torch.roll(xr, -1, dims=k) - xr
            g2 = g2 + (dx * dx).sum(-1)
        else:                    # the box has an empty margin: plain forward difference
            dx = torch.diff(xr, dim=k)
            pad = [0] * 6
            pad[2 * (2 - k) + 1] = 1                     # F.pad counts dimensions from the last
            g2 = g2 + torch.nn.functional.pad((dx * dx).sum(-1), pad)
    eps2 = 1e-6 * e2 / n_s                               # scales with x: the term stays scale-blind
    tv = (torch.sqrt(g2 + eps2) - torch.sqrt(eps2)).sum()
    return tv / torch.sqrt(n_s * e2)


# --------------------------------------------------------------------------------------------
# Shrink-wrap on the optimisation device

_gauss_cache: dict = {}


def _gaussian(shape, sigma, device, full: bool = False):
    """exp(-2 pi^2 sigma^2 f^2) on the rfft grid of *shape* (the whole FFT grid if *full*; float32, on
    *device*), cached."""
    key = (tuple(shape), float(sigma), str(device), full)
    k = _gauss_cache.get(key)
    if k is None:
        c = -2.0 * math.pi ** 2 * sigma ** 2
        last = torch.fft.fftfreq if full else torch.fft.rfftfreq
        f = [torch.fft.fftfreq(n, device=device) for n in shape[:-1]] + [last(shape[-1], device=device)]
        k = (torch.exp(c * f[0] ** 2)[:, None, None] * torch.exp(c * f[1] ** 2)[None, :, None]
             * torch.exp(c * f[2] ** 2)[None, None, :]).to(torch.float32)
        if len(_gauss_cache) > 16:
            _gauss_cache.clear()
        _gauss_cache[key] = k
    return k


def _shrink_wrap(x, sigma, threshold, kernels=None):
    """Support from the Gaussian-smoothed modulus of x (torch, any device), Fourier-space smoothing.

    With the fast path's *kernels* (CPU) the modulus, the product with the Gaussian and the threshold
    are numba passes around the same two FFTs.
    """
    if kernels is not None:
        return _shrink_wrap_fast(x, sigma, threshold, kernels)
    a = (x * x.conj()).real.sqrt()                           # |x|, 2x faster than x.abs() on a CPU
    if sigma > 0:
        if a.device.type == "cpu":
            # torch's real inverse FFT is ~4x slower than its complex one on a CPU: smooth |x| + 0i
            z = torch.fft.fftn(a.to(torch.complex64))
            torch.view_as_real(z).mul_(_gaussian(a.shape, sigma, a.device, full=True).unsqueeze(-1))
            a = torch.fft.ifftn(z).real
        else:
            a = torch.fft.irfftn(torch.fft.rfftn(a) * _gaussian(a.shape, sigma, a.device), s=a.shape)
    return a > threshold * a.max()


def _flat(t):
    """The float32 (real view of a complex) or bool CPU tensor *t* as a flat NumPy array, no copy."""
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.detach().numpy().reshape(-1)


def _shrink_wrap_fast(x, sigma, threshold, kernels):
    """Shrink-wrap on the CPU fast path: the framework's fused passes (compute.kernels: |x| into a complex
    buffer, the Gaussian's product, the threshold) on torch's threads, around torch.fft."""
    work = ck.KernelWork(np, x.shape, feedback=False, threads=torch.get_num_threads(), impl="numba")
    z = torch.empty(x.shape, dtype=torch.complex64)
    ck.abs_into(work, z.numpy(), x.detach().contiguous().numpy())
    if sigma > 0:
        z = torch.fft.fftn(z)
        ck.scale_by(work, z.numpy(), _gaussian(x.shape, sigma, x.device, full=True).numpy())
        z = torch.fft.ifftn(z)
    return torch.from_numpy(ck.above_fraction(work, z.numpy(), threshold))


# --------------------------------------------------------------------------------------------
# The coarse grid and Fourier interpolation between grids

def _coarse_shape(shape, factor: float) -> tuple:
    """The coarse stage's grid: every axis divided by *factor*, rounded to an even size (at least 8)."""
    return tuple(min(n, max(8, 2 * int(round(n / (2.0 * factor))))) for n in shape)


def _resample(x, shape):
    """Fourier interpolation of a complex tensor in FFT order onto *shape* (same field of view).

    The spectrum is cropped to, or zero-padded from, the frequencies both grids hold; values keep
    their scale (so a constant stays that constant).  The inverse of the data crop of a coarse
    :class:`_Model`: the far field of ``_resample(x_coarse, full)`` is that of ``x_coarse``
    inside the crop and zero outside.
    """
    X = torch.fft.fftn(x)
    for k, m in enumerate(shape):
        n = X.shape[k]
        if m < n:
            lo, hi = (m + 1) // 2, m // 2                    # non-negative / negative frequencies kept
            idx = torch.cat([torch.arange(0, lo), torch.arange(n - hi, n)]).to(X.device)
            X = X.index_select(k, idx)
    if tuple(X.shape) != tuple(shape):                       # zero-padded along the axes that grow: one array
        Y = X.new_zeros(shape)
        halves = [((slice(0, (n + 1) // 2),) * 2, (slice(m - n // 2, m), slice(n - n // 2, n)))
                  for n, m in zip(X.shape, shape)]
        for part in itertools.product(*halves):
            Y[tuple(p[0] for p in part)] = X[tuple(p[1] for p in part)]
        X = Y
    return torch.fft.ifftn(X) * (math.prod(shape) / math.prod(x.shape))


def _resample_support(support, shape):
    """A bool support carried onto another grid: its Fourier-interpolated indicator above one half."""
    return _resample(support.to(torch.complex64), shape).real > 0.5


# --------------------------------------------------------------------------------------------
# Moving arrays between the framework's backend (NumPy or CuPy) and torch.

def _fftshift(t, inverse: bool = False):
    """torch.fft.(i)fftshift of *t*; on the CPU by NumPy, twice as fast for a 64^3 array (the same values)."""
    if t.device.type != "cpu":
        return torch.fft.ifftshift(t) if inverse else torch.fft.fftshift(t)
    a = t.numpy()
    return torch.from_numpy(np.fft.ifftshift(a) if inverse else np.fft.fftshift(a))


def _to_torch(a, backend, device):
    if backend.name == "cupy":
        if device.type == "cuda":
            return torch.from_dlpack(a)          # zero-copy on the GPU
        return torch.from_numpy(backend.to_numpy(a))
    return torch.from_numpy(np.array(a)).to(device)   # np.array: a private, writable copy


def _from_torch(t, backend):
    if backend.name == "cupy":
        if t.is_cuda:
            return backend.asarray(t)              # zero-copy through DLPack
        return backend.asarray(t.numpy())
    return t.cpu().numpy()
