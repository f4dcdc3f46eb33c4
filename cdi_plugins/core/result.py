"""What a run returns and what a result file holds."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Result"]


@dataclasses.dataclass(eq=False)
class Result:
    """The outcome of running a recipe on one dataset.

    Attributes
    ----------
    obj : ndarray of complex64
        Reconstructed object, centred, on the host.
    support : ndarray of bool
    history : list of dict
        One record per iteration of every step: ``step`` (1-based), ``algorithm``,
        ``iteration`` (1-based within the step), ``chi2`` and optional extras.
    timings : list of float
        Wall-clock seconds of each step, in order.
    steps : list of dict
        What each step was: ``algorithm``, ``params``, ``seconds``.
    intensity, mask : ndarray
        The data the result was computed from (float32, bool).
    metadata : dict
    truth : ndarray of complex64 or None
        The true object when the data was simulated.
    recipe : str
        The recipe text (YAML) that produced this result.
    dataset : str
        The dataset name within the recipe.
    versions : dict
        Package versions used.
    """

    obj: np.ndarray
    support: np.ndarray
    history: list
    timings: list
    steps: list = dataclasses.field(default_factory=list)
    intensity: np.ndarray | None = None
    mask: np.ndarray | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    truth: np.ndarray | None = None
    recipe: str = ""
    dataset: str = "default"
    versions: dict = dataclasses.field(default_factory=dict)

    @property
    def chi2(self) -> float | None:
        """chi^2 of the object this result holds: the last history record's, or, when the object is the
        average of several runs (``average: k``), the chi^2 of that average; None if nothing ran."""
        if self.metadata.get("average_chi2") is not None:
            return float(self.metadata["average_chi2"])
        return float(self.history[-1]["chi2"]) if self.history else None

    @property
    def runs(self) -> int:
        """Independent runs made (``runs: N``); the history is the kept run's."""
        return int(self.metadata.get("runs", 1) or 1)

    @property
    def iterations(self) -> int:
        """Iterations of the kept run (the history's length)."""
        return len(self.history)

    @property
    def seconds(self) -> float:
        return float(sum(self.timings))

    def error(self) -> float | None:
        """Normalised error against the truth after alignment, or None without a truth."""
        if self.truth is None:
            return None
        from cdi_plugins.compute.metrics import compare_to_truth
        return compare_to_truth(self.obj, self.truth)["error"]
