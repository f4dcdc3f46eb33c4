"""YAML recipes: load, locate, override, validate, expand.

A recipe is checked completely before any computation.  Every error names
where it is: the file, the line, and the key path (``demo.yaml:14: steps[2].beta``).

Shape of a recipe (every key but ``steps`` optional)::

    name: demo
    data:                       # either a file ...
      path: crystal.tif         #   relative to the recipe file
      dataset: /entry_1/data_1/data   # HDF5 only
      mask: mask.npy            #   True/non-zero = not measured
      free_fraction: 0.0        #   held-out pixels for an unbiased chi2_free
      prepare: {threshold: 2, centre: max, shape: auto}   # see cdi_plugins.physics.prepare
    # data: {simulate: {shape: 64, seed: 1}}     ... or a simulated crystal
    backend: auto               # auto | numpy | cupy
    fft: auto                   # auto | pyfftw | scipy | mkl | torch | cupy
    threads: null               # CPU FFT threads (null: all cores)
    seed: 0                     # random start; same seed -> same result
    runs: 1                     # independent random starts; the best is kept (select)
    average: 1                  # average the k best runs (aligned to the best) instead of keeping one
    select: auto                # what ranks runs: chi2 | chi2_free | llk_free (auto: chi2_free if free pixels)
    workers: auto               # processes running the runs side by side (one FFT thread each)
    ga: {generations: 3, breed: sqrt_ab, cull: [1, 1]}   # optional: breed the runs (cdi_plugins.runs.ga)
    params:                     # defaults per algorithm for every step below
      hio: {beta: 0.9}
    steps: "3*(20*ER+180*HIO)+20*ER"   # cohere's sequence string, or a list:
    # steps:
    #   - {algorithm: hio, iterations: 200, beta: 0.9}
    #   - {repeat: 3, steps: [{algorithm: er, iterations: 20}, {sequence: "180*HIO"}]}
    geometry: {hkl: [1, 1, 1], lattice_constant: 4.078, energy: 9.0, voxel_size: 10}  # see postprocess
    postprocess: {remove_ramp: true, unwrap: true}
    output: {path: result.cxi, overwrite: false, png: result.png, vti: result.vti}
    # output.cohere_dir: results in cohere's results_phasing layout (image.npy, support.npy, errors)
    datasets:                   # several datasets, each with its own overrides
      - {name: a, data: {path: a.tif}}
      - {name: b, data: {path: b.tif}, set: {"params.hio.beta": 0.7}}

The package, bottom up: :mod:`~cdi_plugins.recipe.loader` (YAML that keeps
lines), :mod:`~cdi_plugins.recipe.location` (``file:line: key.path`` texts),
:mod:`~cdi_plugins.recipe.overrides` (``--set``, ``datasets[*].set``),
:mod:`~cdi_plugins.recipe.schema` (keys and section checks) and
:mod:`~cdi_plugins.recipe.plan` (:func:`load_recipe` and the typed result).
"""

from cdi_plugins.core.sequence import parse_sequence
from cdi_plugins.recipe.overrides import apply_set, parse_set
from cdi_plugins.recipe.plan import DataSpec, DatasetPlan, OutputSpec, Recipe, Step, load_recipe

__all__ = ["Recipe", "Step", "DatasetPlan", "DataSpec", "OutputSpec", "load_recipe", "parse_sequence",
           "apply_set", "parse_set"]
