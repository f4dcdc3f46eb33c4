"""``nn``: the 3D-CDI-NN neural predictor (Chan et al., Appl. Phys. Rev. 8, 021407, 2021) as a step.

The step works on a pattern of any size: it estimates the oversampling from the intensity
autocorrelation, crops the pattern around the Bragg peak and interpolates it onto the network's 32^3
grid so that the smallest per-axis oversampling equals the one the weights were trained at, predicts
amplitude and phase, and maps the object back onto the data's own grid by Fourier interpolation.  The
returned State holds that object (scaled to the measured photon count) and a support, so a following
HIO/ER/AD step continues at full resolution.

The oversampling is measured with the ``"smoothed"`` preset of :func:`cdi_plugins.compute.fourier.oversampling`
(the one the weights were trained with), not the ``"blob"`` preset behind the "oversampling estimate" that
``cdi run`` prints, so the step's figures (in its history record) read higher than the printed ones.

This module reaches the framework only through its public API (``cdi_plugins`` and ``cdi_plugins.compute``),
exactly as a third-party plugin would; the network is in :mod:`.network`, the grid mapping in
:mod:`.mapping`, training in :mod:`.training`.
"""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from cdi_plugins.compute.backend import step_threads, torch_threads
from cdi_plugins.core import AlgorithmSpec, CDIError, Param, State, hookimpl

DEFAULT_WEIGHTS = "au32_w025_ft2"   # au32_w025_ft fine-tuned (configs/nn_finetune2_cpu.yaml)
# what `cdi adapt` starts from by default: the weights its measured before/after tables were made with
# (au32_w025_ft2 is a fine-tune of it that ties it on the held-out set)
ADAPT_FROM = "au32_w025_ft"

PARAMS = [
    Param("weights", "str", DEFAULT_WEIGHTS, "built-in weights name or a .pt file written by `cdi train`",
          reads_file=True),
    Param("device", "str", "auto", "where the network runs: auto (CUDA if available), cpu or cuda",
          choices=("auto", "cpu", "cuda")),
    Param("support_threshold", "float", 0.15,
          "support = predicted amplitude above this fraction of its maximum (loose: HIO needs the whole crystal)",
          low=0, high=1, low_open=True, high_open=True),
    Param("oversampling", "float", None,
          "smallest-axis oversampling of the data (null: estimated from the autocorrelation)",
          low=1.0, low_open=True, nullable=True),
    Param("target_oversampling", "float", None,
          "oversampling fed to the network (null: the value recorded in the weights)", low=1.0, low_open=True,
          nullable=True),
    Param("threads", "int", None,
          "torch CPU threads for the network (null: as many as the recipe's FFTs use for this array size, "
          "as the ad step does)", low=1, nullable=True),
]

_models: dict = {}
_lock = threading.Lock()


def _model(weights: str, device: str):
    from cdi_plugins.algorithms.nn.network import load_weights, onednn_inference, resolve_device
    dev = resolve_device(device)
    key = (weights, dev)
    with _lock:
        if key not in _models:
            model, meta = load_weights(weights, dev)
            if dev == "cpu":
                import torch
                # oneDNN for every convolution of a single prediction (PyTorch's heuristic sends them
                # to a generic loop 5x slower here), in the channels-last layout it is fastest in
                model = onednn_inference(model.to(memory_format=torch.channels_last_3d))
            _models[key] = (model, meta)
    return _models[key] + (dev,)


def predict(intensity, mask=None, *, weights: str = DEFAULT_WEIGHTS, device: str = "auto",
            oversampling=None, target_oversampling=None, threads=None) -> dict:
    """Predict the object of a centred pattern of any shape; returns a dict.

    Keys: ``obj`` (complex64 on the data grid, unit-ish amplitude), ``amplitude`` and ``phase`` (the raw
    32^3 prediction), ``input`` (the 32^3 network input), ``crop`` (pattern pixels kept per axis),
    ``oversampling`` (per axis: the ``"smoothed"`` preset of :func:`cdi_plugins.compute.fourier.oversampling`,
    higher than the ``"blob"`` estimate ``cdi run`` prints), ``target`` (fed to the network), ``seconds``
    (network only), ``timings`` (seconds of ``prepare``: the oversampling estimate and the mapping onto the
    network grid; ``network``; ``resample``: back onto the data grid).  *threads*: torch CPU threads for
    the call (None: torch's current setting).
    """
    with torch_threads(threads):
        return _predict(intensity, mask, weights, device, oversampling, target_oversampling)


def network_input(inten, mask, meta: dict, oversampling=None, target_oversampling=None) -> tuple:
    """``(x, crop, oversampling per axis, target)``: the float32 pattern *inten* on the network's grid, as the
    step feeds it (the oversampling estimated, or scaled so its smallest axis is *oversampling*; resampled to
    the weights' target).  `cdi adapt` prepares its patterns with this too."""
    from cdi_plugins.algorithms.nn.mapping import OVERSAMPLING_PRESET, to_network
    from cdi_plugins.compute.fourier import oversampling as estimate
    size = int(meta["arch"]["size"])
    target = float(target_oversampling or meta.get("oversampling_target") or 2.0)
    os_ = estimate(inten, mask, preset=OVERSAMPLING_PRESET)
    if not all(math.isfinite(o) for o in os_):
        raise CDIError("cannot estimate the oversampling: the pattern is zero everywhere it is measured")
    if oversampling is not None:
        scale = float(oversampling) / min(os_)
        os_ = tuple(o * scale for o in os_)
    x, c, _ = to_network(inten, mask, target=target, size=size, oversampling=os_)
    return x, c, os_, target


