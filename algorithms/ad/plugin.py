"""AD: refine the object by reverse-mode automatic differentiation (PyTorch), as 3D-CDI-NN does.

The object is a set of parameters and a loss between the modelled and the
measured diffraction is minimised by gradient descent, the gradient coming from
PyTorch's autograd through the FFT.  The step polishes the output of any other
step (a network's prediction, HIO, ER) and also runs alone from a random start.

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

The modulus-and-loss node is one custom autograd function (fused forward,
closed-form vector-Jacobian product, checked against finite differences in the
tests): composed from PyTorch's elementwise operations it cost more than the
two FFTs of an iteration on a CPU.

Optimisers: Adam (default; one evaluation per iteration; optional cosine decay
of the learning rate; the refiner's own update, see :class:`_Adam`), L-BFGS
with a strong-Wolfe line search (one *iteration* is one evaluation of the loss
and its gradient, line-search trials included, so that an iteration costs the
same FFT work for every optimiser and for ER/HIO), and ``gd``: gradient descent
in the loss's own step ``eta`` (below) with Nesterov momentum, which for the
amplitude loss, learning rate 1 and no momentum is exactly ER.  An optional isotropic total variation, divided by the object's
rms (so that the fitted scale cannot shrink it away) and computed on the
support's bounding box only, is added with weight ``tv_weight``.

Random starts and feedback
--------------------------
Pure gradient descent (Adam or L-BFGS) from a random start stagnates on many
crystals in a twin-mixed minimum: parts of the object converge to the crystal
and parts to its twin ``conj(rho(-r))``, whose diffraction is identical, and
the domain walls between them are stable.  Measured on simulated 64^3
crystals: error against truth 0.07-0.29, under 0.15 on 4 of 9 crystals with
the best settings found (Adam, learning rate 0.1, 1000 iterations) and on 2 of
12 with those of configs/ad_only.yaml; no loss, learning rate, optimiser,
Adam betas, total variation, support schedule, smooth start, resolution
continuation or half-support detwinning changed that.  ``feedback_iterations`` > 0 runs that
many iterations of HIO-style feedback driven by the autograd gradient first:
with ``u = eta * dL/dx = x - P(x)`` (``P`` the modulus "projection" the loss
implies, put on the data's fixed scale), ``x <- P(x)`` inside the support and
``x <- x - beta P(x)`` outside.  For the amplitude loss this is exactly
Fienup's HIO; for the others it is HIO with that loss's projection.  Then the
optimiser polishes.  With 400 such iterations and 200 of Adam
(configs/ad_only.yaml) AD alone reached error 0.018-0.060 on 11 of 12
simulated crystals (median 0.033, against 0.061 for the 620-iteration ER/HIO
recipe); the twelfth stagnated at 0.25, as the ER/HIO recipe does there from
4 of 5 random starts.

Coarse to fine
--------------
``coarse_iterations`` > 0 runs the first iterations on the central
1/``coarse_factor`` of the pattern per axis (the low spatial frequencies), with
the object on a grid of the same field of view and ``coarse_factor`` times
larger voxels, then Fourier-interpolates it onto the full grid (support rebuilt
by shrink-wrap) for the rest.  At 64^3 a coarse iteration costs about a fifth
of a full one here.  The recorded chi^2 stays that of the whole pattern (see
:class:`_Model`), and the coarse records carry ``grid``.

Support and stopping
--------------------
Shrink-wrap runs outside the autograd graph every ``shrink_wrap_period``
iterations (Gaussian smoothing in Fourier space with one real FFT pair, on the
optimisation device) and, as in 3D-CDI-NN, only when the loss has fallen by
``shrink_wrap_improvement`` (10 %) since the last update.  The run stops early
when the loss has not improved by ``plateau_tolerance`` (relative) for
``plateau_patience`` iterations of the optimiser.

History: one record per iteration with ``step``, ``algorithm`` ("ad"),
``iteration``, ``chi2`` (the iterative steps' definition: sum over constrained
pixels of ``(|F| - sqrt(I))^2 / sum I`` with F the unnormalised fftn of the
iterate -- here the iterate scaled by the least-squares scale, i.e. the object
the step would hand on if it stopped there -- before that iteration's update),
``loss``, ``support_fraction`` when the support changed and ``chi2_free`` when
free pixels are used.  Per-iteration values go into preallocated tensors on the
device and are read back at the end; the host synchronises only every few
iterations (progress, plateau test, shrink-wrap).

Devices: ``cpu`` or ``cuda`` (``auto``: CUDA when torch sees a device).  A
State held by the CuPy backend reaches torch through DLPack without a host
copy and goes back the same way; the data are moved to the device once per
problem and cached.

This module reaches the framework only through its public API, exactly as a
third-party plugin would.  torch is imported when the step runs, not when the
plugin registers, so listing algorithms stays fast.
"""

from __future__ import annotations

import importlib.util
import math
import weakref

import numpy as np

