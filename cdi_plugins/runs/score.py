"""What ranks runs: chi^2, chi^2 on the free pixels, and the free Poisson log-likelihood (PyNX's LLK_free).

The free log-likelihood is computed from an object as it stands (one FFT), not inside a solver's loop, so
every step of any plugin gets it without a change to its kernel.
"""

from __future__ import annotations

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["SELECT", "free_llk", "run_score", "metric_of"]

SELECT = ("auto", "chi2", "chi2_free", "llk_free")
"""Metrics that rank runs (``select`` in a recipe, ``ga.metric``); ``auto``: chi2_free with free pixels, else chi2."""


def free_llk(obj, intensity, free, *, threads: int = 1) -> float:
    """Poisson log-likelihood of the held-out (free) pixels, normalised per free pixel as PyNX does.

    With ``I_calc = |F[obj]|^2`` (``F = fftn(ifftshift(obj))``, no normalisation, as everywhere here) and
    ``I_obs`` the measured counts, each free pixel adds PyNX's ``LLKPoisson``: ``I_calc`` where
    ``I_obs <= 0.1`` and ``I_calc - I_obs + I_obs log(I_obs / I_calc)`` elsewhere; the sum is divided by
    the number of free pixels.  It is 0 for a perfect model of noise-free data; for Poisson counts drawn
    from the model it is about 0.5 per bright pixel (half the expected chi^2 of one degree of freedom)
    and less on dark ones.  The free pixels were never constrained, so the value does not reward
    over-fitting the noise.  Meaningful on photon counts (not rescaled data).

    Parameters
    ----------
    obj : ndarray of complex, centred
    intensity : ndarray of float, centred (Bragg peak at ``n // 2``)
    free : ndarray of bool
        The free pixels (``Problem.free``).
    threads : int
        FFT threads.

    Returns
    -------
    float
    """
    import scipy.fft
    free = np.asarray(free, dtype=bool)
    n = int(free.sum())
    if n == 0:
        raise CDIError("the free log-likelihood needs free pixels (data.free_fraction > 0)")
    o = np.asarray(obj).astype(np.complex64, copy=False)
    far = scipy.fft.fftn(scipy.fft.ifftshift(o), workers=threads)
    free_f = np.fft.ifftshift(free)
    calc = np.abs(far[free_f]).astype(np.float64) ** 2
    obs = np.fft.ifftshift(np.asarray(intensity))[free_f].astype(np.float64)  # same order
    bright = obs > 0.1
    llk = calc.copy()
    c = np.maximum(calc[bright], np.finfo(np.float64).tiny)
    llk[bright] = c - obs[bright] + obs[bright] * np.log(obs[bright] / c)
    return float(llk.sum() / n)


def metric_of(select: str, history: list) -> str:
    """The history key that *select* ranks by (``auto``: chi2_free when the history has it, else chi2)."""
    if select != "auto":
        return select
    return "chi2_free" if history and "chi2_free" in history[-1] else "chi2"


def run_score(history: list, select: str = "auto") -> float:
    """The final value of the metric *select* in a run's *history* (lower is better; inf when missing)."""
    if not history:
        return float("inf")
    return float(history[-1].get(metric_of(select, history), float("inf")))
