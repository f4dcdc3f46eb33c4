"""ER, HIO, RAAR, SF, ASR and DM with shrink-wrap: the iterative projection algorithms.

One kernel serves five of them.  With P_M the modulus projection and S the
support, every iteration is::

    p = P_M(x)
    x <- p                     inside S
    x <- a * x + b * p         outside S

with (a, b) = (0, 0) for ER, (1, -beta) for HIO (Fienup 1982),
(beta, 1 - 2 beta) for RAAR (Luke 2005), (0, -1) for solvent flipping
(x <- R_S P_M x: p inside, -p outside) and (1, -1) for ASR
(x <- (R_S R_M + I) x / 2 with R = 2P - I: p inside, x - p outside, which is
also HIO with beta = 1).

The difference map (Elser 2003) does not fit that form: with
f_S(x) = (1 + g_S) P_S x - g_S x and f_M(x) = (1 + g_M) P_M x - g_M x,
g_S = -1/beta and g_M = 1/beta, an iteration is

    x <- x + beta (P_S f_M(x) - P_M f_S(x))

which needs two modulus projections, of x and of f_S(x) (x inside S, x/beta
outside), so two FFT pairs; its modulus passes use the shared kernel and its
update is written here.  At beta = 1 it reduces to ASR.

The options of :mod:`iterative_options` (partial coherence, low-pass filter,
phase constraint, twin removal) act on all six; each is off by default.

The kernel is written once against
the backend's array namespace (NumPy or CuPy), keeps the object in FFT order
so no shift happens inside the loop, folds the 1/N of the inverse FFT into the
modulus ratio, and records chi^2 on the device without a host sync per
iteration.

This module reaches the framework only through its public API, exactly as a
third-party plugin would.
"""

from __future__ import annotations

import math

import numpy as np

from cdi_plugins.core import AlgorithmSpec, CDIError, Param, State, hookimpl
from cdi_plugins.compute.fused import FusedData, FusedLoop
from cdi_plugins.compute.kernels import KernelWork, project_modulus, update_object
from cdi_plugins.compute.support import (autocorrelation_support, check_support_fraction, problem_cache,
                                         random_start, shrink_wrap, shrink_wrap_kept)
from cdi_plugins.core.params import check_support_guard, support_guard_params

from cdi_plugins.algorithms.iterative_options import OPTION_PARAMS, Options, check_options

_COMMON = [
    Param("iterations", "int", 100, "number of iterations", low=1),
    Param("shrink_wrap_period", "int", 20, "update the support every N iterations (0: never)", low=0),
    Param("shrink_wrap_threshold", "float", 0.2,
          "support = smoothed |obj| above this fraction of its maximum", low=0, high=1, low_open=True, high_open=True),
    Param("shrink_wrap_sigma", "float", 1.0, "Gaussian smoothing width (pixels) at the first iteration", low=0),
    Param("shrink_wrap_sigma_final", "float", 0.5,
          "smoothing width at the last iteration, reached linearly (null: no decay)", low=0, nullable=True),
    Param("initial_support", "str", "auto",
          "auto: from the incoming State if any, else autocorrelation; or autocorrelation, box, state",
          choices=("auto", "autocorrelation", "box", "state")),
    Param("autocorrelation_threshold", "float", 0.2,
          "threshold (fraction of max) of the smoothed autocorrelation for the initial support",
          low=0, high=1, low_open=True, high_open=True),
    Param("box_fraction", "float", 0.5, "side of the initial box support as a fraction of the array",
          low=0, high=1, low_open=True),
    *support_guard_params(),
]

_BETA = {
    "hio": Param("beta", "float", 0.9, "feedback parameter", low=0, high=1, low_open=True),
    "raar": Param("beta", "float", 0.75, "relaxation parameter", low=0, high=1, low_open=True),
    "dm": Param("beta", "float", 0.8, "Elser's beta (gamma_S = -1/beta, gamma_M = 1/beta)", low=0, high=1,
                low_open=True),
}

# SF and ASR have no parameter of their own: one fixed (ca, cb) of the shared update kernel each
_FIXED_FEEDBACK = {"sf": (0.0, -1.0), "asr": (1.0, -1.0)}

_SUMMARY = {
    "er": "Error reduction: alternate modulus and support projections (Gerchberg-Saxton-Fienup)",
    "hio": "Hybrid input-output (Fienup 1982): negative feedback outside the support",
    "raar": "Relaxed averaged alternating reflections (Luke 2005)",
    "sf": "Solvent flipping (Abrahams & Leslie 1996): the modulus projection with its sign flipped outside "
          "the support",
    "asr": "Averaged successive reflections (Bauschke, Combettes & Luke 2003): x <- (R_S R_M x + x) / 2",
    "dm": "Difference map (Elser 2003): two modulus projections per iteration, the estimate P_M f_S(x) "
          "handed on",
}


