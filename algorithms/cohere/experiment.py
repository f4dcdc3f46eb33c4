"""cohere experiments into recipes: ``config_rec`` -> recipe (and back), a whole experiment folder -> a recipe
plus its data (the ``cdi import-cohere`` command).

:func:`config_rec_to_recipe` turns a config_rec into a recipe (the algorithm_sequence becomes the steps) and
lists every key it could not carry over; :func:`recipe_to_config_rec` goes back;
:func:`import_cohere_experiment` does it for a whole experiment folder, data included.  cohere's file
formats (config_rec, results_phasing) are read and written by :mod:`cdi_plugins.io.cohere`.
"""

from __future__ import annotations

import os
import re

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
    out = seq.replace(" ", "")
    if "." in out:
        unsupported.append(("algorithm_sequence", "sub-triggers (e.g. ER.SW0) are not supported; dropped from "
                            f"{seq!r}"))
        out = re.sub(r"\.[A-Za-z0-9_.]+", "", out)
    return out   # ER, HIO, RAAR and SF (solvent flipping) are ours under the same names; ERpc/HIOpc: below


# cohere's triggers count iterations over the whole algorithm_sequence; ours count within a step: a config
# that uses one of these is imported as explicit steps, each carrying its share as step options
_GLOBAL_TRIGGERS = ("twin_trigger", "twin_halves", "phc_trigger", "phc_phase_min", "phc_phase_max",
                    "pc_interval", "pc_type", "pc_LUCY_iterations", "pc_LUCY_kernel", "pc_normalize")


def _first(conf: dict, key: str, unsupported: list, default=None):
    """A scalar config_rec value; of a per-sub-trigger list the first entry (noted)."""
    v = conf.get(key, default)
    if isinstance(v, (list, tuple)):
        unsupported.append((key, f"{list(v)}: per-sub-trigger values; the first is used"))
        v = v[0]
    return v


def _window(trig, total: int, key: str, unsupported: list) -> tuple[int, int]:
    """[start, stop) of a cohere trigger [start, step(, stop)] over *total* iterations (negatives from the end)."""
    trig = list(trig)
    start = trig[0] + total if trig[0] < 0 else trig[0]
    stop = total if len(trig) < 3 else (trig[2] + total if trig[2] < 0 else trig[2])
    if len(trig) > 1 and trig[1] != 1:
        unsupported.append((key, f"{trig}: applied every iteration of its span (cohere: every {trig[1]})"))
    return int(start), int(min(stop, total))


def _explicit_steps(conf: dict, seq: str, unsupported: list) -> list | None:
    """Steps of the cleaned *seq* (sub-triggers dropped, ERpc/HIOpc kept) with cohere's global triggers
    turned into per-step options (twin removal, phase constraint, partial coherence); None when the
    config uses none of them, so that the recipe keeps the sequence string."""
    from cdi_plugins.core.sequence import parse_sequence
    pc = "pc_interval" in conf and re.search(r"(ER|HIO)pc", seq) is not None
    if not (pc or "twin_trigger" in conf or "phc_trigger" in conf):
        return None
    entries = parse_sequence(seq)
    total = sum(n or 0 for _, n in entries)
    steps, g0 = [], 0
    for name, n in entries:
        n = int(n or 0)
        step = {"algorithm": (name[:-2] if name.endswith("pc") else name).lower(), "iterations": n}
        steps.append((g0, n, name.endswith("pc"), step))
        g0 += n
    if "twin_trigger" in conf:
        t = list(conf["twin_trigger"])[0]
        t = t + total if t < 0 else t
        halves = [int(h) for h in conf.get("twin_halves", [0, 0])]
        # cohere halves the object after the update of iteration t, i.e. after t + 1 iterations
        for i, (a, n, _, step) in enumerate(steps):
            if a <= t < a + n:
                local = t + 1 - a
                if local == n and i + 1 < len(steps):   # the step's last iteration: ours acts within a step
                    step, local = steps[i + 1][3], 1
                    unsupported.append(("twin_trigger", f"[{t}] falls on a step's last iteration: applied one "
                                        "iteration later, after the next step's first"))
                if local < step["iterations"]:
                    step["twin_trigger"], step["twin_halves"] = int(local), halves
                break
        unsupported.append(("twin_trigger", "ours also centres the object before zeroing the halves "
                            "(cohere does not)"))
    if "phc_trigger" in conf:
        start, stop = _window(conf["phc_trigger"], total, "phc_trigger", unsupported)
        lo = float(_first(conf, "phc_phase_min", unsupported, -1.57))
        hi = float(_first(conf, "phc_phase_max", unsupported, 1.57))
        for a, n, _, step in steps:
            if start <= a < stop:
                step.update(phc_iterations=min(n, stop - a), phc_min=lo, phc_max=hi)
            elif a < start < a + n:
                unsupported.append(("phc_trigger", f"starts at iteration {start}, inside a step: that step "
                                    "runs without it"))
    if pc:
        kernel = conf.get("pc_LUCY_kernel", 9)
        sizes = [int(k) for k in (kernel if isinstance(kernel, (list, tuple)) else [kernel])]
        size = max(sizes) + (1 - max(sizes) % 2)     # ours is a cube centred on a pixel: odd side
        if len(set(sizes)) > 1 or size != sizes[0]:
            unsupported.append(("pc_LUCY_kernel", f"{kernel}: the PSF box is a cube of side {size} here"))
        opts = {"pc_interval": int(conf["pc_interval"]), "pc_kernel_size": size}
        if "pc_LUCY_iterations" in conf:
            opts["pc_lucy_iterations"] = int(conf["pc_LUCY_iterations"])
        for _, _, is_pc, step in steps:
            if is_pc:
                step.update(opts)
        unsupported.append(("pc_interval", "each ERpc/HIOpc step estimates its PSF afresh from a Gaussian "
                            "(cohere carries it from step to step)"))
    for key in ("pc_type", "pc_normalize"):
        if key in conf and conf[key] not in ("LUCY", True):
            unsupported.append((key, f"{conf[key]!r}: ours is Richardson-Lucy, normalised"))
    return [step for _, _, _, step in steps]


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
    seq = _sequence_for_ours(str(conf["algorithm_sequence"]), unsupported)
    explicit = _explicit_steps(conf, seq, unsupported)
    if explicit is None and re.search(r"(ER|HIO)pc", seq):
        unsupported.append(("algorithm_sequence", "ERpc/HIOpc without pc_interval: run as ER/HIO"))
        seq = re.sub(r"(ER|HIO)pc", r"\1", seq)
    recipe["steps"] = seq if explicit is None else explicit
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
    for alg in ("er", "hio", "raar") + (("sf",) if "SF" in seq else ()):
        params[alg] = dict(common)
    if "hio_beta" in conf:
        params["hio"]["beta"] = float(conf["hio_beta"])
    if "raar_beta" in conf:
        params["raar"]["beta"] = float(conf["raar_beta"])
        unsupported.append(("raar_beta", "mapped to raar.beta, but cohere's RAAR update differs from ours "
                            "inside the support"))
    recipe["params"] = params
    known = {"algorithm_sequence", "shrink_wrap_trigger", "shrink_wrap_threshold", "shrink_wrap_gauss_sigma",
             "shrink_wrap_type", "initial_support_area", "hio_beta", "raar_beta", *_HANDLED_ELSEWHERE,
             *(_GLOBAL_TRIGGERS if explicit is not None else ())}
    for key in conf:
        if key not in known:
            unsupported.append((key, "no equivalent in er/hio/raar; import with --engine cohere to keep it"))
    return recipe, unsupported