from cdi_plugins import AlgorithmSpec, CDIError, Param, State, hookimpl
from cdi_plugins.compute.support import autocorrelation_support, check_support_fraction

NAME = "ad"
LOSSES = ("amplitude", "poisson", "max_normalised")
OPTIMIZERS = ("adam", "lbfgs", "gd")

# Default learning rates, found by experiment on simulated 64^3 crystals: Adam's step is
# dimensionless (the object has rms 1 in the support), 0.02 polishes HIO or a network's guess
# in 100-300 iterations for every loss; L-BFGS takes the step its line search accepts.
DEFAULT_LR = {"adam": 0.02, "lbfgs": 1.0, "gd": 1.0}

PARAMS = [
    Param("iterations", "int", 500,
          "maximum number of iterations (with lbfgs: evaluations of loss and gradient)", low=1),
    Param("loss", "str", "amplitude",
          "amplitude: Gaussian on sqrt(I); poisson: Poisson deviance; max_normalised: 3D-CDI-NN's "
          "max-normalised amplitude L2", choices=LOSSES),
    Param("optimizer", "str", "adam",
          "adam, lbfgs (strong-Wolfe line search) or gd (gradient descent in the loss's own step, with "
          "Nesterov momentum)", choices=OPTIMIZERS),
    Param("learning_rate", "float", None,
          "step size (null: 0.02 for adam, 1 for lbfgs and gd); with adam about the relative change "
          "of the object per iteration; with gd in units of the loss's own step (1: ER's)", low=0, low_open=True, nullable=True),
    Param("momentum", "float", 0.5, "gd: Nesterov momentum (0: plain steps; with learning_rate 1, ER)",
          low=0, high=1, high_open=True),
    Param("learning_rate_final", "float", None,
          "learning rate at the last iteration, reached by cosine decay (null: constant)",
          low=0, nullable=True),
    Param("tv_weight", "float", 0.0,
          "weight of the total-variation regulariser (in units of the loss; 0: off)", low=0),
    Param("shrink_wrap_period", "int", 50, "update the support every N iterations (0: never)", low=0),
    Param("shrink_wrap_threshold", "float", 0.15,
          "support = smoothed |obj| above this fraction of its maximum", low=0, high=1,
          low_open=True, high_open=True),
    Param("shrink_wrap_sigma", "float", 1.0, "Gaussian smoothing width (pixels) at the first iteration", low=0),
    Param("shrink_wrap_sigma_final", "float", None,
          "smoothing width at the last iteration, reached linearly (null: no decay)", low=0, nullable=True),
    Param("shrink_wrap_only_on_improvement", "bool", True,
          "update the support only when the loss fell by shrink_wrap_improvement since the last update"),
    Param("shrink_wrap_improvement", "float", 0.1,
          "relative fall of the loss required before the next support update", low=0, high=1, high_open=True),
    Param("feedback_iterations", "int", 0,
          "first N iterations use HIO-style feedback driven by the loss gradient instead of the "
          "optimizer (Fienup's HIO for the amplitude loss); 0: pure gradient descent", low=0),
    Param("feedback_beta", "float", 0.9, "feedback strength outside the support in those iterations",
          low=0, high=1, low_open=True),
    Param("coarse_iterations", "int", 0,
          "first N iterations on the central 1/coarse_factor of the pattern (the object on a grid with "
          "coarse_factor times larger voxels), then Fourier-interpolated to the full grid; 0: off", low=0),
    Param("coarse_factor", "float", 2.0, "how much coarser the grid of the coarse stage is, per axis",
          low=1.0, high=8.0),
    Param("plateau_patience", "int", 100,
          "stop when the loss has not improved for this many iterations (0: never stop early)", low=0),
    Param("plateau_tolerance", "float", 1e-3,
          "relative fall of the loss that counts as an improvement", low=0, high=1, high_open=True),
    Param("device", "str", "auto", "auto (CUDA when torch sees one), cpu or cuda", choices=("auto", "cpu", "cuda")),
    Param("initial_support", "str", "auto",
          "auto: from the incoming State if any, else autocorrelation; or autocorrelation, state",
          choices=("auto", "autocorrelation", "state")),
    Param("autocorrelation_threshold", "float", 0.1,
          "threshold (fraction of max) of the smoothed autocorrelation for the initial support",
          low=0, high=1, low_open=True, high_open=True),
    Param("support_min_fraction", "float", 1e-4,
          "stop with an error if the support shrinks below this fraction of the array", low=0, high=1),
    Param("support_max_fraction", "float", 0.7,
          "stop with an error if the support grows above this fraction of the array", low=0, high=1,
          low_open=True),
    Param("threads", "int", None,
          "torch CPU threads (null: as many as the recipe's FFTs use for this array size)",
          low=1, nullable=True),
]

SUMMARY = "Automatic-differentiation refinement (PyTorch): fit the object to the data by Adam, L-BFGS or gd"


def _torch_missing() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed; pip install torch"
    return None


