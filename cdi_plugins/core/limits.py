"""Bounds on what a recipe may ask for, checked arithmetically before anything is built.

A recipe is small text, but repeats and YAML aliases multiply it: ``"1000000000*(1*ER)"`` would build a
billion step objects and ``repeat: 1000000000`` hang validation; nine nested aliases ("billion laughs")
expand 449 bytes into a billion values.  Every limit is far above any real reconstruction (cohere's
longest recipes are a few thousand iterations; a 620-iteration recipe is 7 steps) and each error names
the recipe location and the limit.
"""

MAX_STEPS = 10_000            # expanded steps of one dataset (a step is one algorithm run for N iterations)
MAX_ITERATIONS = 10_000_000   # iterations of one run, all steps together
MAX_RUNS = 10_000             # runs: N (independent random starts)
MAX_GENERATIONS = 1_000       # ga.generations (each one runs the steps once per surviving run)
MAX_WORKERS = 1_024           # workers: N (processes running runs side by side)
MAX_YAML_VALUES = 100_000     # values of a recipe once its YAML aliases are expanded

__all__ = ["MAX_STEPS", "MAX_ITERATIONS", "MAX_RUNS", "MAX_GENERATIONS", "MAX_WORKERS", "MAX_YAML_VALUES"]
