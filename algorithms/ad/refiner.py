"""The AD refiner's run: its phases, its schedule and what it records.

A run goes through up to three phases, in this order, each one optional:

1. the *coarse stage* (``coarse_iterations``), on the central part of the pattern;
2. the *feedback iterations* (``feedback_iterations``), HIO-style steps driven by the gradient;
3. *gradient descent* with the chosen optimiser until ``iterations``.

The coarse stage overlaps the other two (it counts the same iterations); shrink-wrap runs on its
own schedule through all of them and the plateau test may stop the run in the last one.

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
continuation or half-support detwinning changed that.  ``feedback_iterations``
> 0 runs that many iterations of HIO-style feedback driven by the autograd
gradient first: with ``u = eta * dL/dx = x - P(x)`` (``P`` the modulus
"projection" the loss implies, put on the data's fixed scale), ``x <- P(x)``
inside the support and ``x <- x - beta P(x)`` outside.  For the amplitude loss
this is exactly Fienup's HIO; for the others it is HIO with that loss's
projection.  Then the optimiser polishes.  With 400 such iterations and 200 of
Adam (configs/ad_only.yaml) AD alone reached error 0.018-0.060 on 11 of 12
simulated crystals (median 0.033, against 0.061 for the 620-iteration ER/HIO
recipe); the twelfth stagnated at 0.25, as the ER/HIO recipe does there from
4 of 5 random starts.

Coarse to fine
--------------
``coarse_iterations`` > 0 runs the first iterations on the central
1/``coarse_factor`` of the pattern per axis (the low spatial frequencies), with
the object on a grid of the same field of view and ``coarse_factor`` times
larger voxels, then Fourier-interpolates it onto the full grid (support rebuilt
by shrink-wrap) for the rest.  At 64^3 a coarse iteration costs about a seventh
of a full one here on the CPU fast path (0.2 against 1.5 ms, one thread).  The
recorded chi^2 stays that of the whole pattern (see ``model._Model``), and the
coarse records carry ``grid``.

Support and stopping
--------------------
Shrink-wrap runs outside the autograd graph every ``shrink_wrap_period``
iterations (Gaussian smoothing in Fourier space with one real FFT pair, on the
optimisation device) and, as in 3D-CDI-NN, only when the loss has fallen by
``shrink_wrap_improvement`` (10 %) since the last update.  The run stops early
when the loss has not improved by ``plateau_tolerance`` (relative) for
``plateau_patience`` iterations of the optimiser.

History
-------
One record per iteration with ``step``, ``algorithm`` ("ad"),
``iteration``, ``chi2`` (the iterative steps' definition: sum over constrained
pixels of ``(|F| - sqrt(I))^2 / sum I`` with F the unnormalised fftn of the
iterate -- here the iterate scaled by the least-squares scale, i.e. the object
the step would hand on if it stopped there -- before that iteration's update),
``loss``, ``support_fraction`` when the support changed and ``chi2_free`` when
free pixels are used.  Per-iteration values stay on the device as 0-d tensors
and are read back at the end; the host synchronises only every few iterations
(progress, plateau test, shrink-wrap).

CPU fast path
-------------
Where ``model.fast_kernels`` gives the numba kernels (CPU, amplitude or Poisson
loss, no TV, numba installed), :meth:`Refiner.evaluate` runs
``model._Model.evaluate_fast`` (no graph; the recorded values are floats) and
the other whole-array passes of an iteration are numba passes too: the feedback
update, the projection of the gradient, zeroing outside a new support; gd steps
only the support's voxels (see ``optimizers._GD``); shrink-wrap's modulus,
Gaussian product and threshold are the framework's fused passes
(``compute.kernels.abs_into`` / ``scale_by`` / ``above_fraction``, on torch's
threads).  The refiner offers the kernels to the optimisers as ``kernels``
(None on the torch path) with the support's flat indices ``support_idx``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cdi_plugins.core import CDIError, State
from cdi_plugins.compute.support import autocorrelation_support, check_support_fraction, random_start

from cdi_plugins.algorithms.ad.model import (_coarse_shape, _fftshift, _flat, _from_torch, _model, _resample,
                                             _resample_support, _shrink_wrap, _to_torch, _tv_box, fast_kernels)
from cdi_plugins.algorithms.ad.optimizers import TABLE


def _initial(problem, state, params, ctx, device, where: str):
    """Complex object (normalised to rms 1 in the support) and bool support, FFT order, on *device*."""
    be = ctx.backend
    how = params["initial_support"]
    if how == "auto":
        how = "state" if state is not None else "autocorrelation"
    if how == "state":
        if state is None:
            raise CDIError("initial_support: state needs a previous step that produced a support", where)
        sup = _to_torch(be.asarray(state.support).astype(be.xp.float32), be, device)
        support = _fftshift(sup > 0.5, inverse=True)
    else:
        i_f = be.asarray(np.fft.ifftshift(problem.intensity))
        ac = autocorrelation_support(be, i_f, params["autocorrelation_threshold"])
        support = _to_torch(ac.astype(be.xp.float32), be, device) > 0.5
    if not bool(support.any()):
        raise CDIError("the initial support is empty", where)
    if state is not None:
        x = _fftshift(_to_torch(be.asarray(state.obj).astype(be.xp.complex64), be, device), inverse=True)
    else:
        # drawn on the host exactly as the iterative steps draw theirs, so that a seed gives the
        # same start on any backend and device
        x = torch.from_numpy(random_start(ctx.rng, problem.shape)).to(device)
    x = x.to(torch.complex64) * support
    flat = torch.view_as_real(x).reshape(-1)
    ms = float(torch.dot(flat, flat)) / float(support.sum())
    if not (ms > 0 and math.isfinite(ms)):
        raise CDIError("the incoming object is zero (or not finite) everywhere inside the support", where)
    return x.div_(math.sqrt(ms)), support


def _leaf(x):
    """The parameters of the complex object *x*: its real view, a fresh leaf that takes gradients."""
    return torch.view_as_real(x).clone().contiguous().requires_grad_(True)


class _Schedule:
    """Where the phases end and when the host next looks at the run, as iteration counts.

    The host reads the device only at these boundaries: a progress report every 1 % of the run
    (``next_report``), a plateau check every ``check_every`` iterations (``next_check``), a
    shrink-wrap every ``period`` (``next_sw``); ``n + 1`` stands for never.
    """

    def __init__(self, params, shape, lr0):
        self.n = n = params["iterations"]
        self.n_fb = min(params["feedback_iterations"], n)
        self.full = tuple(shape)
        self.coarse = _coarse_shape(self.full, params["coarse_factor"])
        self.n_coarse = min(params["coarse_iterations"], n) if self.coarse != self.full else 0
        self.period = params["shrink_wrap_period"]
        patience = params["plateau_patience"]
        self.report_every = max(1, n // 100)
        self.check_every = max(1, min(10, patience)) if patience else 0
        self.next_report, self.next_check = self.report_every, self.check_every or n + 1
        self.next_sw = self.period or n + 1
        self.sigma0, self.sigma1 = params["shrink_wrap_sigma"], params["shrink_wrap_sigma_final"]
        self.lr0, self.lr1 = lr0, params["learning_rate_final"]

    @staticmethod
    def after(end: int, every: int) -> int:
        """The first multiple of *every* after *end*."""
        return (end // every + 1) * every

    def sigma_at(self, it: int, coarse: bool) -> float:
        """Shrink-wrap smoothing at iteration *it*, in pixels of the grid in use."""
        sig0, sig1 = self.sigma0, self.sigma1
        sigma = sig0 if sig1 is None else sig0 + (sig1 - sig0) * (it / max(1, self.n - 1))
        if coarse:
            sigma *= math.prod(c / f for c, f in zip(self.coarse, self.full)) ** (1 / 3)
        return sigma

    def lr_at(self, done: int) -> float:
        """The learning rate after *done* iterations: cosine decay over the optimiser's iterations."""
        lr0, lr1 = self.lr0, self.lr1
        if lr1 is None:
            return lr0
        it, n = done - self.n_fb, self.n - self.n_fb
        return lr1 + 0.5 * (lr0 - lr1) * (1.0 + math.cos(math.pi * it / max(1, n - 1)))

    def budget(self, done: int) -> int:
        """Iterations left before the next boundary (at least one): how far L-BFGS may run alone."""
        stage_end = self.n_coarse if done < self.n_coarse else self.n
        return max(1, min(self.next_report, self.next_check, self.next_sw, stage_end) - done)


