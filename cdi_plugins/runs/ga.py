"""The genetic algorithm over many runs, as cohere-ui does it, and the recipe's ``ga`` section.

Generation 0 is ``runs`` independent random starts of the recipe's steps (exactly the runs a recipe
without ``ga`` makes).  After each generation the runs are ranked by ``ga.metric``, the worst
``ga.cull[g]`` are dropped and the best object seen so far (the *alpha*) is bred into every survivor:
the alpha is aligned onto the survivor (sub-pixel translation by cross-correlation, twin ``conj(a(-r))``
when it matches better, global phase) and the two are combined (``ga.breed``, cohere's modes); the
child's support is a shrink-wrap of the child (``ga.threshold``, ``ga.sigma``; cohere's
``ga_sw_thresholds``, ``ga_sw_gauss_sigmas``), or the survivor's own support with ``threshold: null``.
The next generation runs the same steps from the children.  The result is the best object of all
generations by the metric.

    runs: 8
    ga: {generations: 3, breed: sqrt_ab, cull: [2, 2], metric: chi2, threshold: 0.1, sigma: 1.0}
"""

from __future__ import annotations

import numpy as np

from cdi_plugins.core.limits import MAX_GENERATIONS
from cdi_plugins.core.params import Param, check_mapping_keys, suggest
from cdi_plugins.errors import CDIError
from cdi_plugins.runs.score import SELECT

__all__ = ["GA_KEYS", "BREED_MODES", "validate_ga", "breed", "child_support", "evolve"]

GA_KEYS = ("generations", "breed", "cull", "metric", "threshold", "sigma")

BREED_MODES = ("sqrt_ab", "sqrt_ab_pa", "sqrt_ab_recip", "b_pa", "2ab_a_b", "2a_b_pa", "max_ab", "max_ab_pa",
               "avg_ab", "avg_ab_pa", "pixel_switch", "none")
"""cohere's breeding modes; a is the aligned alpha, b the survivor, pa/pb their phases (see :func:`breed`)."""

_GENERATIONS = Param("generations", "int", None, "generations (2 or more; 1 is plain runs)", low=2,
                     high=MAX_GENERATIONS, strict=True,
                     message=f"ga.generations must be an integer in [2, {MAX_GENERATIONS}], got {{value!r}}")
_BREED = Param("breed", "str", "sqrt_ab", "", choices=BREED_MODES,
               message="ga.breed must be one of " + ", ".join(BREED_MODES) + "; got {value!r}{suggest}")
_CULL = Param("cull", "int", 0, "", low=0, strict=True,
              message="ga.cull must be an integer >= 0 (or a list of them, one per generation), got {value!r}")
_METRIC = Param("metric", "str", None, "", choices=SELECT, nullable=True,
                message="ga.metric must be one of " + ", ".join(SELECT) + "; got {value!r}{suggest}")
_THRESHOLD = Param("threshold", "float", 0.1, "", low=0, high=1, low_open=True, high_open=True, nullable=True,
                   message="ga.threshold must be a number in (0, 1) or null (keep each run's support), "
                           "or a list of them, got {value!r}")
_SIGMA = Param("sigma", "float", 1.0, "", low=0,
               message="ga.sigma must be a number >= 0 (or a list of them), got {value!r}")


def _per_generation(node: dict, param: Param, n: int, where) -> list:
    """*n* values of *param*: one value for all, or a list of exactly *n* (one per breeding)."""
    value = node.get(param.name, param.default)
    if isinstance(value, list):
        if len(value) != n:
            raise CDIError(f"ga.{param.name} lists {len(value)} value(s); give one, or one per breeding "
                           f"({n}: before each generation after the first)", where(param.name))
        return [param.check(v, where(param.name)) for v in value]
    return [param.check(value, where(param.name))] * n


