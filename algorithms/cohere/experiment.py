"""cohere experiments into recipes: ``config_rec`` -> recipe (and back), a whole experiment folder -> a recipe
plus its data (the ``cdi import-cohere`` command).

:func:`config_rec_to_recipe` turns a config_rec into a recipe (the algorithm_sequence becomes the steps) and
lists every key it could not carry over; :func:`recipe_to_config_rec` goes back;
:func:`import_cohere_experiment` does it for a whole experiment folder, data included.  cohere's file
formats (config_rec, results_phasing) are read and written by :mod:`cdi_plugins.io.cohere`.
"""

from __future__ import annotations

import os

import numpy as np

from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import atomic_path, check_writable
from cdi_plugins.io.cohere import read_config_rec

__all__ = ["config_rec_to_recipe", "recipe_to_config_rec", "import_cohere_experiment", "read_cohere_data"]


_SEQ_ALGS = {"ER": "ER", "HIO": "HIO", "RAAR": "RAAR"}
# config_rec keys that concern files and devices, not the algorithm
_HANDLED_ELSEWHERE = ("data_dir", "save_dir", "init_guess", "continue_dir", "reconstructions", "device",
                      "processing")


def _sequence_for_ours(seq: str, unsupported: list) -> str:
    import re
    out = seq.replace(" ", "")
    if "." in out:
        unsupported.append(("algorithm_sequence", "sub-triggers (e.g. ER.SW0) are not supported; dropped from "
                            f"{seq!r}"))
        out = re.sub(r"\.[A-Za-z0-9_.]+", "", out)
    if re.search(r"(ER|HIO)pc", out):
        unsupported.append(("algorithm_sequence", "ERpc/HIOpc (partial coherence) run as ER/HIO"))
        out = re.sub(r"(ER|HIO)pc", r"\1", out)
    return out   # ER, HIO, RAAR and SF (solvent flipping) are ours under the same names


