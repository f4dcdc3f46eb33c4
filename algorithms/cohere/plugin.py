"""cohere-core's own reconstruction as a registered step (``algorithm: cohere``).

cohere (APS; PyPI ``cohere-core``) has no plugin system, so this adapter
reaches into its controller: it builds a ``cohere_core.controller.phasing.Rec``
on a temporary data file, lets cohere build its iteration flow from the
config_rec-style parameters, replaces cohere's time-seeded random start with
ours (seeded by ``ctx.rng``, or the incoming State), runs cohere's flow
functions one by one (so that progress can be reported) and converts the result
back.  It is pinned to the cohere-core version in :data:`COHERE_VERSION`;
``tests/test_cohere.py`` holds the adapter tests that catch a change of those
internals.

Conventions normalised at the boundary:

* cohere's data file holds amplitudes sqrt(I), centred (it fftshifts them on load);
* its forward model is ``ifftn`` (unnormalised), ours ``fftn``, so for the same
  data its object is the complex conjugate of ours: ``obj = conj(image)``;
* its error ``sum((|A| - d)^2) / sum(d^2)`` is our chi^2 whenever every pixel
  is constrained (no mask, no free pixels) and no low-pass filter or partial
  coherence is active;
  otherwise chi^2 is computed our way from cohere's own |A| (no extra FFT).

cohere has no mask: masked pixels (zero intensity in the Problem) are
constrained to zero by it.  A warning is logged when the Problem has a mask.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile

import numpy as np

from cdi_plugins.core import AlgorithmSpec, CDIError, Param, State, hookimpl

COHERE_VERSION = "4.5.4"
INSTALL_HINT = f"pip install 'cdi-plugins[cohere]' (cohere-core=={COHERE_VERSION})"


def cohere_status() -> str | None:
    """None when cohere-core is installed, else why not (with the install hint).

    Looks at the installed distribution without importing it: registering the plugin must not pay for
    importing cohere-core and its dependencies (~1 s).  A cohere-core that is installed but fails to
    import is reported when a step runs (:func:`run`).
    """
    import importlib.metadata
    import importlib.util
    try:
        found = importlib.util.find_spec("cohere_core") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"cohere-core is not installed; {INSTALL_HINT}"
    try:
        v = importlib.metadata.version("cohere-core")
    except importlib.metadata.PackageNotFoundError:
        v = "?"
    if v != COHERE_VERSION:
        # not fatal: the adapter tests say whether the seam still fits
        import logging
        logging.getLogger("cdi_plugins.cohere").warning(
            "cohere-core %s is installed; the adapter was written for %s", v, COHERE_VERSION)
    return None


# config_rec keys (same names, same meaning as in cohere's conf/config_rec)
PARAMS = [
    Param("algorithm_sequence", "str", "3*(20*ER+180*HIO)+20*ER",
          "cohere's sequence: ER, HIO, SF, RAAR, ERpc, HIOpc (pc: partial coherence), e.g. 20*ER+180*HIO"),
    Param("hio_beta", "float", 0.9, "HIO feedback", low=0, high=1, low_open=True),
    Param("raar_beta", "float", 0.45, "RAAR relaxation", low=0, high=1, low_open=True),
    Param("initial_support_area", "list", [0.5, 0.5, 0.5],
          "box support (fraction per axis) when there is no incoming State"),
    Param("shrink_wrap_trigger", "list", [1, 1], "[start, step(, stop)]: when to update the support",
          nullable=True),
    Param("shrink_wrap_type", "str", "GAUSS", "support update", choices=("GAUSS",)),
    Param("shrink_wrap_threshold", "float", 0.1, "relative threshold of the smoothed |obj|",
          low=0, high=1, low_open=True, high_open=True),
    Param("shrink_wrap_gauss_sigma", "float", 1.0, "Gaussian smoothing (pixels)", low=0, low_open=True),
    Param("twin_trigger", "list", None, "[iteration]: zero half of the array once (twin removal; 3-D only)",
          nullable=True),
    Param("twin_halves", "list", [0, 0], "which halves twin removal keeps"),
    Param("phc_trigger", "list", None, "[start, step(, stop)]: phase constraint", nullable=True),
    Param("phc_phase_min", "float", -1.57, "phase constraint lower bound (rad)"),
    Param("phc_phase_max", "float", 1.57, "phase constraint upper bound (rad)"),
    Param("pc_interval", "int", None, "partial coherence: update the kernel every N iterations "
          "(use ERpc/HIOpc in the sequence)", low=1, nullable=True),
    Param("pc_type", "str", "LUCY", "partial coherence method", choices=("LUCY",)),
    Param("pc_LUCY_iterations", "int", 20, "Richardson-Lucy iterations per kernel update", low=1),
    Param("pc_normalize", "bool", True, "normalise the coherence kernel"),
    Param("pc_LUCY_kernel", "list", [16, 16, 16], "coherence kernel size"),
    Param("lowpass_filter_trigger", "list", None, "[start, step, stop]: low-pass filter the data "
          "(cohere 4.5.4 fails with start > 0)", nullable=True),
    Param("lowpass_filter_range", "list", None, "[sigma_start(, sigma_end)] of the low-pass filter",
          nullable=True),
    Param("average_trigger", "list", None, "[start, step]: average amplitudes over these iterations",
          nullable=True),
    Param("processing", "str", "np", "cohere's array library: np (NumPy), cp (CuPy), torch",
          choices=("np", "cp", "torch")),
    Param("device", "int", -1, "GPU id for cp/torch (-1: CPU)", low=-1),
    Param("continue_dir", "str", None, "start from a cohere results folder (image.npy, support.npy, "
          "coherence.npy) instead of the incoming State / a random start", nullable=True, reads_file=True),
]

# parameters that are ours, not config_rec keys
ADAPTER_KEYS = ("processing", "device")
_TRIGGERS = ("shrink_wrap_trigger", "twin_trigger", "phc_trigger", "lowpass_filter_trigger", "average_trigger")


def _check(params: dict) -> None:
    from cdi_plugins.core import parse_sequence
    seq = params["algorithm_sequence"]
    for name, _ in parse_sequence(seq.replace(".", "_")):
        base = name.split("_")[0]
        if base not in ("ER", "HIO", "SF", "RAAR", "ERpc", "HIOpc"):
            raise CDIError(f"algorithm_sequence: cohere knows ER, HIO, SF, RAAR, ERpc, HIOpc, not {base!r}")
    if "pc" in seq and params["pc_interval"] is None:
        raise CDIError("ERpc/HIOpc in algorithm_sequence need pc_interval")
    if (params["lowpass_filter_trigger"] is None) != (params["lowpass_filter_range"] is None):
        raise CDIError("lowpass_filter_trigger and lowpass_filter_range go together")
    if params["lowpass_filter_trigger"] is not None and len(params["lowpass_filter_trigger"]) != 3:
        raise CDIError("lowpass_filter_trigger must be [start, step, stop]")
    if params["processing"] == "np" and params["device"] != -1:
        raise CDIError("device must be -1 with processing: np")
    if params["processing"] == "cp" and params["device"] < 0:
        raise CDIError("processing: cp runs on a GPU: give its id as device (0 for the first)")


def config_rec_params(params: dict) -> dict:
    """The config_rec dictionary cohere gets for our validated *params* (unset keys left out)."""
    out = {}
    for key, value in params.items():
        if key in ADAPTER_KEYS or key == "continue_dir" or value is None:
            continue
        if key.startswith("pc_") and params["pc_interval"] is None:
            continue
        if key.startswith("phc_") and params["phc_trigger"] is None:
            continue
        if key == "twin_halves" and params["twin_trigger"] is None:
            continue
        if key.startswith("shrink_wrap_") and params["shrink_wrap_trigger"] is None:
            continue
        out[key] = list(value) if isinstance(value, list) else value
    return out


def _pad_data(amplitude: np.ndarray) -> np.ndarray:
    # cohere moves the centre to the corner with fftshift; ours is ifftshift.  Writing
    # ifftshift(ifftshift(d)) makes cohere's fftshift land on our corner order for odd
    # sizes too (for even sizes it is d itself).
    return np.fft.ifftshift(np.fft.ifftshift(amplitude))


def run(problem, state, params, ctx):
    why = cohere_status()
    if why:
        raise CDIError(why)
    try:
        import cohere_core.controller.phasing as ph
        import cohere_core.utilities.dvc_utils as dvut
    except Exception as exc:  # ImportError, or anything its import chain raises
        raise CDIError(f"cohere-core is installed but fails to import ({exc.__class__.__name__}: {exc}); "
                       f"{INSTALL_HINT}") from None

    be = ctx.backend
    pkg = params["processing"]
    if problem.mask.any():
        ctx.logger.warning("cohere has no mask: its %d masked pixels are constrained to zero intensity",
                           int(problem.mask.sum()))
    conf = config_rec_params(params)
    unc = problem.unconstrained
    exact_chi = not unc.any() and params["lowpass_filter_trigger"] is None
    # cohere prints (data shape, progress, timings); solvers here never print: keep it for the log
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), np.errstate(divide="ignore", invalid="ignore"):
            return _run(problem, state, params, ctx, ph, dvut, be, pkg, conf, unc, exact_chi)
    finally:
        if printed.getvalue():
            ctx.logger.debug("cohere printed:\n%s", printed.getvalue())


def _run(problem, state, params, ctx, ph, dvut, be, pkg, conf, unc, exact_chi):
    with tempfile.TemporaryDirectory(prefix="cdi_cohere_") as tmp:
        data_file = os.path.join(tmp, "data.npy")
        np.save(data_file, _pad_data(np.sqrt(problem.intensity.astype(np.float64))).astype(np.float32))
        rec = ph.Rec(conf, data_file, pkg, debug=True)
        if rec.init_dev(params["device"]) < 0:
            raise CDIError(f"cohere could not use device {params['device']} with processing {pkg}")
        try:
            rec.init_iter_loop(None)  # a first run: cohere keeps its twin/low-pass/phc triggers active
        except Exception as exc:
            raise CDIError(f"cohere rejected the parameters: {exc.__class__.__name__}: {exc}") from None
        dl = ph.devlib
        # with partial coherence cohere's error is on the blurred model: ours stays on |F|
        exact_chi = exact_chi and not rec.is_pc
        # --- the start: ours, so the run is reproducible (cohere seeds from the clock)
        image = support = coherence = None
        if params["continue_dir"]:
            d = params["continue_dir"]
            try:
                image = np.load(os.path.join(d, "image.npy"), allow_pickle=False)
                if os.path.exists(os.path.join(d, "support.npy")):
                    support = np.load(os.path.join(d, "support.npy"), allow_pickle=False) > 0
                if os.path.exists(os.path.join(d, "coherence.npy")):
                    coherence = np.load(os.path.join(d, "coherence.npy"), allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CDIError(f"cannot read the cohere results folder: {exc}", d) from None
            if image.shape != problem.shape:
                raise CDIError(f"image.npy has shape {image.shape}, the data {problem.shape}", d)
            # a saved image is max-normalised: give it the energy the data says it has (Parseval)
            image = image.astype(np.complex128)
            image *= math.sqrt(float(np.sum(problem.intensity, dtype=np.float64)) /
                               (float(np.vdot(image, image).real) * image.size or 1.0))
        elif state is not None:
            image = np.conj(be.to_numpy(state.obj)).astype(np.complex128)
            support = be.to_numpy(state.support).astype(bool)
        else:
            sup = dl.to_numpy(rec.support) > 0
            shape = problem.shape
            rnd = ctx.rng.random(shape) + 1j * ctx.rng.random(shape)  # cohere's own start, seeded
            image = rnd * float(np.sum(np.abs(rnd) ** 2)) * float(dl.amax(rec.data))  # = dvut.get_norm(rnd) * max
            image *= sup
            support = sup
        rec.ds_image = dl.from_numpy(np.ascontiguousarray(image.astype(np.complex128)), device=rec.dev)
        if support is not None:
            rec.support = dl.from_numpy(np.ascontiguousarray(support.astype(np.int64)), device=rec.dev)
        if coherence is not None and rec.is_pc:
            rec.pc_obj.kernel = dl.from_numpy(coherence, device=rec.dev)

        # --- the flow, one cohere function at a time
        n = rec.iter_no
        chi_ours: list = []
        d_corner = np.fft.ifftshift(np.sqrt(problem.intensity.astype(np.float64)))
        keep = ~np.fft.ifftshift(unc)
        d_keep = dl.from_numpy(np.where(keep, d_corner, 0.0), device=rec.dev)
        keep_dev = dl.from_numpy(keep, device=rec.dev)
        norm = float(np.sum(d_corner[keep] ** 2)) or 1.0
        alg_of_iter: list = []
        support_records: dict = {}
        report_every = max(1, n // 100)
        pc = False
        for f in rec.flow:
            name = f.__name__
            if name in ("modulus", "pc_modulus") and not exact_chi:
                a = dl.absolute(rec.rs_amplitudes)
                r = dl.where(keep_dev, a - d_keep, 0.0)
                chi_ours.append(float(dvut.get_norm(r)) / norm)
            f()
            if name in ("modulus", "pc_modulus"):
                pc = name == "pc_modulus"
            elif name in ("er", "hio", "sf", "raar"):
                alg_of_iter.append({"er": "ER", "hio": "HIO", "sf": "SF", "raar": "RAAR"}[name] + ("pc" if pc else ""))
                it = len(alg_of_iter)
                if it % report_every == 0 or it == n:
                    c = float(rec.errs[-1]) if exact_chi else chi_ours[-1]
                    if not math.isfinite(c):
                        raise CDIError("chi^2 became NaN/inf: the cohere reconstruction diverged",
                                       f"step {ctx.step} (cohere), iteration {it}")
                    ctx.progress(step=ctx.step, algorithm="cohere", iteration=it, total=n, chi2=c)
            elif name == "shrink_wrap_operation":
                support_records[len(alg_of_iter)] = float(dl.sum(rec.support)) / problem.intensity.size
        if dl.hasnan(rec.ds_image):
            raise CDIError("the cohere reconstruction resulted in NaN", f"step {ctx.step} (cohere)")
        if rec.aver is not None:  # what Rec.iterate does after the flow (without its max-normalisation)
            ratio = rec.get_ratio(dl.from_numpy(rec.aver, device=rec.dev), dl.absolute(rec.ds_image))
            rec.ds_image *= ratio / rec.aver_iter
        obj = np.conj(dl.to_numpy(rec.ds_image)).astype(np.complex64)
        sup_out = dl.to_numpy(rec.support) > 0
        errs = [float(e) for e in rec.errs]
    chi = errs if exact_chi else chi_ours
    records = []
    for it in range(len(chi)):
        rec_ = {"step": ctx.step, "algorithm": "cohere", "iteration": it + 1, "chi2": float(chi[it]),
                "cohere_algorithm": alg_of_iter[it] if it < len(alg_of_iter) else "", "cohere_error": errs[it]}
        if it in support_records:
            rec_["support_fraction"] = support_records[it]
        records.append(rec_)
    return State.after(state, be.asarray(obj), be.asarray(sup_out), records)


def spec() -> AlgorithmSpec:
    return AlgorithmSpec(
        name="cohere", kind="external",
        summary=f"cohere-core {COHERE_VERSION}'s own reconstruction (config_rec keys as parameters)",
        params=PARAMS, run=run, backends=("numpy", "cupy"), unavailable=cohere_status(), check=_check)


@hookimpl
def cdi_register_algorithms(register):
    register(spec())


@hookimpl
def cdi_register_commands(register):
    from cdi_plugins.algorithms.cohere.commands import commands
    for spec_ in commands():
        register(spec_)