def _check(params: dict) -> None:
    if params["support_min_fraction"] >= params["support_max_fraction"]:
        raise CDIError("support_min_fraction must be below support_max_fraction")
    if params["device"] == "cuda":
        _device("cuda")  # fail at validation, before anything is computed


def _device(name: str):
    import torch
    if name == "cpu":
        return torch.device("cpu")
    ok = torch.cuda.is_available()
    if name == "cuda" and not ok:
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "torch sees no working CUDA device")
        raise CDIError(f"device 'cuda' asked for but {why} (torch {torch.__version__}); "
                       "use device: auto or cpu")
    return torch.device("cuda") if ok else torch.device("cpu")


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
        import torch
        self.torch = torch
        self.chi_extra = self.chi_norm = self.free_extra = None
        if crop is not None and tuple(crop) != tuple(intensity.shape):
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
            intensity = intensity[sl]
            unconstrained = None if unconstrained is None else unconstrained[sl]
            free = None if free is None else free[sl]
        self.device, self.dtype = device, dtype
        self.shape = tuple(intensity.shape)
        n = intensity.size
        i_f = np.maximum(np.fft.ifftshift(np.asarray(intensity, dtype=np.float64)), 0.0)
        w = None
        if unconstrained is not None and np.any(unconstrained):
            w = ~np.fft.ifftshift(np.asarray(unconstrained, dtype=bool))
            i_f = np.where(w, i_f, 0.0)
        d = np.sqrt(i_f)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
        self.w = None if w is None else t(w)
        self.I = t(i_f)
        self.d = t(d)
        self.negd = t(-d)
        self.D = float(np.sum(i_f))                          # sum d^2 = sum I over constrained pixels
        if not self.D > 0:
            raise CDIError("the measured intensity is zero at every constrained pixel")
        logi = np.log(np.where(i_f > 0, i_f, 1.0))
        self.ilogi_sum = float(np.sum(i_f * logi))           # sum I log I (0 log 0 = 0)
        # floor of the modelled intensity in the Poisson loss: keeps log and I/m finite where
        # the model is dark, far below one photon for counting data
        self.eps = 1e-6 * self.D / max(1, int(np.count_nonzero(w)) if w is not None else n)
        self.n = n
        dmax = self.dmax = float(d.max())
        self.dn = t(d / dmax)
        self.Dn = float(np.sum((d / dmax) ** 2))
        self.free_idx = None
        if free is not None and np.any(free):
            fi = np.flatnonzero(np.fft.ifftshift(np.asarray(free, dtype=bool)))
            i_raw = np.fft.ifftshift(np.asarray(intensity, dtype=np.float64)).ravel()[fi]
            dfree = np.sqrt(np.maximum(i_raw, 0.0))
            self.free_idx = torch.from_numpy(fi).to(device)
            self.d_free = t(dfree)
            self.norm_free = float(np.sum(dfree ** 2)) or 1.0
        if self.chi_norm is None:                            # the whole pattern
            self.chi_norm, self.chi_extra = self.D, 0.0
        if self.free_extra is not None:                      # free pixels outside the crop count in full
            self.norm_free = self.free_norm_full

    def modulus(self, F, kind: str):
        """Loss of the far field *F* and what its gradient and the history need (no graph).

        Returns
        -------
        loss : 0-d tensor
        factor : real tensor, shape of F
            ``(dL/d|F|) / |F|``, zero at unconstrained pixels: ``dL/dF = factor * F``
            (PyTorch's convention for a real function of a complex tensor).
        info : dict of 0-d tensors
            ``chi`` and ``chi_free`` (None without free pixels): chi^2 of the far field
            scaled by the least-squares amplitude scale ``s``; ``s``; ``eta``: the factor
            that turns the gradient with respect to the object into ``x - P(x)``, P being
            the modulus "projection" the loss implies with its fitted scale (exactly the
            modulus projection for the amplitude loss); ``fix``: the factor that puts
            ``P(x)`` on the data's own scale.  Both are used by the feedback iterations.
        """
        torch = self.torch
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
        a_safe = a.clamp_min(tiny)
        if kind == "amplitude":
            loss = rr / self.D
            factor = r.div_(a_safe).mul_(2.0 * s / self.D)
            eta = self.D / (2.0 * self.n * s * s).clamp_min(tiny)
            fix = s
        elif kind == "poisson":
            s2 = self.D / aa                                 # maximum-likelihood intensity scale
            m = (a * a).mul_(s2).add_(self.eps)
            # deviance sum(m - I - I log(m/I)) / sum I, with sum m = sum I + n eps exactly
            loss = (self.eps * self.n - torch.dot(self.I.reshape(-1), torch.log(m).reshape(-1))
                    + self.ilogi_sum) / self.D
            factor = torch.div(self.I, m).neg_().add_(1.0).mul_(2.0 * s2 / self.D)
            if self.w is not None:
                factor.mul_(self.w)
            eta = aa / (2.0 * self.n)
            fix = s2
        elif kind == "max_normalised":
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
            fix = self.dmax / amax
        else:
            raise CDIError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
        return loss, factor, {"chi": chi, "chi_free": chi_free, "s": s, "eta": eta, "fix": fix}

    def evaluate(self, p, kind: str, tv_weight: float = 0.0, box=None):
        """Loss of the parameters *p* (a graph tensor) and the detached ``info`` of :meth:`modulus`.

        *p* is the real view ``(*shape, 2)`` of the complex object in FFT order; *box*
        (from :func:`_tv_box`) is only needed for the total variation.
        """
        torch = self.torch
        x = torch.view_as_complex(p)
        F = torch.fft.fftn(x)
        info = {}
        val = _modulus_loss().apply(F, self, kind, info)
        if tv_weight:
            val = val + tv_weight * _tv(x, box if box is not None else _tv_box(x != 0, crop=False))
        return val, info

    def scale(self, p):
        """Least-squares amplitude scale of the object *p* (no graph)."""
        torch = self.torch
        with torch.no_grad():
            return self.modulus(torch.fft.fftn(torch.view_as_complex(p)), "amplitude")[2]["s"]


