"""The AD refiner's optimisers behind one interface, and the table the ``optimizer`` parameter reads.

Adam (default; one evaluation per iteration; optional cosine decay of the
learning rate; the refiner's own update, see :class:`_Adam`), L-BFGS with a
strong-Wolfe line search (one *iteration* is one evaluation of the loss and its
gradient, line-search trials included, so that an iteration costs the same FFT
work for every optimiser and for ER/HIO), and ``gd``: gradient descent in the
loss's own step ``eta`` (see ``_Model.modulus``) with Nesterov momentum, which
for the amplitude loss, learning rate 1 and no momentum is exactly ER.  On the
refiner's CPU fast path gd's update is one numba pass over the support's voxels.

Every optimiser is an :class:`Optimizer`: the refiner calls
:meth:`Optimizer.iterate` once per turn of its loop and
:meth:`Optimizer.support_changed` when shrink-wrap changes the support.  The
optimisers reach the loss only through an *objective* (the refiner), which
offers ``evaluate()`` and ``own_step()``, see :meth:`Optimizer.iterate`.
:data:`TABLE` maps each name to its class; the ``optimizer`` parameter's
choices and documentation, the default learning rates and the parameters an
optimiser adds (gd's ``momentum``) all derive from it, so that adding an
optimiser is adding its class to the table.

This module does not import torch (the plugin reads the table when it
registers); the optimisers get the torch module from their caller.
"""

from __future__ import annotations

import math

import numpy as np

from cdi_plugins.core import Param

# Adam's eps, in the units of the gradient of loss x support size (median |gradient| per voxel:
# ~0.1 from a random start, ~1e-4 at the noise floor of 1e8-count data, ~1e-5 at an exact
# solution): gradients well below it count as zero, so an object already at the minimum is not
# kicked by the normalised steps Adam takes from noise-level gradients (chi^2 from the noise-free
# truth rose 300x within the first iterations with eps = 1e-8, 3x with 1e-3), while convergence
# from random starts, HIO or a network's guess measured the same.
ADAM_EPS = 1e-3


class Optimizer:
    """What the refiner asks of an optimiser.

    Class attributes describe it for the ``optimizer`` parameter: ``default_lr`` (the learning
    rate when the recipe sets none), ``title`` (its name in prose), ``doc`` (its entry in the
    parameter's documentation) and ``params`` (parameters only it reads, listed after
    ``learning_rate``).
    """

    default_lr: float = 1.0
    title: str = ""
    doc: str = ""
    params: tuple = ()

    @classmethod
    def create(cls, torch, p, lr, params: dict) -> "Optimizer":
        """A fresh optimiser of the parameter tensor *p*, learning rate *lr*, the step's *params*."""
        return cls(torch, p, lr)

    def iterate(self, objective, lr: float, budget: int) -> None:
        """One turn of the refiner's loop at learning rate *lr*.

        ``objective.evaluate()`` evaluates the loss at the parameters, leaves its gradient (times
        the support size, projected onto the support) in ``p.grad``, records the iteration and
        returns that scaled loss; ``objective.own_step()`` is the step ``eta`` of the latest
        evaluation in the same scale.  Most optimisers evaluate once; one that runs several
        evaluations per call (L-BFGS) stops after *budget*, the iterations left before the
        refiner next needs the host.  It is not named ``step``: :class:`_Adam` keeps torch's
        ``step()`` for its bare update.

        The refiner also offers ``objective.kernels``: None, or on its CPU fast path the numba
        kernels (algorithms/ad/_kernels.py), with ``objective.support_idx``, the support's flat
        indices; ``evaluate(project=False)`` leaves the gradient unprojected (gd's fused step uses
        only the support's voxels).  An optimiser may ignore both.
        """
        raise NotImplementedError

    def support_changed(self, mask, confine=None) -> "Optimizer":
        """The optimiser to go on with after the support changed (*mask*: the new one, real view).

        Pixels leaving the support lose their momentum (``exp_avg``), as they lose their value;
        pixels joining it start from zero.  *confine*, when given, zeroes a tensor shaped like the
        parameters outside the support in place (the refiner's faster way than multiplying by *mask*).
        """
        for st in self.state.values():
            if "exp_avg" in st:
                if confine is not None:
                    confine(st["exp_avg"])
                else:
                    st["exp_avg"].mul_(mask)
        return self