def config_rec_to_recipe(conf: dict, *, engine: str = "ours") -> tuple[dict, list]:
    """A recipe (without data) equivalent to cohere's config_rec *conf*.

    Parameters
    ----------
    engine : {"ours", "cohere"}
        ``ours``: the algorithm_sequence becomes steps of our er/hio/raar with
        their parameters under ``params``; ``cohere``: one ``cohere`` step that
        runs cohere-core itself with every config_rec key it knows.

    Returns
    -------
    recipe : dict
    unsupported : list of (key, reason)
        Every key that was not carried over, or only approximately.
    """
    unsupported: list = []
    if "algorithm_sequence" not in conf:
        raise CDIError("config_rec has no algorithm_sequence")
    recipe: dict = {}
    if conf.get("reconstructions", 1) not in (None, 1):
        recipe["runs"] = int(conf["reconstructions"])
        unsupported.append(("reconstructions", "mapped to runs: the best run is kept (cohere-ui keeps all)"))
    if conf.get("init_guess", "random") not in ("random", "continue"):
        unsupported.append(("init_guess", f"{conf['init_guess']!r} is not supported (use an nn step to seed)"))
    for key in ("continue_dir", "save_dir", "data_dir"):
        if key in conf and key != "data_dir":
            unsupported.append((key, "folder paths are not carried over (use output.cohere_dir / data.path)"))
    if engine == "cohere":
        from cdi_plugins.algorithms.cohere.plugin import spec as cohere_spec
        spec = cohere_spec()
        step = {"algorithm": "cohere"}
        for key, value in conf.items():
            if key in _HANDLED_ELSEWHERE:
                continue
            if key in spec.params:
                step[key] = list(value) if isinstance(value, tuple) else value
            else:
                unsupported.append((key, "not supported by cohere-core's Rec here "
                                    "(GA, live view and multipeak keys live in cohere-ui)"))
        if isinstance(conf.get("device"), int):
            step["device"] = conf["device"]
        recipe["steps"] = [step]
        return recipe, unsupported
    if engine != "ours":
        raise CDIError(f"engine must be ours or cohere, got {engine!r}")
    recipe["steps"] = _sequence_for_ours(str(conf["algorithm_sequence"]), unsupported)
    common: dict = {}
    params: dict = {}
    trig = conf.get("shrink_wrap_trigger")
    if trig is None:
        common["shrink_wrap_period"] = 0
    else:
        trig = list(trig)
        common["shrink_wrap_period"] = int(trig[1]) if len(trig) > 1 else 1
        if trig[0] not in (0, 1) or len(trig) > 2:
            unsupported.append(("shrink_wrap_trigger", f"{trig}: only the step is used (start/stop dropped)"))
        if "shrink_wrap_threshold" in conf:
            common["shrink_wrap_threshold"] = float(conf["shrink_wrap_threshold"])
        if "shrink_wrap_gauss_sigma" in conf:
            s = conf["shrink_wrap_gauss_sigma"]
            if isinstance(s, (list, tuple)):
                unsupported.append(("shrink_wrap_gauss_sigma", f"{s}: per-sub-trigger values; the first is used"))
                s = s[0]
            common["shrink_wrap_sigma"] = float(s)
            common["shrink_wrap_sigma_final"] = float(s)
        if conf.get("shrink_wrap_type", "GAUSS") != "GAUSS":
            unsupported.append(("shrink_wrap_type", f"{conf['shrink_wrap_type']!r}: only GAUSS"))
    if conf.get("initial_support_area") is not None:
        # a recipe's params apply to every step: initial_support: box would reset each later step's support
        unsupported.append(("initial_support_area", f"{list(conf['initial_support_area'])}: the first step "
                            "starts from the autocorrelation support instead"))
    for alg in ("er", "hio", "raar") + (("sf",) if "SF" in recipe["steps"] else ()):
        params[alg] = dict(common)
    if "hio_beta" in conf:
        params["hio"]["beta"] = float(conf["hio_beta"])
    if "raar_beta" in conf:
        params["raar"]["beta"] = float(conf["raar_beta"])
        unsupported.append(("raar_beta", "mapped to raar.beta, but cohere's RAAR update differs from ours "
                            "inside the support"))
    recipe["params"] = params
    known = {"algorithm_sequence", "shrink_wrap_trigger", "shrink_wrap_threshold", "shrink_wrap_gauss_sigma",
             "shrink_wrap_type", "initial_support_area", "hio_beta", "raar_beta", *_HANDLED_ELSEWHERE}
    for key in conf:
        if key not in known:
            unsupported.append((key, "no equivalent in er/hio/raar; import with --engine cohere to keep it"))
    return recipe, unsupported


def recipe_to_config_rec(recipe: dict) -> dict:
    """The config_rec of a recipe written by :func:`config_rec_to_recipe` (either engine)."""
    steps = recipe.get("steps")
    conf: dict = {}
    if isinstance(steps, list) and len(steps) == 1 and isinstance(steps[0], dict) \
            and steps[0].get("algorithm") == "cohere":
        conf = {k: v for k, v in steps[0].items() if k not in ("algorithm", "processing")}
    elif isinstance(steps, str):
        conf["algorithm_sequence"] = steps
        p = recipe.get("params") or {}
        common = p.get("er") or p.get("hio") or {}
        if "hio" in p and "beta" in p["hio"]:
            conf["hio_beta"] = p["hio"]["beta"]
        if "raar" in p and "beta" in p["raar"]:
            conf["raar_beta"] = p["raar"]["beta"]
        period = common.get("shrink_wrap_period", 20)
        if period:
            conf["shrink_wrap_trigger"] = [1, period]
            conf["shrink_wrap_type"] = "GAUSS"
            conf["shrink_wrap_threshold"] = common.get("shrink_wrap_threshold", 0.2)
            conf["shrink_wrap_gauss_sigma"] = common.get("shrink_wrap_sigma", 1.0)
    else:
        raise CDIError("only a sequence string or a single cohere step can be written as a config_rec")
    if recipe.get("runs", 1) != 1:
        conf["reconstructions"] = recipe["runs"]
    return conf