def _predict(intensity, mask, weights, device, oversampling, target_oversampling) -> dict:
    import time

    import torch

    from cdi_plugins.algorithms.nn.mapping import from_network
    t_start = time.perf_counter()
    model, meta, dev = _model(weights, device)
    inten = np.asarray(intensity, dtype=np.float32)
    x, c, os_, target = network_input(inten, mask, meta, oversampling, target_oversampling)
    with torch.no_grad():
        t0 = time.perf_counter()
        xt = torch.from_numpy(x)[None, None].to(dev)
        if dev == "cpu":
            xt = xt.contiguous(memory_format=torch.channels_last_3d)
        a, p = model(xt)
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    t_back = time.perf_counter()
    a, p = a[0].cpu().float(), p[0].cpu().float()
    amp, phase = a.numpy(), p.numpy()
    obj32 = torch.polar(a, p).numpy()                      # amp e^{i phase}, complex64
    obj = from_network(obj32, inten.shape, c)
    timings = {"prepare": t0 - t_start, "network": dt, "resample": time.perf_counter() - t_back}
    return {"obj": obj, "amplitude": amp, "phase": phase, "input": x, "crop": c, "oversampling": os_,
            "target": target, "seconds": dt, "timings": timings}


def _threads(params, problem, backend):
    """torch threads for the network: the parameter, else what the recipe's FFTs use for this size."""
    return step_threads(backend, problem.intensity.size, params.get("threads"))


def guess_chi2(obj, intensity, mask=None) -> float:
    """:func:`cdi_plugins.compute.metrics.chi2` of the step's guess, on torch's FFT (several times faster
    than SciPy's on one thread), with no shifts: they change only the phase of the far field, and
    the pattern is moved into the FFT's order instead.  Equal to it up to float32 rounding."""
    import torch
    f = torch.fft.fftn(torch.from_numpy(np.ascontiguousarray(obj, dtype=np.complex64))).numpy()
    fabs = np.abs(f)
    amp = np.sqrt(np.maximum(np.fft.ifftshift(np.asarray(intensity, dtype=np.float32)), 0.0))
    if mask is not None and np.any(mask):
        measured = ~np.fft.ifftshift(np.asarray(mask, dtype=bool))
        amp, fabs = amp[measured], fabs[measured]
    denom = float(np.sum(amp * amp, dtype=np.float64))
    if not denom > 0.0:
        raise CDIError("the measured intensity sums to zero; chi^2 is undefined")
    fabs -= amp
    return float(np.sum(fabs * fabs, dtype=np.float64) / denom)


def run_nn(problem, state, params, ctx):
    threads = _threads(params, problem, ctx.backend)
    pred = predict(problem.intensity, problem.mask, weights=params["weights"], device=params["device"],
                   oversampling=params["oversampling"], target_oversampling=params["target_oversampling"],
                   threads=threads)
    obj = pred["obj"]
    amp = np.abs(obj)
    if not np.isfinite(obj).all() or amp.max() <= 0:
        raise CDIError("the network predicted an empty object; check that the Bragg peak is at the array "
                       "centre and the pattern is oversampled", f"step {ctx.step} (nn)")
    support = amp > params["support_threshold"] * amp.max()
    # Parseval: give the prediction the energy of the measured pattern (sum |F|^2 = N sum |obj|^2)
    measured = ~problem.mask
    energy = float(np.sum(problem.intensity[measured], dtype=np.float64))
    own = float(np.sum(amp.astype(np.float64) ** 2)) * obj.size
    if own > 0:
        obj = (obj * np.float32(math.sqrt(energy / own))).astype(np.complex64)
    with torch_threads(threads):
        c2 = guess_chi2(obj, problem.intensity, problem.mask)
    ctx.logger.info("nn: oversampling (smoothed autocorrelation) %s -> crop %d -> %d^3 at %.2f, "
                    "network %.1f ms",
                    ", ".join(f"{o:.2f}" for o in pred["oversampling"]), pred["crop"], pred["input"].shape[0],
                    pred["target"], pred["seconds"] * 1e3)
    ctx.progress(step=ctx.step, algorithm="nn", iteration=1, total=1, chi2=c2)
    record = {"step": ctx.step, "algorithm": "nn", "iteration": 1, "chi2": c2,
              "support_fraction": float(support.mean()),
              "oversampling": [float(o) for o in pred["oversampling"]], "crop": int(pred["crop"]),
              "network_seconds": float(pred["seconds"]),
              "prepare_seconds": float(pred["timings"]["prepare"]),
              "resample_seconds": float(pred["timings"]["resample"])}
    be = ctx.backend
    return State.after(state, be.asarray(obj), be.asarray(support), [record])


def _unavailable() -> str | None:
    # find_spec, not import: registering the plugin must not pay for importing torch (~2 s)
    import importlib.util
    if importlib.util.find_spec("torch") is None:
        return "needs PyTorch: pip install torch"
    return None


def specs() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="nn", kind="predictor",
        summary="3D-CDI-NN (Chan et al. 2021): amplitude and phase from sqrt(I) in one network pass",
        params=PARAMS, run=run_nn, backends=("numpy", "cupy"), unavailable=_unavailable(),
        check=_check_weights, preload=("torch",))]


def _check_weights(params: dict) -> None:
    """`cdi validate` finds a misspelt weights name or a missing file before anything runs."""
    from cdi_plugins.algorithms.nn.network import builtin_weights
    w = params["weights"]
    known = builtin_weights()
    if w not in known and not os.path.isfile(w):
        raise CDIError(f"no such weights file or built-in name: {w!r} (built-in: {', '.join(known) or 'none'})")


@hookimpl
def cdi_register_algorithms(register):
    for spec in specs():
        register(spec)


@hookimpl
def cdi_register_commands(register):
    from cdi_plugins.algorithms.nn.commands import commands
    for spec in commands():
        register(spec)