def validate_ga(node, where, *, runs: int, average: int, free: bool) -> dict | None:
    """The validated ``ga`` section, or None without one.

    Parameters
    ----------
    node : dict or None
        The section as the recipe wrote it.
    where : callable
        ``where(key)`` is the recipe location of ``ga.key`` (``where(None)``: the section).
    runs, average : int
        The dataset's ``runs`` (the population) and ``average``.
    free : bool
        Whether the data holds free pixels (``data.free_fraction > 0``), which the free metrics need.

    Returns
    -------
    dict
        ``generations``; ``breed``, ``threshold``, ``sigma``: one per breeding (generations - 1);
        ``cull``: one per generation but the last; ``metric`` (None: the dataset's ``select``).
    """
    if node is None:
        return None
    check_mapping_keys(node, GA_KEYS, where, "ga must be a mapping (generations: 3, breed: sqrt_ab, cull: [...], ...)")
    if "generations" not in node:
        raise CDIError("ga needs generations (2 or more)", where(None))
    g = _GENERATIONS.check(node["generations"], where("generations"))
    if runs < 2:
        raise CDIError(f"the genetic algorithm breeds several runs; runs = {runs} (give runs: 2 or more)",
                       where(None))
    out = {"generations": g}
    for param in (_BREED, _THRESHOLD, _SIGMA):
        out[param.name] = _per_generation(node, param, g - 1, where)
    out["cull"] = _per_generation(node, _CULL, g - 1, where)
    left = runs - sum(out["cull"])
    if left < 2:
        raise CDIError(f"ga.cull removes {sum(out['cull'])} of {runs} runs; at least two must be left for the "
                       "last generation", where("cull"))
    if average > left:
        raise CDIError(f"average = {average} needs as many runs in the last generation ({left} are left "
                       "after ga.cull)", where("cull"))
    out["metric"] = _METRIC.check(node.get("metric"), where("metric"))
    if out["metric"] in ("chi2_free", "llk_free") and not free:
        raise CDIError(f"ga.metric {out['metric']} needs free pixels: set data.free_fraction (e.g. 0.05)",
                       where("metric"))
    return out


# ------------------------------------------------------------------------------------------ breeding