# --------------------------------------------------------------------------------------------
# Data on the device, in FFT order, prepared once per (problem, backend) and reused by every step.

class _DeviceData:
    def __init__(self, problem, backend):
        n = problem.intensity.size
        unc = problem.unconstrained
        d = np.fft.ifftshift(np.sqrt(problem.intensity)).astype(np.float32)
        unc_f = np.fft.ifftshift(unc)
        d[unc_f] = 0.0
        self.intensity = backend.asarray(np.fft.ifftshift(problem.intensity))
        self.d = backend.asarray(d)
        self.dN = backend.asarray((d / np.float32(n)).astype(np.float32))
        self.inv_n = np.float32(1.0 / n)
        self.norm = float(np.sum(d.astype(np.float64) ** 2))
        idx = np.flatnonzero(unc_f)
        self.unc_idx = backend.asarray(idx) if idx.size else None
        self.free_idx = None
        if problem.free is not None and problem.free.any():
            fidx = np.flatnonzero(np.fft.ifftshift(problem.free))
            dfree = np.sqrt(np.fft.ifftshift(problem.intensity).ravel()[fidx]).astype(np.float32)
            self.free_idx = backend.asarray(fidx)
            self.d_free = backend.asarray(dfree)
            self.norm_free = float(np.sum(dfree.astype(np.float64) ** 2)) or 1.0
        self._fused = None

    def fused(self, work) -> FusedData:
        """The amplitudes as the cache-blocked loop reads them (made on first use, NumPy backend only)."""
        if self._fused is None:
            free = self.free_idx is not None
            self._fused = FusedData(self.d, work.signed_dN(self.dN, self.unc_idx),
                                    self.free_idx if free else None, self.d_free if free else None)
        return self._fused


def _device_data(problem, backend) -> _DeviceData:
    return problem_cache(problem, ("iterative", backend), lambda: _DeviceData(problem, backend))


# --------------------------------------------------------------------------------------------


