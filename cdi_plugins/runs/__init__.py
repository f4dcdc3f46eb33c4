"""Many runs of one dataset: how they are scored, bred (the genetic algorithm) and spread over processes.

:mod:`~cdi_plugins.runs.score` (chi^2, chi^2 on the free pixels, the free Poisson log-likelihood),
:mod:`~cdi_plugins.runs.ga` (the recipe's ``ga`` section and breeding as cohere-ui does it) and
:mod:`~cdi_plugins.runs.execute` (the steps of one run, in this process or in worker processes).
The pipeline decides what to run; this package knows no algorithm by name.
"""

from cdi_plugins.runs.execute import RunTask, load_preloads, run_steps, run_tasks, resolve_workers
from cdi_plugins.runs.ga import GA_KEYS, BREED_MODES, breed, validate_ga
from cdi_plugins.runs.score import SELECT, free_llk, run_score

__all__ = ["RunTask", "load_preloads", "run_steps", "run_tasks", "resolve_workers", "GA_KEYS", "BREED_MODES", "breed",
           "validate_ga", "SELECT", "free_llk", "run_score"]