def _explicit(steps) -> bool:
    """Whether *steps* is a list of er/hio/raar/sf step mappings with iteration counts (as imported)."""
    return isinstance(steps, list) and bool(steps) and all(
        isinstance(st, dict) and st.get("algorithm") in ("er", "hio", "raar", "sf")
        and isinstance(st.get("iterations"), int) for st in steps)


def _triggers_of(steps: list) -> dict:
    """algorithm_sequence and cohere's global triggers of explicit steps (the inverse of _explicit_steps)."""
    conf: dict = {}
    names, g0, phc = [], 0, []
    for st in steps:
        n = st["iterations"]
        pc = bool(st.get("pc_interval"))
        names.append(f"{n}*{st['algorithm'].upper()}{'pc' if pc else ''}")
        if pc:
            conf["pc_interval"] = st["pc_interval"]
            conf["pc_LUCY_kernel"] = [st.get("pc_kernel_size", 9)] * 3
            if "pc_lucy_iterations" in st:
                conf["pc_LUCY_iterations"] = st["pc_lucy_iterations"]
        if st.get("twin_trigger"):
            conf["twin_trigger"] = [g0 + st["twin_trigger"] - 1]
            conf["twin_halves"] = list(st.get("twin_halves", [0, 0]))
        if st.get("phc_iterations"):
            phc.append((g0, g0 + st["phc_iterations"]))
            conf["phc_phase_min"], conf["phc_phase_max"] = st.get("phc_min", -1.57), st.get("phc_max", 1.57)
        g0 += n
    conf["algorithm_sequence"] = "+".join(names)
    if phc:
        conf["phc_trigger"] = [phc[0][0], 1, phc[-1][1]]
    return conf


def recipe_to_config_rec(recipe: dict) -> dict:
    """The config_rec of a recipe written by :func:`config_rec_to_recipe` (either engine)."""
    steps = recipe.get("steps")
    conf: dict = {}
    if isinstance(steps, list) and len(steps) == 1 and isinstance(steps[0], dict) \
            and steps[0].get("algorithm") == "cohere":
        conf = {k: v for k, v in steps[0].items() if k not in ("algorithm", "processing")}
    elif isinstance(steps, str) or _explicit(steps):
        if isinstance(steps, str):
            conf["algorithm_sequence"] = steps
        else:
            conf.update(_triggers_of(steps))
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
        raise CDIError("only a sequence string, er/hio/raar/sf steps with iterations or a single cohere step "
                       "can be written as a config_rec")
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