_MODULUS_LOSS = None


def _modulus_loss():
    """The autograd node |F| -> loss: one fused forward and a closed-form vector-Jacobian product.

    Written as a custom node because composing abs, scale fit and loss from PyTorch's
    elementwise ops costs about twice the FFTs themselves on a CPU; its VJP is checked
    against finite differences in the tests.
    """
    global _MODULUS_LOSS
    if _MODULUS_LOSS is None:
        import torch

        class ModulusLoss(torch.autograd.Function):
            @staticmethod
            def forward(ctx, F, model, kind, out):
                loss, factor, info = model.modulus(F.detach(), kind)
                out.update(info)
                # the amplitude loss *is* chi: hand out a detached alias, not the graph output
                out["chi"] = info["chi"].detach()
                ctx.save_for_backward(F, factor)
                return loss

            @staticmethod
            def backward(ctx, g):
                F, factor = ctx.saved_tensors
                # on the real view: a complex tensor times a real one would first copy the real
                # one into a complex tensor (type promotion), a full extra pass over the array
                grad = torch.view_as_real(F) * (factor * g).unsqueeze(-1)
                return torch.view_as_complex(grad), None, None, None

        _MODULUS_LOSS = ModulusLoss
    return _MODULUS_LOSS


def _tv_box(support, crop: bool = True):
    """Where the total variation is computed: the support's bounding box plus one pixel.

    Returns ``(index tensors per axis, number of support voxels)``.  The box wraps around
    the origin (the object is in FFT order); the support holds a few per cent of the
    array, so the box makes the term 10-30x cheaper than differencing the whole array.
    ``crop=False`` gives the whole array (same value, for the tests).
    """
    import torch
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
    import torch
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


_gauss_cache: dict = {}


def _gaussian(shape, sigma, device):
    import torch
    key = (tuple(shape), float(sigma), str(device))
    k = _gauss_cache.get(key)
    if k is None:
        c = -2.0 * math.pi ** 2 * sigma ** 2
        f = [torch.fft.fftfreq(n, device=device) for n in shape[:-1]] + [torch.fft.rfftfreq(shape[-1], device=device)]
        k = (torch.exp(c * f[0] ** 2)[:, None, None] * torch.exp(c * f[1] ** 2)[None, :, None]
             * torch.exp(c * f[2] ** 2)[None, None, :]).to(torch.float32)
        if len(_gauss_cache) > 16:
            _gauss_cache.clear()
        _gauss_cache[key] = k
    return k


def _shrink_wrap(x, sigma, threshold):
    """Support from the Gaussian-smoothed modulus of x (torch, any device), Fourier-space smoothing."""
    import torch
    a = x.abs()
    if sigma > 0:
        a = torch.fft.irfftn(torch.fft.rfftn(a) * _gaussian(a.shape, sigma, a.device), s=a.shape)
    return a > threshold * a.max()


# --------------------------------------------------------------------------------------------
# Moving arrays between the framework's backend (NumPy or CuPy) and torch.

def _to_torch(a, backend, device):
    import torch
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


_data_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _model(problem, device, crop=None) -> _Model:
    import torch
    per = _data_cache.setdefault(problem, {})
    key = (str(device), None if crop is None else tuple(crop))
    m = per.get(key)
    if m is None:
        unc = problem.unconstrained
        m = per[key] = _Model(problem.intensity, unc if unc.any() else None, problem.free, device, torch.float32,
                              crop=crop)
    return m


