"""AD: refine the object by reverse-mode automatic differentiation (PyTorch), as 3D-CDI-NN does.

The object is a set of parameters and a loss between the modelled and the
measured diffraction is minimised by gradient descent, the gradient coming from
PyTorch's autograd through the FFT.  The step polishes the output of any other
step (a network's prediction, HIO, ER) and also runs alone from a random start.

The package, one job a module:

* ``plugin`` (this module): the parameters, their checks, the AlgorithmSpec,
  the step's entry point (devices and threads) and the registration;
* ``model``: the forward model and losses (the physics: fitted scale,
  parametrisation, the custom autograd node), total variation, shrink-wrap,
  Fourier interpolation between grids, moves between backend and torch;
* ``optimizers``: Adam, L-BFGS and gd behind one interface, and the table the
  ``optimizer`` parameter is built from;
* ``refiner``: one run -- the coarse stage, the feedback iterations, gradient
  descent, the shrink-wrap schedule, the plateau stop and the history.
* ``_kernels``: the numba kernels of the CPU fast path (no autograd), imported
  by ``model`` only when that path runs (numba is the ``fast`` extra).

Devices: ``cpu`` or ``cuda`` (``auto``: CUDA when torch sees a device).  A
State held by the CuPy backend reaches torch through DLPack without a host
copy and goes back the same way; the data are moved to the device once per
problem and cached.

This package reaches the framework only through its public API, exactly as a
third-party plugin would.  torch is imported when the step runs, not when the
plugin registers, so listing algorithms stays fast: this module and
``optimizers`` do not import it, ``model`` and ``refiner`` do and are imported
by :func:`run`.
"""

from __future__ import annotations

import importlib.util

from cdi_plugins.compute.backend import import_torch, step_threads, torch_threads
from cdi_plugins.core import AlgorithmSpec, CDIError, Param, hookimpl
from cdi_plugins.core.params import check_support_guard, support_guard_params

from cdi_plugins.algorithms.ad import optimizers

NAME = "ad"
#: The losses ``model._Model.modulus`` implements (the ``loss`` parameter's choices).
LOSSES = ("amplitude", "poisson", "max_normalised")


def _optimizer_params() -> list[Param]:
    """``optimizer``, ``learning_rate`` and the optimisers' own parameters, built from ``optimizers.TABLE``."""
    return [
        Param("optimizer", "str", "adam", optimizers.optimizer_doc(), choices=tuple(optimizers.TABLE)),
        Param("learning_rate", "float", None,
              f"step size (null: {optimizers.default_lr_doc()}); with adam about the relative change "
              "of the object per iteration; with gd in units of the loss's own step (1: ER's)",
              low=0, low_open=True, nullable=True),
        *optimizers.optimizer_params(),
    ]


PARAMS = [
    Param("iterations", "int", 500,
          "maximum number of iterations (with lbfgs: evaluations of loss and gradient)", low=1),
    Param("loss", "str", "amplitude",
          "amplitude: Gaussian on sqrt(I); poisson: Poisson deviance; max_normalised: 3D-CDI-NN's "
          "max-normalised amplitude L2", choices=LOSSES),
    *_optimizer_params(),
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
    *support_guard_params(),
    Param("threads", "int", None,
          "torch CPU threads (null: as many as the recipe's FFTs use for this array size)",
          low=1, nullable=True),
]

SUMMARY = ("Automatic-differentiation refinement (PyTorch): fit the object to the data by "
           + optimizers.titles())


def _torch_missing() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed; pip install torch"
    return None


def _check(params: dict) -> None:
    check_support_guard(params)
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


def run(problem, state, params, ctx):
    """The step: a :class:`~cdi_plugins.algorithms.ad.refiner.Refiner` run with torch's CPU threads set."""
    # torch first through the framework (passive OpenMP wait, its thread count handed to MKL), then the
    # refiner, which imports it too: only when a step runs
    import_torch()
    from cdi_plugins.algorithms.ad.refiner import Refiner
    device = _device(params["device"])
    # as the framework's FFTs do unless the recipe says otherwise: one thread for small arrays (torch's
    # OpenMP threads on a busy 2-core machine made a 64^3 FFT pair 15x slower than one thread)
    threads = step_threads(ctx.backend, problem.intensity.size, params["threads"])
    with torch_threads(threads if device.type == "cpu" else None):
        return Refiner(problem, state, params, ctx, device, NAME).run()


def specs() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(name=NAME, kind="refiner", summary=SUMMARY, params=PARAMS, run=run,
                          backends=("numpy", "cupy"), unavailable=_torch_missing(), check=_check,
                          preload=("torch",))]


@hookimpl
def cdi_register_algorithms(register):
    for spec in specs():
        register(spec)