class _Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) on one parameter tensor, the update of ``torch.optim.Adam``.

    Not ``torch.optim``: the first ``step`` of any torch optimizer imports ``torch._dynamo``,
    which took 2-4 s here, longer than a whole NN -> AD pipeline at 64^3.  The update uses
    torch's fused Adam kernel when this build has it (one pass over the parameters) and plain
    in-place tensor operations otherwise; a test checks both against ``torch.optim.Adam``.
    ``param_groups[0]["lr"]`` and ``state[...]["exp_avg"]`` behave as in torch's optimizers.
    """

    # dimensionless (the object has rms 1 in the support): found by experiment on simulated 64^3
    # crystals, 0.02 polishes HIO or a network's guess in 100-300 iterations for every loss
    default_lr = 0.02
    title = "Adam"
    doc = "adam"

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

    def iterate(self, objective, lr, budget):
        self.param_groups[0]["lr"] = lr
        objective.evaluate()
        self.step()

    def step(self):
        """The Adam update from the gradient in ``p.grad`` (``torch.optim.Adam.step``)."""
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


class _LBFGS(Optimizer):
    """``torch.optim.LBFGS`` with a strong-Wolfe line search, run in calls of up to *budget* evaluations.

    One call runs up to the refiner's next boundary (report, plateau check, shrink-wrap, end of
    the coarse stage); the curvature history is kept across calls and dropped when the support or
    the grid changes.  No tolerance stops it: the refiner's plateau test does.
    """

    default_lr = 1.0            # the step its line search accepts
    title = "L-BFGS"
    doc = "lbfgs (strong-Wolfe line search)"

    def __init__(self, torch, p, lr):
        self.torch, self.p, self.lr = torch, p, lr
        self.opt = torch.optim.LBFGS([p], lr=lr, max_iter=1, max_eval=1, history_size=20, tolerance_grad=0.0,
                                     tolerance_change=0.0, line_search_fn="strong_wolfe")

    def iterate(self, objective, lr, budget):
        for g in self.opt.param_groups:
            g["max_iter"], g["max_eval"] = budget, budget
            g["lr"] = lr
        self.opt.step(objective.evaluate)

    def support_changed(self, mask, confine=None):
        return _LBFGS(self.torch, self.p, self.lr)     # the curvature pairs belong to the old objective


class _GD(Optimizer):
    """Gradient descent in the loss's own step, with Nesterov momentum.

    The step ``eta`` that turns the gradient into ``x - P(x)`` (the modulus "projection" the loss
    implies) is known at every evaluation, so ``learning_rate`` 1 without momentum is exactly
    error reduction (ER) for the amplitude loss; momentum accelerates it.
    """

    default_lr = 1.0            # ER's step
    title = "gd"
    doc = "gd (gradient descent in the loss's own step, with Nesterov momentum)"
    params = (Param("momentum", "float", 0.5,
                    "gd: Nesterov momentum (0: plain steps; with learning_rate 1, ER)", low=0, high=1,
                    high_open=True),)

    @classmethod
    def create(cls, torch, p, lr, params):
        return cls(torch, p, lr, params["momentum"])

    def __init__(self, torch, p, lr, momentum):
        self.torch, self.p, self.mu = torch, p, momentum
        self.param_groups = [{"lr": lr}]
        self.v = torch.zeros_like(p)
        self.state = {0: {"exp_avg": self.v}}      # masked with the support like Adam's

    def iterate(self, objective, lr, budget):
        self.param_groups[0]["lr"] = lr
        kernels = getattr(objective, "kernels", None)
        if kernels is None:
            objective.evaluate()
            self.step(objective.own_step())
            return
        # the CPU fast path: one numba pass over the support's voxels (p and v are zero elsewhere, so
        # the gradient is not projected first)
        objective.evaluate(project=False)
        kernels.gd(self.p.detach().numpy().reshape(-1), self.p.grad.numpy().reshape(-1), self.v.numpy().reshape(-1),
                   objective.support_idx, np.float32(objective.own_step() * -float(lr)), np.float32(self.mu))

    def step(self, scale):
        """Move by ``-lr * scale`` times the gradient in ``p.grad``, plus momentum."""
        with self.torch.no_grad():
            # the step g = k * grad, never stored
            k = self.torch.as_tensor(scale * -float(self.param_groups[0]["lr"]), dtype=self.p.dtype,
                                     device=self.p.device)
            self.v.mul_(self.mu).addcmul_(self.p.grad, k)
            self.p.addcmul_(self.p.grad, k).add_(self.v, alpha=self.mu)


#: The optimisers by name, in the order the ``optimizer`` parameter lists them.
TABLE: dict[str, type[Optimizer]] = {"adam": _Adam, "lbfgs": _LBFGS, "gd": _GD}
OPTIMIZERS = tuple(TABLE)


def _either(words) -> str:
    """'a', 'a or b', 'a, b or c'."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def optimizer_doc() -> str:
    """The ``optimizer`` parameter's documentation: each optimiser's ``doc``."""
    return _either(cls.doc for cls in TABLE.values())


def titles() -> str:
    """The optimisers' names in prose ('Adam, L-BFGS or gd')."""
    return _either(cls.title for cls in TABLE.values())


def default_lr_doc() -> str:
    """The default learning rates in words ('0.02 for adam, 1 for lbfgs and gd')."""
    by_lr: dict[float, list[str]] = {}
    for name, cls in TABLE.items():
        by_lr.setdefault(cls.default_lr, []).append(name)
    return ", ".join(f"{lr:g} for {' and '.join(names)}" for lr, names in by_lr.items())


def optimizer_params() -> list[Param]:
    """The parameters the optimisers add, in table order."""
    return [p for cls in TABLE.values() for p in cls.params]