class _Trace:
    """What the run records per iteration: the device's 0-d tensors, in lists (copying each into a
    preallocated tensor costs two more operations per value), stacked when the host reads them.

    ``done`` counts evaluations; L-BFGS's last line search may run past ``n``, whose
    evaluations are not recorded.  ``support`` maps an iteration index to the support fraction
    set at its end.
    """

    def __init__(self, n: int, device, free: bool):
        self.n, self.done = n, 0
        self.chi: list = []
        self.loss: list = []
        self.chi_free: list | None = [] if free else None
        self.support: dict[int, float] = {}

    def add(self, loss, info) -> None:
        if self.done < self.n:
            self.loss.append(loss)
            self.chi.append(info["chi"])
            if self.chi_free is not None:
                self.chi_free.append(info["chi_free"])
        self.done += 1

    @staticmethod
    def _host(values, i0: int, i1: int) -> np.ndarray:
        """Values [i0, i1) on the host (float64); the fast path's values are floats already."""
        if i1 <= i0:
            return np.zeros(0)
        if not isinstance(values[i0], torch.Tensor):
            return np.asarray(values[i0:i1], dtype=np.float64)
        return torch.stack(values[i0:i1]).double().cpu().numpy()

    def losses(self, i0: int, i1: int):
        """The losses of iterations [i0, i1) on the host (float64)."""
        return self._host(self.loss, i0, i1)

    def records(self, step: int, name: str, coarse: tuple, n_coarse: int) -> list[dict]:
        """The history records of the iterations done (the first *n_coarse* on the *coarse* grid)."""
        n_done = min(self.done, self.n)
        lh, ch = self.losses(0, n_done), self._host(self.chi, 0, n_done)
        cfh = None if self.chi_free is None else self._host(self.chi_free, 0, n_done)
        out = []
        for it in range(n_done):
            rec = {"step": step, "algorithm": name, "iteration": it + 1, "chi2": float(ch[it]),
                   "loss": float(lh[it])}
            if cfh is not None:
                rec["chi2_free"] = float(cfh[it])
            if it in self.support:
                rec["support_fraction"] = self.support[it]
            if n_coarse and it < n_coarse:
                rec["grid"] = list(coarse)
            out.append(rec)
        return out