def _half_phase(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """exp(i (pa + pb) / 2) with pb taken within pi of pa: the phase halfway between a and b.

    cohere writes ``exp(0.5j * (ph_beta + ph_alpha))`` with each phase in (-pi, pi], which is off by pi
    where the two straddle the cut; halving the phase difference instead never is."""
    pa = np.angle(a)
    return np.exp(1j * (pa + 0.5 * np.angle(b * np.conj(a))))


def breed(mode: str, alpha, beta, rng: np.random.Generator | None = None) -> np.ndarray:
    """The child of the best object *alpha* and a run's object *beta* (both centred), in *beta*'s frame.

    *alpha* is first aligned onto *beta*: translation (integer and sub-pixel, by cross-correlation),
    the twin ``conj(alpha(-r))`` when it matches better, and the global phase
    (:func:`~cdi_plugins.compute.metrics.compare_to_truth`).  Then, with a the aligned alpha, b = beta and
    pa, pb their phases (``mode``, as in cohere):

    ``sqrt_ab`` sqrt(|a||b|) exp(i(pa+pb)/2); ``sqrt_ab_pa`` sqrt(|a||b|) exp(i pa); ``sqrt_ab_recip`` the
    same as sqrt_ab on the two far fields; ``b_pa`` |b| exp(i pa); ``2ab_a_b`` 2ab/(a+b);
    ``2a_b_pa`` (2|a|-|b|) exp(i pa); ``max_ab`` max(|a|,|b|) exp(i(pa+pb)/2); ``max_ab_pa``
    max(|a|,|b|) exp(i pa); ``avg_ab`` (a+b)/2; ``avg_ab_pa`` (|a|+|b|)/2 exp(i pa); ``pixel_switch`` each
    pixel from a or b at random (*rng*); ``none`` b unchanged.  (pa+pb)/2 is taken the short way round.

    Returns
    -------
    ndarray of complex64
    """
    from cdi_plugins.compute.metrics import compare_to_truth
    if mode not in BREED_MODES:
        raise CDIError(f"unknown breeding mode {mode!r}{suggest(mode, BREED_MODES)}")
    b = np.asarray(beta).astype(np.complex64)
    if mode == "none":
        return b
    a = compare_to_truth(alpha, b)["aligned"]
    aa, ab = np.abs(a), np.abs(b)
    if mode == "sqrt_ab":
        child = np.sqrt(aa * ab) * _half_phase(a, b)
    elif mode == "sqrt_ab_pa":
        child = np.sqrt(aa * ab) * np.exp(1j * np.angle(a))
    elif mode == "sqrt_ab_recip":
        import scipy.fft
        fa = scipy.fft.fftn(scipy.fft.ifftshift(a))
        fb = scipy.fft.fftn(scipy.fft.ifftshift(b))
        child = scipy.fft.fftshift(scipy.fft.ifftn(np.sqrt(np.abs(fa) * np.abs(fb)) * _half_phase(fa, fb)))
    elif mode == "b_pa":
        child = ab * np.exp(1j * np.angle(a))
    elif mode == "2ab_a_b":
        s = a + b
        tiny = np.abs(s) <= 1e-12 * max(float(aa.max()), float(ab.max()), 1e-30)
        child = np.where(tiny, 0, 2 * a * b / np.where(tiny, 1, s))
    elif mode == "2a_b_pa":
        child = (2 * aa - ab) * np.exp(1j * np.angle(a))
    elif mode == "max_ab":
        child = np.maximum(aa, ab) * _half_phase(a, b)
    elif mode == "max_ab_pa":
        child = np.maximum(aa, ab) * np.exp(1j * np.angle(a))
    elif mode == "avg_ab":
        child = 0.5 * (a + b)
    elif mode == "avg_ab_pa":
        child = 0.5 * (aa + ab) * np.exp(1j * np.angle(a))
    else:  # pixel_switch
        rng = rng if rng is not None else np.random.default_rng(0)
        child = np.where(rng.random(b.shape) > 0.5, b, a)
    return np.asarray(child).astype(np.complex64)


def child_support(child: np.ndarray, threshold: float, sigma: float) -> np.ndarray:
    """Shrink-wrap of a child: Gaussian-smoothed |child| (width *sigma* pixels) above *threshold* x its max."""
    from cdi_plugins.compute.backend import get_backend
    from cdi_plugins.compute.support import shrink_wrap
    be = get_backend("numpy", fft="scipy", threads=1)
    return np.asarray(shrink_wrap(be, np.asarray(child), sigma, threshold), dtype=bool)


def evolve(spec: dict, first: list, run_generation, score, to_host, seed) -> tuple[list, object, dict]:
    """Run the generations of *spec* (:func:`validate_ga`).

    Parameters
    ----------
    spec : dict
    first : list of RunTask
        Generation 0: the independent random starts.
    run_generation : callable
        ``run_generation(tasks, g)`` runs the steps for every task and returns their RunOutcome in order.
    score : callable
        ``score(history)``: lower is better.
    to_host : callable
        Array on the run's backend -> NumPy array.
    seed : int or None
        The recipe's seed; generation g's member k runs with the generator seeded ``[seed, k, g]``.

    Returns
    -------
    (outcomes, alpha, trace)
        The last generation's outcomes, the best outcome of all generations, and ``{"scores": [[...] per
        generation], "best": [best score so far, per generation], "breed": [...], "cull": [...]}``.
    """
    from cdi_plugins.core.state import State
    from cdi_plugins.runs.execute import RunTask
    trace = {"scores": [], "best": [], "breed": list(spec["breed"]), "cull": list(spec["cull"])}
    alpha, alpha_score = None, float("inf")
    tasks = first
    outcomes: list = []
    last = spec["generations"] - 1
    for g in range(spec["generations"]):
        outcomes = run_generation(tasks, g)
        scores = [score(o.state.history) for o in outcomes]
        order = sorted(range(len(outcomes)), key=lambda i: scores[i])
        if alpha is None or scores[order[0]] < alpha_score:
            alpha, alpha_score = outcomes[order[0]], scores[order[0]]
        trace["scores"].append(scores)
        trace["best"].append(alpha_score)
        if g == last:
            break
        keep = order[:len(order) - spec["cull"][g]]
        a = to_host(alpha.state.obj)
        mode, threshold, sigma = spec["breed"][g], spec["threshold"][g], spec["sigma"][g]
        tasks = []
        for k, i in enumerate(keep):
            o = outcomes[i]
            obj = to_host(o.state.obj)
            rng = np.random.default_rng([seed or 0, k, g + 1, 1])
            child = obj.astype(np.complex64) if o is alpha else breed(mode, a, obj, rng)
            support = (to_host(o.state.support).astype(bool) if threshold is None
                       else child_support(child, threshold, sigma))
            tasks.append(RunTask(index=k, seed=[seed or 0, k, g + 1], start=State(obj=child, support=support)))
    return outcomes, alpha, trace