# ------------------------------------------------------------------------------------- a whole experiment


def read_cohere_data(path) -> np.ndarray:
    """A cohere data file (amplitudes; ``.tif`` transposed as cohere reads it, or ``.npy``) as intensity."""
    p = os.fspath(path)
    try:
        if p.lower().endswith((".tif", ".tiff")):
            import tifffile
            amp = tifffile.imread(p).transpose()
        else:
            amp = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise CDIError(f"cannot read cohere data: {exc}", p) from None
    amp = np.abs(np.asarray(amp, dtype=np.float64))
    return (amp ** 2).astype(np.float32)


def _find_data(exp_dir: str, conf: dict) -> str:
    dirs = []
    if conf.get("data_dir"):
        dd = conf["data_dir"]
        dirs.append(dd if os.path.isabs(dd) else os.path.join(exp_dir, dd))
    dirs.append(os.path.join(exp_dir, "phasing_data"))
    for d in dirs:
        for name in ("data.npy", "data.tif", "data.tiff"):
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
    raise CDIError("no prepared data file (data.npy or data.tif) in " + " or ".join(dirs), exp_dir)


def import_cohere_experiment(exp_dir, out_recipe, *, engine: str = "ours", overwrite: bool = False) -> list:
    """Read a cohere experiment folder and write an equivalent recipe plus its data.

    Writes *out_recipe* (YAML) and, next to it, ``<stem>_data.npy`` holding the
    intensity (cohere's amplitudes squared, TIFF transposed as cohere reads it).
    The recipe starts with a comment listing every config_rec key that was not
    carried over.  Returns that list of ``(key, reason)``.
    """
    import yaml
    exp = os.fspath(exp_dir)
    conf_path = os.path.join(exp, "conf", "config_rec")
    if not os.path.isfile(conf_path):
        raise CDIError("not a cohere experiment: no conf/config_rec", exp)
    conf = read_config_rec(conf_path)
    data_file = _find_data(exp, conf)
    intensity = read_cohere_data(data_file)
    recipe, unsupported = config_rec_to_recipe(conf, engine=engine)
    stem = os.path.splitext(os.path.basename(os.fspath(out_recipe)))[0]
    data_out = os.path.join(os.path.dirname(os.path.abspath(os.fspath(out_recipe))), f"{stem}_data.npy")
    doc = {"name": os.path.basename(os.path.abspath(exp)),
           "description": f"imported from cohere experiment {os.path.abspath(exp)}",
           "data": {"path": os.path.basename(data_out)}, "backend": "numpy", "seed": 0}
    doc.update(recipe)
    # output paths resolve against the working directory: put them beside the recipe as it was named
    where = os.path.dirname(os.fspath(out_recipe))
    doc["output"] = {"path": os.path.join(where, f"{stem}.cxi"),
                     "cohere_dir": os.path.join(where, f"{stem}_results_phasing")}
    head = [f"# imported by `cdi import-cohere` from {os.path.abspath(conf_path)}",
            f"# data: {os.path.abspath(data_file)} (amplitudes) -> {os.path.basename(data_out)} (intensity)"]
    if unsupported:
        head.append("# config_rec keys not carried over (or only approximately):")
        head += [f"#   {k}: {why}" for k, why in unsupported]
    else:
        head.append("# every config_rec key was carried over")
    # both outputs are checked before either is written: a refusal leaves nothing behind
    check_writable(data_out, overwrite=overwrite, protect=[data_file, conf_path])
    check_writable(out_recipe, overwrite=overwrite, protect=[conf_path, data_file])
    with atomic_path(data_out, overwrite=overwrite, protect=[data_file]) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, intensity)
    with atomic_path(out_recipe, overwrite=overwrite, protect=[conf_path, data_file]) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(head) + "\n")
            yaml.safe_dump(doc, fh, sort_keys=False, default_flow_style=None)
    return unsupported