def _initial(problem, state, params, ctx, device):
    """Complex object (normalised to rms 1 in the support) and bool support, FFT order, on *device*."""
    import torch
    be = ctx.backend
    how = params["initial_support"]
    if how == "auto":
        how = "state" if state is not None else "autocorrelation"
    where = f"step {ctx.step} ({NAME})"
    if how == "state":
        if state is None:
            raise CDIError("initial_support: state needs a previous step that produced a support", where)
        sup = _to_torch(be.asarray(state.support).astype(be.xp.float32), be, device)
        support = torch.fft.ifftshift(sup > 0.5)
    else:
        i_f = be.asarray(np.fft.ifftshift(problem.intensity))
        ac = autocorrelation_support(be, i_f, params["autocorrelation_threshold"])
        support = _to_torch(ac.astype(be.xp.float32), be, device) > 0.5
    if not bool(support.any()):
        raise CDIError("the initial support is empty", where)
    if state is not None:
        x = torch.fft.ifftshift(_to_torch(be.asarray(state.obj).astype(be.xp.complex64), be, device))
    else:
        # random start, drawn on the host exactly as the iterative steps draw theirs, so that a
        # seed gives the same start on any backend and device
        amp = ctx.rng.random(problem.shape, dtype=np.float32)
        phase = ctx.rng.uniform(-np.pi, np.pi, problem.shape).astype(np.float32)
        x = torch.from_numpy((amp * np.exp(1j * phase)).astype(np.complex64)).to(device)
    x = x.to(torch.complex64) * support
    ms = float((x.real.square() + x.imag.square()).sum()) / float(support.sum())
    if not (ms > 0 and math.isfinite(ms)):
        raise CDIError("the incoming object is zero (or not finite) everywhere inside the support", where)
    return x / math.sqrt(ms), support


def _guard(frac: float, params: dict, ctx, it: int) -> None:
    where = f"step {ctx.step} ({NAME}), iteration {it}"
    if it == 0 and not params["support_min_fraction"] <= frac <= params["support_max_fraction"]:
        raise CDIError(f"the initial support covers {frac:.2e} of the array, outside [support_min_fraction, "
                       f"support_max_fraction] = [{params['support_min_fraction']:g}, "
                       f"{params['support_max_fraction']:g}]; change autocorrelation_threshold or the "
                       "incoming support", f"step {ctx.step} ({NAME})")
    check_support_fraction(frac, params["support_min_fraction"], params["support_max_fraction"], where)


def _lr_at(params, lr0, it, n):
    lr1 = params["learning_rate_final"]
    if lr1 is None:
        return lr0
    return lr1 + 0.5 * (lr0 - lr1) * (1.0 + math.cos(math.pi * it / max(1, n - 1)))


# Adam's eps, in the units of the gradient of loss x support size (median |gradient| per voxel:
# ~0.1 from a random start, ~1e-4 at the noise floor of 1e8-count data, ~1e-5 at an exact
# solution): gradients well below it count as zero, so an object already at the minimum is not
# kicked by the normalised steps Adam takes from noise-level gradients (chi^2 from the noise-free
# truth rose 300x within the first iterations with eps = 1e-8, 3x with 1e-3), while convergence
# from random starts, HIO or a network's guess measured the same.
ADAM_EPS = 1e-3


class _Adam:
    """Adam (Kingma and Ba, 2015) on one parameter tensor, the update of ``torch.optim.Adam``.

    Not ``torch.optim``: the first ``step`` of any torch optimizer imports ``torch._dynamo``,
    which took 2-4 s here, longer than a whole NN -> AD pipeline at 64^3.  The update uses
    torch's fused Adam kernel when this build has it (one pass over the parameters) and plain
    in-place tensor operations otherwise; a test checks both against ``torch.optim.Adam``.
    ``param_groups[0]["lr"]`` and ``state[...]["exp_avg"]`` behave as in torch's optimizers.
    """

    def __init__(self, torch, p, lr, betas=(0.9, 0.999), eps=ADAM_EPS, fused=True):
        self.torch, self.p = torch, p
        self.b1, self.b2 = betas
        self.eps = eps
        self.param_groups = [{"lr": lr}]
        self.m = torch.zeros_like(p, memory_format=torch.contiguous_format)
        self.v = torch.zeros_like(self.m)
        self.state = {0: {"exp_avg": self.m, "exp_avg_sq": self.v}}
        self.k = 0
        self.fused = fused and hasattr(torch, "_fused_adam_") and p.is_contiguous()
        self._steps = torch.zeros((), dtype=torch.float32, device=p.device)

    def step(self):
        torch = self.torch
        lr, g = float(self.param_groups[0]["lr"]), self.p.grad
        self.k += 1
        with torch.no_grad():
            if self.fused:
                try:
                    self._steps.fill_(self.k)
                    torch._fused_adam_([self.p], [g], [self.m], [self.v], [], [self._steps], lr=lr,
                                       beta1=self.b1, beta2=self.b2, weight_decay=0.0, eps=self.eps,
                                       amsgrad=False, maximize=False)
                    return
                except (RuntimeError, TypeError):      # a build or device without the fused kernel
                    self.fused = False
            self.m.lerp_(g, 1.0 - self.b1)
            self.v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            denom = self.v.sqrt().div_(math.sqrt(1.0 - self.b2 ** self.k)).add_(self.eps)
            self.p.addcdiv_(self.m, denom, value=-lr / (1.0 - self.b1 ** self.k))