class _Plateau:
    """The early stop: no relative fall of the loss by *tol* in *patience* iterations.

    Only iterations from *start* on count (no plateau test in the feedback phase or the coarse
    stage, whose losses are not comparable with what follows).
    """

    def __init__(self, patience: int, tol: float, start: int):
        self.patience, self.tol, self.start = patience, tol, start
        self.best, self.best_it = math.inf, 0
        self.checked = 0         # losses before this index have been read

    def reached(self, trace: _Trace, end: int) -> bool:
        """Whether the run has stalled after *end* iterations (reads the losses not read yet)."""
        i0, self.checked = self.checked, end
        losses = trace.losses(i0, end)
        if end <= self.start:
            return False
        for j, v in enumerate(losses):
            if i0 + j >= self.start and v < self.best * (1.0 - self.tol):
                self.best, self.best_it = v, i0 + j
        self.best_it = max(self.best_it, self.start)
        return end - 1 - self.best_it >= self.patience


class Refiner:
    """One run of the AD refiner on *problem* from *state* (or a random start), on *device*.

    :meth:`run` loops until ``iterations`` or the plateau: one turn is one feedback iteration or
    one call of the optimiser (:meth:`_iterate`), then the boundaries the host looks at:
    progress and divergence (:meth:`_report`), the plateau test (:meth:`_check_plateau`), the
    switch from the coarse to the full grid (:meth:`_to_full_grid`) or else a shrink-wrap
    (:meth:`_shrink_wrap`).  *name* is the step's algorithm name in records and messages.

    The refiner is the optimisers' objective: :meth:`evaluate` and :meth:`own_step`.
    """

    def __init__(self, problem, state, params, ctx, device, name: str):
        self.state, self.params, self.ctx, self.device, self.name = state, params, ctx, device, name
        self.full_model = self.model = _model(problem, device)
        x0, support = _initial(problem, state, params, ctx, device, self._where())
        self.frac = float(support.sum()) / support.numel()
        self._guard(self.frac, 0)
        self.opt_class = TABLE[params["optimizer"]]
        lr0 = params["learning_rate"] or self.opt_class.default_lr
        self.plan = plan = _Schedule(params, problem.shape, lr0)
        if plan.n_coarse:
            x0, support = self._to_coarse_grid(problem, x0, support)
        self.p = _leaf(x0)
        del x0
        self.loss_name, self.tv_weight = params["loss"], params["tv_weight"]
        #: the CPU fast path's numba kernels (model.fast_kernels), or None: autograd
        self.kernels = fast_kernels(device, self.loss_name, self.tv_weight)
        self._adopt_support(support)
        self._measure_gain()
        self.trace = _Trace(plan.n, device, self.full_model.free_idx is not None)
        self.plateau = _Plateau(params["plateau_patience"], params["plateau_tolerance"],
                                max(plan.n_fb, plan.n_coarse))
        self.ref_loss = None     # loss at the last support update (for shrink_wrap_only_on_improvement)
        self.stopped = False
        self.last = {}           # info of the latest evaluation (feedback and gd need its eta)
        self._start_phase(feedback=plan.n_fb > 0)

    def _where(self, it: int | None = None) -> str:
        where = f"step {self.ctx.step} ({self.name})"
        return where if it is None else f"{where}, iteration {it}"

    # ---------------------------------------------------------------- the loop

    def run(self) -> State:
        """Refine; the State to hand on (centred, on the framework's backend)."""
        plan = self.plan
        while self.trace.done < plan.n and not self.stopped:
            self._iterate()
            end = min(self.trace.done, plan.n)
            # host work only at boundaries: progress, divergence, plateau, shrink-wrap, grid change
            self._report(end)
            self._check_plateau(end)
            if self.stopped or end == plan.n:
                break
            if self.model is not self.full_model and end >= plan.n_coarse:
                self._to_full_grid(end)
            elif end >= plan.next_sw:
                self._shrink_wrap(end)
        return self._result()

    def _iterate(self) -> None:
        done = self.trace.done
        if done < self.plan.n_fb:
            self._feedback_iteration()
        else:
            self.opt.iterate(self, self.plan.lr_at(done), self.plan.budget(done))

    def evaluate(self, project: bool = True):
        """Loss and gradient at the parameters, recorded; returns the loss times the gain.

        The loss is differentiated times the support size (``gain``): the normalised loss gives
        gradients of order 1/n per voxel, below the absolute thresholds of L-BFGS (curvature pairs
        with y.s < 1e-10 are dropped) and near Adam's eps; this makes them of order 1.
        """
        p = self.p
        if self.kernels is not None:
            return self._evaluate_fast(project)
        val, info = self.model.evaluate(p, self.loss_name, self.tv_weight, self.box)
        # autograd.grad hands back the gradient itself (backward() would copy it into p.grad); the
        # gain multiplies the output rather than seeding the pass: an explicit seed makes torch
        # import sympy (~0.3 s) on its first use to check its shape
        p.grad = torch.autograd.grad(val * self.gain_t, p)[0]
        if project:
            # the parameters stay zero outside the support: projecting the gradient is the
            # same as differentiating through p * S but costs one multiply instead of two
            p.grad.mul_(self.sf3)            # real view: no promotion of sf to complex
        self.trace.add(val.detach(), info)
        self.last = info
        return val.detach() * self.gain      # L-BFGS's closure value

    def _evaluate_fast(self, project: bool):
        """:meth:`evaluate` on the CPU fast path (``model._Model.evaluate_fast``): no graph, floats."""
        p = self.p
        loss, info, g = self.model.evaluate_fast(torch.view_as_complex(p.detach()), self.loss_name, self.gain,
                                                 self.kernels)
        gr = torch.view_as_real(g)
        if project:
            self._confine(gr)
        p.grad = gr
        self.trace.add(loss, info)
        self.last = info
        return loss * self.gain

    def own_step(self):
        """The loss's own step ``eta`` of the latest evaluation, in the scale of the gradient."""
        return self.last["eta"] / self.gain

    def _feedback_iteration(self) -> None:
        """HIO-style feedback driven by the gradient.

        ``eta * dL/dx = x - P(x)`` gives P(x) (the modulus projection for the amplitude loss);
        x <- P(x) inside the support and x <- x - beta P(x) outside.  For the amplitude loss this
        is Fienup's HIO.
        """
        self.evaluate(project=False)
        if self.kernels is not None:
            info = self.last
            self.kernels.feedback(_flat(self.p), _flat(self.p.grad), self.mask_np,
                                  np.float32(-info["eta"] / self.gain), np.float32(info["fix"]),
                                  np.float32(self.params["feedback_beta"]))
        else:
            self._feedback_update()
        if self.trace.done == self.plan.n_fb:
            # end of the feedback phase: confine to the support, as ER would
            with torch.no_grad():
                torch.view_as_complex(self.p).mul_(self.sf)
            self._start_phase(feedback=False)

    def _feedback_update(self) -> None:
        """The feedback update with torch's operations (the path with autograd)."""
        with torch.no_grad():
            x = torch.view_as_complex(self.p)
            # P(x) on the data's fixed scale: HIO needs it (with a fitted scale the feedback
            # outside the support lets the norm of the iterate drift without bound)
            proj = torch.view_as_complex(self.p.grad).mul_(-self.last["eta"] / self.gain).add_(x)
            proj.mul_(self.last["fix"])
            # x <- x - beta P(x) everywhere, then P(x) inside the support: in place, two passes
            x.sub_(proj, alpha=self.params["feedback_beta"])
            torch.where(self.support, proj, x, out=x)

    def _start_phase(self, feedback: bool) -> None:
        """Put the parameters on the scale the next iterations expect; a fresh optimizer if needed."""
        p = self.p
        with torch.no_grad():
            if feedback:
                p.mul_(self.model.scale(p, self.kernels))     # the feedback iterations work on the data's scale
            else:
                flat = p.reshape(-1)
                n_in = len(self.support_idx) if self.kernels is not None else float(self.sf.sum())
                ms = float(torch.dot(flat, flat)) / max(1.0, n_in)
                if ms > 0:
                    p.div_(math.sqrt(ms))   # rms 1 in the support for the optimizer
        self.opt = None if feedback else self.opt_class.create(torch, p, self.plan.lr0, self.params)

    # ---------------------------------------------------------------- boundaries

    def _report(self, end: int) -> None:
        """Progress every 1 % and at the end; a NaN/inf loss stops the run with an error."""
        plan = self.plan
        if not (end >= plan.next_report or end == plan.n):
            return
        c, lv = float(self.trace.chi[end - 1]), float(self.trace.loss[end - 1])
        if not (math.isfinite(c) and math.isfinite(lv)):
            raise CDIError("the loss became NaN/inf: the refinement diverged; lower learning_rate",
                           self._where(end))
        self.ctx.progress(step=self.ctx.step, algorithm=self.name, iteration=end, total=plan.n, chi2=c, loss=lv)
        plan.next_report = plan.after(end, plan.report_every)

    def _check_plateau(self, end: int) -> None:
        plan = self.plan
        if end < plan.next_check:
            return
        plan.next_check = plan.after(end, plan.check_every)
        if self.plateau.reached(self.trace, end):
            self.stopped = True

    def _shrink_wrap(self, end: int) -> None:
        """The support from the smoothed object, when the loss fell enough since the last update."""
        plan = self.plan
        plan.next_sw = plan.after(end, plan.period)
        cur = float(self.trace.loss[end - 1])
        if self.ref_loss is None:
            self.ref_loss = float(self.trace.loss[plan.n_coarse if end > plan.n_coarse else 0])
        improve = self.params["shrink_wrap_improvement"]
        if self.params["shrink_wrap_only_on_improvement"] and not cur <= (1.0 - improve) * self.ref_loss:
            return
        with torch.no_grad():
            new = _shrink_wrap(torch.view_as_complex(self.p), self._sigma(end - 1),
                               self.params["shrink_wrap_threshold"], self.kernels)
            self._set_support(new, end)
            if self.opt is not None:         # not in the feedback phase
                # pixels leaving the support are zeroed (as ER does) and lose their momentum;
                # pixels joining it start from zero
                self._confine(self.p)
                self.opt = self.opt.support_changed(self.sf3, self._confine)
        self.trace.support[end - 1] = self.frac
        self.ref_loss = cur

    def _sigma(self, it: int) -> float:
        return self.plan.sigma_at(it, coarse=self.model is not self.full_model)

    # ---------------------------------------------------------------- support and grids

    def _guard(self, frac: float, it: int) -> None:
        params = self.params
        if it == 0 and not params["support_min_fraction"] <= frac <= params["support_max_fraction"]:
            raise CDIError(f"the initial support covers {frac:.2e} of the array, outside [support_min_fraction, "
                           f"support_max_fraction] = [{params['support_min_fraction']:g}, "
                           f"{params['support_max_fraction']:g}]; change autocorrelation_threshold or the "
                           "incoming support", self._where())
        check_support_fraction(frac, params["support_min_fraction"], params["support_max_fraction"],
                               self._where(it))

    def _adopt_support(self, support) -> None:
        self.support = support
        self.sf = support.to(torch.float32)
        self.sf3 = self.sf.unsqueeze(-1)     # the support on the real view (*shape, 2) of the parameters
        if self.kernels is not None:        # the support as the kernels read it: a bool array, flat indices
            self.mask_np = _flat(support)
            self.support_idx = np.flatnonzero(self.mask_np)
        self.box = _tv_box(support) if self.tv_weight else None

    def _confine(self, t) -> None:
        """Zero the tensor *t* (shaped like the parameters) outside the support, in place."""
        if self.kernels is not None:
            self.kernels.project(_flat(t), self.mask_np)
        else:
            t.mul_(self.sf3)

    def _set_support(self, new, it: int) -> None:
        """Shrink-wrap's support, after the guard against a collapsed or runaway one."""
        # the count by NumPy on the CPU: ten times faster than torch's sum of a bool tensor, same number
        count = np.count_nonzero(new.numpy()) if new.device.type == "cpu" else new.sum()
        frac = float(count) / new.numel()
        self._guard(frac, it)
        self.frac = frac
        self._adopt_support(new)

    def _measure_gain(self) -> None:
        """The support size that multiplies the loss (see :meth:`evaluate`), fixed per grid."""
        self.gain = float(self.support.sum())
        # d(loss x gain)/d(loss), the seed of every backward pass
        self.gain_t = torch.tensor(self.gain, dtype=torch.float32, device=self.device)

    def _to_coarse_grid(self, problem, x0, support):
        """The start of the coarse stage: the object and support on the coarse grid.

        The coarse stage fits the central part of the pattern, the object on a grid with the same
        field of view and correspondingly larger voxels (an FFT 2^3-3^3 times cheaper).
        """
        coarse = self.plan.coarse
        self.model = _model(problem, self.device, coarse)
        x0 = _resample(x0, coarse)
        support = _resample_support(support, coarse)
        if not bool(support.any()):
            raise CDIError(f"the support vanishes on the coarse {'x'.join(map(str, coarse))} grid; lower "
                           "coarse_factor or set coarse_iterations: 0", self._where())
        return x0 * support, support     # _start_phase puts it back on the scale it needs

    def _to_full_grid(self, end: int) -> None:
        """End of the coarse stage: the object Fourier-interpolated onto the full grid."""
        plan, it = self.plan, end - 1
        with torch.no_grad():
            x = _resample(torch.view_as_complex(self.p.detach()) * self.sf, plan.full)
            self.model = self.full_model
            if plan.period:
                new = _shrink_wrap(x, self._sigma(it), self.params["shrink_wrap_threshold"], self.kernels)
            else:
                new = _resample_support(self.support, plan.full)
            self._set_support(new, it)
            self._confine(torch.view_as_real(x))
            self.p = _leaf(x)
        self._measure_gain()
        self.trace.support[it] = self.frac
        self._start_phase(feedback=self.trace.done < plan.n_fb)
        self.ref_loss = None     # the loss changes meaning with the grid
        if end >= plan.next_sw:
            plan.next_sw = plan.after(end, plan.period)

    # ---------------------------------------------------------------- the result

    def _result(self) -> State:
        plan, ctx = self.plan, self.ctx
        with torch.no_grad():
            xd = torch.view_as_complex(self.p.detach().clone())
            self._confine(torch.view_as_real(xd))
            support = self.support
            if self.model is not self.full_model:      # stopped inside the coarse stage
                xd = _resample(xd, plan.full)
                support = _resample_support(support, plan.full)
                xd = xd * support
            s = self.full_model.scale(torch.view_as_real(xd), self.kernels)
            obj = _fftshift(xd.mul_(s)).to(torch.complex64).contiguous()
            sup = _fftshift(support).to(torch.uint8).contiguous()
        records = self.trace.records(ctx.step, self.name, plan.coarse, plan.n_coarse)
        if len(records) < plan.n:
            ctx.logger.info("step %d (%s): the loss reached a plateau; stopped after %d of %d iterations",
                            ctx.step, self.name, len(records), plan.n)
        be = ctx.backend
        return State.after(self.state, _from_torch(obj, be), _from_torch(sup, be).astype(bool), records)
