"""Golden hashes of every CPU recipe in configs/: the guard that a refactoring changed no result.

Each recipe runs with ``fft: scipy``, one FFT thread and one torch thread, which is bit-reproducible
across processes on one machine.  The hash covers the object, the support and the chi^2 history of every
dataset.  Bitwise equality also depends on the CPU's SIMD dispatch (NumPy and torch pick kernels for the
instructions the CPU has) and on the library versions, so the file records that fingerprint and the test
compares only where it matches.

    python -m tests.golden.recipes            # print the hashes of this checkout
    python -m tests.golden.recipes --update   # rewrite tests/golden/hashes.json
    python -m tests.golden.recipes --numerics # with each final chi^2 and error against the truth
    python -m tests.golden.recipes --numerics --kernels numba   # the same recipes on the numba kernels
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CONFIGS = os.path.join(ROOT, "configs")
HASHES = os.path.join(HERE, "hashes.json")

# training configs are not recipes; cohere_seeded needs the optional cohere-core; aps_34idc reads the user's
# own frames (not shipped); adapt_real_au reads weights the user makes with `cdi adapt` (not shipped)
NOT_RECIPES = ("nn_train_cpu.yaml", "nn_train_gpu.yaml", "nn_finetune_cpu.yaml", "nn_finetune2_cpu.yaml",
               "aps_34idc.yaml", "adapt_real_au.yaml")
PINNED = [("fft", "scipy"), ("threads", 1)]


def recipes() -> list[str]:
    return sorted(f for f in os.listdir(CONFIGS) if f.endswith(".yaml") and f not in NOT_RECIPES)


def fingerprint() -> dict:
    """What bitwise results depend on besides the code: CPU features in use and library versions."""
    import importlib.metadata as md
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    out = {"machine": platform.machine(), "cpu_features": sorted(k for k, v in feats.items() if v)}
    # numba: the AD step's CPU fast path runs numba kernels whenever numba is installed (the iterative steps
    # of these recipes, all up to 64^3, run the NumPy reference)
    for name in ("numpy", "scipy", "torch", "numba"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    try:
        import torch
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - torch missing
        out["torch_cpu_capability"] = None
    return out


def result_hash(result) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(result.obj, dtype=np.complex64).tobytes())
    h.update(np.ascontiguousarray(result.support, dtype=bool).tobytes())
    chi = np.array([r.get("chi2", np.nan) for r in result.history], dtype=np.float64)
    h.update(chi.tobytes())
    return h.hexdigest()


def hash_recipe(name: str) -> dict[str, str]:
    """{dataset: hash} of one recipe run the pinned way, in this process."""
    return {ds: result_hash(r) for ds, r in run_recipe(name).items()}


def numerics(result) -> str:
    """Final chi^2 and error against the truth (where the data are simulated): what a hash change must keep."""
    from cdi_plugins.compute.metrics import compare_to_truth
    err = "-" if result.truth is None else f"{compare_to_truth(result.obj, result.truth)['error']:.5f}"
    return f"chi2 {result.chi2:.5e} error {err}"


def run_recipe(name: str, kernels: str = "auto") -> dict:
    """{dataset: Result} of one recipe run the pinned way, in this process.

    *kernels* pins the elementwise kernels (compute/kernels.py, ``CDI_PLUGINS_KERNELS``); ``auto``
    runs every recipe's iterative steps here (all up to 64^3) on the NumPy reference; the AD step's fast
    path uses numba, which is why numba's version is in the fingerprint.
    """
    import torch

    import cdi_plugins
    before = torch.get_num_threads(), os.environ.get("CDI_PLUGINS_KERNELS")
    torch.set_num_threads(1)
    os.environ["CDI_PLUGINS_KERNELS"] = kernels
    try:
        results = cdi_plugins.run_all(os.path.join(CONFIGS, name), overrides=PINNED, write=False)
    finally:
        torch.set_num_threads(before[0])
        if before[1] is None:
            os.environ.pop("CDI_PLUGINS_KERNELS")
        else:
            os.environ["CDI_PLUGINS_KERNELS"] = before[1]
    return results


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--update", action="store_true", help="rewrite tests/golden/hashes.json")
    p.add_argument("--numerics", action="store_true",
                   help="also print each dataset's final chi^2 and error against the truth")
    p.add_argument("--kernels", default="auto", choices=("auto", "numpy", "numba"),
                   help="elementwise kernels (auto: what the record holds); numba: check its numerics")
    p.add_argument("names", nargs="*", help="recipes (default: all)")
    args = p.parse_args(argv)
    out = {}
    for name in args.names or recipes():
        if name == "cohere_seeded.yaml":
            try:
                import cohere_core  # noqa: F401
            except ImportError:
                print(f"{name}: skipped (cohere-core not installed)")
                continue
        if args.update and args.kernels != "auto":
            p.error("--update records the auto kernels only")
        results = run_recipe(name, args.kernels)
        out[name] = {ds: result_hash(r) for ds, r in results.items()}
        for ds, h in out[name].items():
            print(f"{name} {ds} {h}" + (f" {numerics(results[ds])}" if args.numerics else ""), flush=True)
    if args.update:
        if args.names:   # update only these recipes; the others keep their record (same machine and versions)
            with open(HASHES) as fh:
                old = json.load(fh)
            if old.get("fingerprint") != fingerprint():
                p.error("the record was made on another machine or versions: update all recipes (no names)")
            out = {**old["hashes"], **out}
        with open(HASHES, "w") as fh:
            json.dump({"fingerprint": fingerprint(), "pinned": PINNED, "hashes": out}, fh, indent=1, sort_keys=True)
            fh.write("\n")
        print(f"wrote {HASHES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