class _GD:
    """Gradient descent in the loss's own step, with Nesterov momentum.

    The step ``eta`` that turns the gradient into ``x - P(x)`` (the modulus "projection" the loss
    implies) is known at every evaluation, so ``learning_rate`` 1 without momentum is exactly
    error reduction (ER) for the amplitude loss; momentum accelerates it.
    """

    def __init__(self, torch, p, lr, momentum):
        self.torch, self.p, self.mu = torch, p, momentum
        self.param_groups = [{"lr": lr}]
        self.v = torch.zeros_like(p)
        self.state = {0: {"exp_avg": self.v}}      # masked with the support like Adam's

    def step(self, scale):
        with self.torch.no_grad():
            g = self.p.grad.mul_(scale * -float(self.param_groups[0]["lr"]))
            self.v.mul_(self.mu).add_(g)
            self.p.add_(g).add_(self.v, alpha=self.mu)


def run(problem, state, params, ctx):
    import torch
    device = _device(params["device"])
    threads_before = torch.get_num_threads()
    threads = params["threads"]
    if threads is None:
        # as the framework's FFTs do: one thread for small arrays unless the recipe says
        # otherwise (torch's OpenMP threads on a busy 2-core machine made a 64^3 FFT pair
        # 15x slower than one thread)
        be = ctx.backend
        threads = (be.threads_for(problem.intensity.size) if hasattr(be, "threads_for")
                   else getattr(be, "threads", None))
    if threads and device.type == "cpu" and threads != threads_before:
        torch.set_num_threads(int(threads))
    try:
        return _run(torch, problem, state, params, ctx, device)
    finally:
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)


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
    import torch
    X = torch.fft.fftn(x)
    for k, m in enumerate(shape):
        n = X.shape[k]
        if m == n:
            continue
        lo, hi = (min(n, m) + 1) // 2, min(n, m) // 2       # non-negative / negative frequencies kept
        if m < n:
            idx = torch.cat([torch.arange(0, lo), torch.arange(n - hi, n)]).to(X.device)
            X = X.index_select(k, idx)
        else:
            size = list(X.shape)
            size[k] = m
            Y = X.new_zeros(size)
            Y.narrow(k, 0, lo).copy_(X.narrow(k, 0, lo))
            Y.narrow(k, m - hi, hi).copy_(X.narrow(k, n - hi, hi))
            X = Y
    return torch.fft.ifftn(X) * (math.prod(shape) / math.prod(x.shape))


def _resample_support(support, shape):
    """A bool support carried onto another grid: its Fourier-interpolated indicator above one half."""
    import torch
    return _resample(support.to(torch.complex64), shape).real > 0.5