def _initial(problem, state, params, ctx, dd):
    """Object and support in FFT order for the start of a step."""
    be, xp = ctx.backend, ctx.backend.xp
    how = params["initial_support"]
    if how == "auto":
        how = "state" if state is not None else "autocorrelation"
    if how == "state":
        if state is None:
            raise CDIError("initial_support: state needs a previous step that produced a support")
        support = be.ifftshift(be.asarray(state.support).astype(bool))
    elif how == "autocorrelation":
        support = autocorrelation_support(be, dd.intensity, params["autocorrelation_threshold"])
    else:  # box, centred on the origin of the FFT-ordered array
        shape = problem.shape
        box = np.zeros(shape, dtype=bool)
        sl = tuple(slice(n // 2 - max(1, int(round(n * params["box_fraction"] / 2))),
                         n // 2 + max(1, int(round(n * params["box_fraction"] / 2)))) for n in shape)
        box[sl] = True
        support = be.asarray(np.fft.ifftshift(box))
    if state is not None:
        x = be.ifftshift(be.asarray(state.obj).astype(xp.complex64))
    else:
        # random start: seeded on the host so a run reproduces on any backend
        x = be.asarray(random_start(ctx.rng, problem.shape)) * support
        # Parseval: give the start the energy the data says the object has
        energy = float(xp.vdot(x, x).real)
        if energy > 0:
            x *= xp.float32(math.sqrt(dd.norm / (energy * problem.intensity.size)))
    return x, support


def _guard(frac: float, params: dict, ctx, name: str, it: int) -> None:
    check_support_fraction(frac, params["support_min_fraction"], params["support_max_fraction"],
                           f"step {ctx.step} ({name}), iteration {it}")


def _feedback(name: str, params: dict):
    """(ca, cb) of the update ``x <- ca * x + cb * p`` outside the support; (None, None) for ER."""
    if name == "er":
        return None, None
    if name == "hio":
        return 1.0, -params["beta"]
    if name == "raar":
        return params["beta"], 1.0 - 2.0 * params["beta"]
    return _FIXED_FEEDBACK.get(name, (None, None))   # dm: its own update (_DifferenceMapLoop)


class _Loop:
    """One step's iterations: the object in ``ws.x``, the support, chi^2 on the device, support records.

    From 256^3 on the mkl engine with the numba kernels and no option active, the iterations run in the
    cache-blocked loop (:class:`~cdi_plugins.compute.fused.FusedLoop`: the FFT pair, the modulus and the update
    in two passes over memory; ``CDI_PLUGINS_FUSED``); elsewhere as an FFT, :func:`project_modulus`, an inverse
    FFT and :func:`update_object`.
    """

    fusable = True     # the update has the shared kernel's form (not the difference map)

    def __init__(self, name, problem, state, params, ctx):
        be = ctx.backend
        self.name, self.params, self.ctx, self.be, self.xp = name, params, ctx, be, be.xp
        self.dd = dd = _device_data(problem, be)
        self.ws = be.workspace(problem.shape)
        x0, self.s = _initial(problem, state, params, ctx, dd)
        _guard(int(self.xp.count_nonzero(self.s)) / self.s.size, params, ctx, name, 0)
        self.ws.x[...] = x0
        del x0
        self.ca, self.cb = _feedback(name, params)
        self.work = KernelWork(self.xp, problem.shape, feedback=self.ca is not None,
                               threads=be.threads_for(problem.intensity.size))
        self.inside = self.inside_of(self.s)
        self.opts = Options(be, problem, dd, params)
        n = params["iterations"]
        self.chi = self.xp.zeros(n, dtype=self.xp.float32)
        self.chi_free = self.xp.zeros(n, dtype=self.xp.float32) if dd.free_idx is not None else None
        self.chi_scale = {}      # iteration -> chi^2 normalisation other than the full data's (low-pass)
        self.support_records = {}
        self.fused = None
        if self.fusable and not self.opts.active and FusedLoop.usable(self.ws, self.work):
            self.fused = FusedLoop(self.ws, dd.fused(self.work), self.work)

    def inside_of(self, s):
        """The support as update_object reads it fastest: the flat mask for the fused kernels (numba, CuPy),
        flat indices for the NumPy reference (see update_object)."""
        return s.reshape(-1) if self.work.impl != "numpy" else self.xp.flatnonzero(s)

    def forward(self, it):
        """FFT of the iterate; chi^2 of the free pixels recorded."""
        F = self.ws.forward()
        if self.chi_free is not None:
            diff = self.xp.abs(F.reshape(-1)[self.dd.free_idx]) - self.dd.d_free
            self.chi_free[it] = self.xp.vdot(diff, diff)
        return F

    def project(self, F, it=None):
        """Modulus projection in place on F; chi^2 recorded as iteration *it* (None: not recorded)."""
        if self.opts.active:
            chi = self.opts.project(self.work, F)
            if it is not None and self.opts.scale != 1.0:
                self.chi_scale[it] = self.opts.scale
        else:
            dd = self.dd
            chi = project_modulus(self.work, F, dd.d, dd.dN, dd.inv_n, dd.unc_idx)
        if it is not None:
            self.chi[it] = chi

    def iterate(self, it, want_source=False):
        """One iteration; returns the array the support is updated from (*want_source*: it will be), or
        _KEPT when the cache-blocked loop left its modulus in the workspace's smoothing buffer."""
        if self.fused is not None:
            keep = self.ws.smoothing_buffer() if want_source and self.ca is not None else None
            chi, chi_free = self.fused.iterate(self.ca, self.cb, self.inside, keep_abs=keep,
                                               forward=it + 1 < self.params["iterations"])
            self.chi[it] = chi
            if self.chi_free is not None:
                self.chi_free[it] = chi_free
            return _KEPT if keep is not None else self.ws.x
        x = self.ws.x
        F = self.forward(it)
        self.project(F, it)
        p = self.ws.backward(F)
        inside = self.opts.inside(p, self.s, self.inside, it) if self.opts.active else self.inside
        update_object(self.work, x, p, self.ca, self.cb, inside)
        # HIO/RAAR: from the modulus projection p, not the iterate, whose feedback makes
        # it large outside S: its maximum then sets the threshold and the support collapses
        # (seen at 128^3). ER: from the object itself (p confined to S), which keeps the
        # support tight around small crystals.
        return p if self.ca is not None else x

    def estimate(self):
        """The object the PSF is estimated from."""
        return self.ws.x

    def result(self):
        """Object (FFT order) handed on."""
        return self.ws.x

    def run(self):
        params, ctx, xp = self.params, self.ctx, self.xp
        n = params["iterations"]
        period = params["shrink_wrap_period"]
        sig0 = params["shrink_wrap_sigma"]
        sig1 = params["shrink_wrap_sigma_final"]
        sig1 = sig0 if sig1 is None else sig1
        report_every = max(1, n // 100)
        if self.fused is not None:
            self.fused.start()
        for it in range(n):
            if self.opts.active:
                self._options(it)
            wrap = bool(period) and (it + 1) % period == 0
            source = self.iterate(it, wrap)
            if wrap:
                sigma = sig0 + (sig1 - sig0) * (it / max(1, n - 1))
                if source is _KEPT:
                    self.s = shrink_wrap_kept(self.ws, sigma, params["shrink_wrap_threshold"])
                else:
                    self.s = shrink_wrap(self.be, source, sigma, params["shrink_wrap_threshold"])
                frac = int(xp.count_nonzero(self.s)) / self.s.size
                _guard(frac, params, ctx, self.name, it + 1)
                self.inside = self.inside_of(self.s)
                self.support_records[it] = frac
            if (it + 1) % report_every == 0 or it + 1 == n:
                c = float(self.chi[it]) / self.dd.norm * self.chi_scale.get(it, 1.0)
                if not math.isfinite(c):
                    raise CDIError("chi^2 became NaN/inf: the reconstruction diverged",
                                   f"step {ctx.step} ({self.name}), iteration {it + 1}")
                ctx.progress(step=ctx.step, algorithm=self.name, iteration=it + 1, total=n, chi2=c)
        return self.records()

    def _options(self, it):
        s = self.opts.twin_now(self.ws.x, self.s, it)   # the iterate: what the next iteration starts from
        if s is not None:
            self.s = s
            self.inside = self.inside_of(s)
        self.opts.prepare(it, self.estimate(), self.s)

    def records(self):
        be, dd, ctx = self.be, self.dd, self.ctx
        chi_h = be.to_numpy(self.chi).astype(np.float64) / dd.norm
        for it, k in self.chi_scale.items():
            chi_h[it] *= k
        chif_h = None if self.chi_free is None else be.to_numpy(self.chi_free).astype(np.float64) / dd.norm_free
        records = []
        for it in range(len(chi_h)):
            rec = {"step": ctx.step, "algorithm": self.name, "iteration": it + 1, "chi2": float(chi_h[it])}
            if chif_h is not None:
                rec["chi2_free"] = float(chif_h[it])
            if it in self.support_records:
                rec["support_fraction"] = self.support_records[it]
            records.append(rec)
        return records


_KEPT = object()   # iterate()'s source when |p| is already in the workspace's smoothing buffer


def _make_run(name: str, loop=_Loop):
    def run(problem, state, params, ctx):
        lp = loop(name, problem, state, params, ctx)
        records = lp.run()
        be = ctx.backend
        # HIO/RAAR hand on their iterate as it is, non-zero outside S, so that a following
        # HIO step continues exactly; finish a recipe with ER to get an object confined to S.
        # A support updated on the last iteration is handed on with the object last projected
        # on the previous one: projecting on the fresh (tighter) support as well was tried and
        # cost accuracy (32^3 test crystal: error 0.058 -> 0.10), while skipping the final
        # update left the real Au support in 21 fragments instead of one.
        return State.after(state, be.fftshift(lp.result()), be.fftshift(lp.s), records)
    run.__name__ = f"run_{name}"
    return run


class _DifferenceMapLoop(_Loop):
    """Elser's difference map: two modulus projections per iteration (see the module docstring)."""

    fusable = False

    def __init__(self, *args):
        super().__init__(*args)
        self.beta = self.params["beta"]
        self.solution = None

    def iterate(self, it, want_source=False):
        xp, ws = self.xp, self.ws
        x = ws.x
        b, c = self.beta, xp.complex64
        F = self.forward(it)
        self.project(F, it)
        pm = ws.backward(F)
        inside = self.opts.inside(pm, self.s, self.inside, it) if self.opts.active else self.inside
        f_m = pm * c(1.0 + 1.0 / b) - x * c(1.0 / b)            # f_M(x) = (1 + 1/b) P_M x - x / b
        x_old = x.copy()
        x *= c(1.0 / b)                                          # f_S(x): x in S, x / b outside
        x.reshape(-1)[inside] = x_old.reshape(-1)[inside]
        F = ws.forward()
        self.project(F)
        ps = ws.backward(F)                                      # P_M f_S(x): the solution estimate
        xp.multiply(ps, c(-b), out=x)
        x += x_old                                               # x + b (P_S f_M(x) - P_M f_S(x))
        x.reshape(-1)[inside] += c(b) * f_m.reshape(-1)[inside]
        self.solution = ps
        return ps

    def estimate(self):
        return self.ws.x if self.solution is None else self.solution

    def result(self):
        return self.ws.x.copy() if self.solution is None else self.solution.copy()


def specs() -> list[AlgorithmSpec]:
    out = []
    for name in _SUMMARY:
        params = list(_COMMON)
        if name in _BETA:
            params.insert(1, _BETA[name])
        params += OPTION_PARAMS
        loop = _DifferenceMapLoop if name == "dm" else _Loop
        out.append(AlgorithmSpec(name=name, kind="iterative", summary=_SUMMARY[name], params=params,
                                 run=_make_run(name, loop), backends=("numpy", "cupy"), check=_check))
    return out


def _check(params: dict) -> None:
    check_support_guard(params)
    check_options(params)


@hookimpl
def cdi_register_algorithms(register):
    for spec in specs():
        register(spec)