def _run(torch, problem, state, params, ctx, device):
    be = ctx.backend
    full_model = _model(problem, device)
    x0, support = _initial(problem, state, params, ctx, device)
    frac = float(support.sum()) / support.numel()
    _guard(frac, params, ctx, 0)
    n = params["iterations"]
    loss_name = params["loss"]
    opt_name = params["optimizer"]
    lr0 = params["learning_rate"] or DEFAULT_LR[opt_name]
    tvw = params["tv_weight"]
    period = params["shrink_wrap_period"]
    on_improve = params["shrink_wrap_only_on_improvement"]
    improve = params["shrink_wrap_improvement"]
    patience = params["plateau_patience"]
    tol = params["plateau_tolerance"]
    n_fb = min(params["feedback_iterations"], n)
    beta = params["feedback_beta"]
    full_shape = tuple(problem.shape)
    coarse = _coarse_shape(full_shape, params["coarse_factor"])
    n_coarse = min(params["coarse_iterations"], n) if coarse != full_shape else 0
    model = full_model
    if n_coarse:
        # the coarse stage: the central part of the pattern, the object on a grid with the same
        # field of view and correspondingly larger voxels (an FFT 2^3-3^3 times cheaper)
        model = _model(problem, device, coarse)
        x0 = _resample(x0, coarse)
        support = _resample_support(support, coarse)
        if not bool(support.any()):
            raise CDIError(f"the support vanishes on the coarse {'x'.join(map(str, coarse))} grid; lower "
                           "coarse_factor or set coarse_iterations: 0", f"step {ctx.step} ({NAME})")
        x0 = x0 * support                # start_phase below puts it back on the scale it needs

    def sigma_at(it):
        """Shrink-wrap smoothing at iteration *it*, in pixels of the grid in use."""
        sig0, sig1 = params["shrink_wrap_sigma"], params["shrink_wrap_sigma_final"]
        sigma = sig0 if sig1 is None else sig0 + (sig1 - sig0) * (it / max(1, n - 1))
        if model is not full_model:
            sigma *= math.prod(c / f for c, f in zip(coarse, full_shape)) ** (1 / 3)
        return sigma

    p = torch.view_as_real(x0).clone().contiguous().requires_grad_(True)
    del x0
    sf = support.to(torch.float32)
    sf3 = sf.unsqueeze(-1)          # the support on the real view (*shape, 2) of the parameters
    box = _tv_box(support) if tvw else None
    # differentiate the loss times the support size: the normalised loss gives gradients of
    # order 1/n per voxel, below the absolute thresholds of L-BFGS (curvature pairs with
    # y.s < 1e-10 are dropped) and near Adam's eps; this makes them of order 1
    gain = float(support.sum())
    gain_t = torch.tensor(gain, dtype=torch.float32, device=device)     # d(loss x gain)/d(loss)
    chi = torch.zeros(n, dtype=torch.float32, device=device)
    losses = torch.zeros(n, dtype=torch.float32, device=device)
    chi_free = torch.zeros(n, dtype=torch.float32, device=device) if full_model.free_idx is not None else None
    support_records = {}
    report_every = max(1, n // 100)
    check_every = max(1, min(10, patience)) if patience else 0
    best, best_it = math.inf, 0
    ref_loss = None          # loss at the last support update (for shrink_wrap_only_on_improvement)
    done = 0                 # evaluations so far (recorded while < n)
    stop = False
    last = {}                # info of the latest evaluation (feedback needs its eta)

    def evaluate(project: bool):
        nonlocal done
        p.grad = None
        val, info = model.evaluate(p, loss_name, tvw, box)
        val.backward(gain_t)
        if project:
            # the parameters stay zero outside the support: projecting the gradient is the
            # same as differentiating through p * S but costs one multiply instead of two
            p.grad.mul_(sf3)             # real view: no promotion of sf to complex
        if done < n:
            losses[done] = val.detach()
            chi[done] = info["chi"]
            if chi_free is not None:
                chi_free[done] = info["chi_free"]
        done += 1
        last.update(info)
        return val.detach() * gain if opt_name == "lbfgs" else None    # L-BFGS's closure value

    def make_opt():
        if opt_name == "adam":
            return _Adam(torch, p, lr0)
        if opt_name == "gd":
            return _GD(torch, p, lr0, params["momentum"])
        return torch.optim.LBFGS([p], lr=lr0, max_iter=1, max_eval=1, history_size=20,
                                 tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")

    def start_phase(feedback: bool):
        """Put the parameters on the scale the next iterations expect; a fresh optimizer if needed."""
        with torch.no_grad():
            if feedback:
                p.mul_(model.scale(p))     # the feedback iterations work on the data's scale
            else:
                ms = float((p * p).sum()) / max(1.0, float(sf.sum()))
                if ms > 0:
                    p.div_(math.sqrt(ms))   # rms 1 in the support for the optimizer
        return None if feedback else make_opt()

    def set_support(new, it):
        nonlocal support, sf, sf3, box, frac
        frac = float(new.sum()) / new.numel()
        _guard(frac, params, ctx, it)
        support = new
        sf = support.to(torch.float32)
        sf3 = sf.unsqueeze(-1)
        box = _tv_box(support) if tvw else None

    def to_full(it):
        """End of the coarse stage: the object Fourier-interpolated onto the full grid."""
        nonlocal model, p, gain, gain_t
        with torch.no_grad():
            x = _resample(torch.view_as_complex(p.detach()) * sf, full_shape)
            model = full_model
            if period:
                new = _shrink_wrap(x, sigma_at(it), params["shrink_wrap_threshold"])
            else:
                new = _resample_support(support, full_shape)
            set_support(new, it)
            p = torch.view_as_real(x * sf).clone().contiguous().requires_grad_(True)
        gain = float(support.sum())
        gain_t = torch.tensor(gain, dtype=torch.float32, device=device)
        return new

    opt = start_phase(feedback=n_fb > 0)
    closure = lambda: evaluate(True)

    def read(i0, i1):
        return losses[i0:i1].double().cpu().numpy(), chi[i0:i1].double().cpu().numpy()

    checked = 0              # losses before this index have been read for the plateau test
    next_report, next_check, next_sw = report_every, check_every or n + 1, period or n + 1
    while done < n and not stop:
        if done < n_fb:
            # HIO-style feedback driven by the gradient: eta * dL/dx = x - P(x) gives P(x) (the
            # modulus projection for the amplitude loss); x <- P(x) inside the support and
            # x <- x - beta P(x) outside.  For the amplitude loss this is Fienup's HIO.
            evaluate(False)
            with torch.no_grad():
                x = torch.view_as_complex(p)
                # P(x) on the data's fixed scale: HIO needs it (with a fitted scale the feedback
                # outside the support lets the norm of the iterate drift without bound)
                proj = torch.view_as_complex(p.grad).mul_(-last["eta"] / gain).add_(x).mul_(last["fix"])
                x.copy_(torch.where(support, proj, x - beta * proj))
            if done == n_fb:     # end of the feedback phase: confine to the support, as ER would
                with torch.no_grad():
                    x.mul_(sf)
                opt = start_phase(feedback=False)
        elif opt_name in ("adam", "gd"):
            if params["learning_rate_final"] is not None:
                for g in opt.param_groups:
                    g["lr"] = _lr_at(params, lr0, done - n_fb, n - n_fb)
            closure()
            if opt_name == "adam":
                opt.step()
            else:
                opt.step(last["eta"] / gain)
        else:
            # one L-BFGS call runs up to the next boundary (report, plateau check, shrink-wrap, end
            # of the coarse stage); its curvature history is kept across calls and dropped when the
            # support or the grid changes
            stage_end = n_coarse if done < n_coarse else n
            budget = max(1, min(next_report, next_check, next_sw, stage_end) - done)
            for g in opt.param_groups:
                g["max_iter"], g["max_eval"] = budget, budget
                g["lr"] = _lr_at(params, lr0, done - n_fb, n - n_fb)
            opt.step(closure)
        end = min(done, n)
        # host work only at boundaries: progress, divergence, plateau, shrink-wrap, grid change
        if end >= next_report or end == n:
            c, lv = float(chi[end - 1]), float(losses[end - 1])
            if not (math.isfinite(c) and math.isfinite(lv)):
                raise CDIError("the loss became NaN/inf: the refinement diverged; lower learning_rate",
                               f"step {ctx.step} ({NAME}), iteration {end}")
            ctx.progress(step=ctx.step, algorithm=NAME, iteration=end, total=n, chi2=c, loss=lv)
            next_report = (end // report_every + 1) * report_every
        if end >= next_check:
            lv, _ = read(checked, end)
            checked = end
            next_check = (end // check_every + 1) * check_every
            if end > max(n_fb, n_coarse):    # no plateau test in the feedback phase or the coarse stage
                for j, v in enumerate(lv):
                    if checked - len(lv) + j >= max(n_fb, n_coarse) and v < best * (1.0 - tol):
                        best, best_it = v, checked - len(lv) + j
                best_it = max(best_it, n_fb, n_coarse)
                if end - 1 - best_it >= patience:
                    stop = True
        if model is not full_model and end >= n_coarse and end < n and not stop:
            support_records[end - 1] = float(to_full(end - 1).sum()) / math.prod(full_shape)
            opt = start_phase(feedback=done < n_fb)
            ref_loss = None      # the loss changes meaning with the grid
            if end >= next_sw:
                next_sw = (end // period + 1) * period
            continue
        if end >= next_sw and end < n and not stop:
            next_sw = (end // period + 1) * period
            cur = float(losses[end - 1])
            if ref_loss is None:
                ref_loss = float(losses[n_coarse if end > n_coarse else 0])
            if not on_improve or cur <= (1.0 - improve) * ref_loss:
                with torch.no_grad():
                    new = _shrink_wrap(torch.view_as_complex(p), sigma_at(end - 1), params["shrink_wrap_threshold"])
                    set_support(new, end)
                    if done >= n_fb:
                        # pixels leaving the support are zeroed (as ER does) and lose their
                        # momentum; pixels joining it start from zero
                        p.mul_(sf3)
                        for st in (opt.state.values() if opt is not None else ()):
                            if "exp_avg" in st:
                                st["exp_avg"].mul_(sf3)
                support_records[end - 1] = frac
                ref_loss = cur
                if opt_name == "lbfgs" and opt is not None:
                    opt = make_opt()     # the curvature pairs belong to the old objective
    n_done = min(done, n)

    with torch.no_grad():
        xd = torch.view_as_complex(p.detach()) * sf
        if model is not full_model:      # stopped inside the coarse stage
            xd = _resample(xd, full_shape)
            support = _resample_support(support, full_shape)
            xd = xd * support
            sf = support.to(torch.float32)
        s = full_model.scale(torch.view_as_real(xd))
        obj = torch.fft.fftshift(xd * s).to(torch.complex64).contiguous()
        sup = torch.fft.fftshift(support).to(torch.uint8).contiguous()
    lh, ch = read(0, n_done)
    cfh = None if chi_free is None else chi_free[:n_done].double().cpu().numpy()
    history = list(state.history) if state is not None else []
    for it in range(n_done):
        rec = {"step": ctx.step, "algorithm": NAME, "iteration": it + 1, "chi2": float(ch[it]),
               "loss": float(lh[it])}
        if cfh is not None:
            rec["chi2_free"] = float(cfh[it])
        if it in support_records:
            rec["support_fraction"] = support_records[it]
        if n_coarse and it < n_coarse:
            rec["grid"] = list(coarse)
        history.append(rec)
    if n_done < n:
        ctx.logger.info("step %d (%s): the loss reached a plateau; stopped after %d of %d iterations",
                        ctx.step, NAME, n_done, n)
    return State(obj=_from_torch(obj, be), support=_from_torch(sup, be).astype(bool), history=history,
                 provenance=list(state.provenance) if state is not None else [])


def specs() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(name=NAME, kind="refiner", summary=SUMMARY, params=PARAMS, run=run,
                          backends=("numpy", "cupy"), unavailable=_torch_missing(), check=_check)]


@hookimpl
def cdi_register_algorithms(register):
    for spec in specs():
        register(spec)
