"""Training and evaluation of 3D-CDI-NN on simulated atomistic sets (:mod:`cdi_plugins.physics.atomistic`).

:func:`train` runs from a YAML-like config (validation every epoch, checkpoints, resume, fine-tuning from
other weights) and writes the best epoch with :func:`.network.save_weights`; :func:`evaluate` gives the
mean figures of a set; :func:`check_figures` the figures on a small held-out set simulated on the fly,
which the shipped weights record so a test can re-check them.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from cdi_plugins.algorithms.nn.mapping import OVERSAMPLING_PRESET
from cdi_plugins.algorithms.nn.network import (CDINN, _torch, figures, load_weights, predict_batch, read_checkpoint,
                                               resolve_device, save_weights, twin_invariant_loss)
from cdi_plugins.compute.fourier import oversampling
from cdi_plugins.errors import CDIError

__all__ = ["train", "evaluate", "check_figures"]


def evaluate(model, data: dict, device="cpu", threshold: float = 0.5) -> dict:
    """Mean (and median) figures of :func:`figures` over a loaded set."""
    model.eval()
    amp, phase = predict_batch(model, data["input"], device)
    rows = [figures(amp[i], phase[i], data["amplitude"][i], data["phase"][i], data["support"][i], threshold)
            for i in range(len(amp))]
    out = {"n": len(rows)}
    for k in ("iou", "amp_error", "phase_rms", "complex_error"):
        v = np.array([r[k] for r in rows])
        out[k] = float(v.mean())
        out[k + "_median"] = float(np.median(v))
    return out


def train(config: dict, *, progress: bool = True, log=print) -> dict:
    """Train from a cached set (see :func:`cdi_plugins.physics.atomistic.make_set`) as described by *config*.

    Keys: ``train`` and ``val`` (HDF5 paths), ``out`` (weights file), ``checkpoint`` (default
    ``out + ".ckpt"``), ``width`` (1.0), ``dropout`` (0.1), ``epochs`` (30), ``batch_size`` (16), ``lr`` (1e-3),
    ``amp_weight`` (1.0), ``seed`` (0), ``device`` (auto), ``threads`` (null), ``limit`` (null: all samples),
    ``augment`` (true: random flips/permutations that keep the physics), ``resume`` (true), ``command``
    (recorded in the weights), ``time_limit_s`` (null), ``init`` (null: random initialisation; or a
    built-in weights name or ``.pt`` file of the same architecture to fine-tune from -- its metadata,
    including how it was trained, is recorded under ``init`` in the new weights).  Validation runs after
    every epoch; the checkpoint after every epoch holds model, optimiser and epoch, and a run resumes from
    it (the checkpoint then takes precedence over ``init``).  The best epoch (lowest validation loss) is
    written to ``out``.
    """
    torch = _torch()
    from tqdm import tqdm

    cfg = {"width": 1.0, "dropout": 0.1, "epochs": 30, "batch_size": 16, "lr": 1e-3, "amp_weight": 1.0,
           "seed": 0, "device": "auto", "threads": None, "limit": None, "augment": True, "resume": True,
           "command": "", "time_limit_s": None, "checkpoint": None, "init": None}
    unknown = set(config) - set(cfg) - {"train", "val", "out"}
    if unknown:
        raise CDIError(f"unknown training setting(s) {sorted(unknown)}; known: {sorted(cfg) + ['out', 'train', 'val']}")
    for k in ("train", "val", "out"):
        if k not in config:
            raise CDIError(f"the training config needs '{k}'")
    cfg.update(config)
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg["device"])
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    tr = _load_many(cfg["train"], cfg["limit"])
    va = _load_many(cfg["val"], None)
    model = CDINN(cfg["width"], cfg["dropout"]).to(device)
    init_meta = None
    if cfg["init"]:
        parent, init_meta = load_weights(os.path.expanduser(os.fspath(cfg["init"])))
        if parent.arch["channels"] != model.arch["channels"]:
            raise CDIError(f"init weights have channels {parent.arch['channels']}, but width {cfg['width']} "
                           f"gives {model.arch['channels']}", str(cfg["init"]))
        model.load_state_dict(parent.state_dict())
        init_meta = {k: v for k, v in init_meta.items() if k not in ("format", "arch", "parameters")}
        init_meta["weights"] = str(cfg["init"])
        del parent
    if device == "cpu":
        # oneDNN's 3-D convolution backward is several times faster in channels-last layout
        model = model.to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    n_train = len(tr["input"])
    steps = cfg["epochs"] * math.ceil(n_train / cfg["batch_size"])
    # cosine decay per batch over the whole run, after a short linear warm-up
    warm = max(1, min(100, steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warm) * (
        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))))
    cfg["out"] = os.path.expanduser(os.fspath(cfg["out"]))
    ckpt = os.path.expanduser(cfg["checkpoint"] or cfg["out"] + ".ckpt")
    start, history, best = 0, [], float("inf")
    if cfg["resume"] and os.path.exists(ckpt):
        c = read_checkpoint(ckpt, device, "delete it or set resume: false")
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        start, history, best = c["epoch"], c["history"], c["best"]
        rng = np.random.default_rng([cfg["seed"], start])
        log(f"resumed from {ckpt} at epoch {start}")
    # the oversampling the network is trained at, measured by the same estimator the nn step uses
    os_target = float(np.median([min(oversampling(x.astype(np.float32) ** 2, preset=OVERSAMPLING_PRESET))
                                 for x in va["input"]]))
    log(f"training oversampling (autocorrelation estimate, smallest axis, median): {os_target:.3f}")
    xt = torch.from_numpy(tr["input"])
    at = torch.from_numpy(tr["amplitude"])
    pt = torch.from_numpy(tr["phase"])
    t0 = time.time()
    for epoch in range(start, cfg["epochs"]):
        model.train()
        tot, nb = 0.0, 0
        bar = tqdm(total=len(xt), desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not progress, unit="sample")
        for idx in _batches(len(xt), cfg["batch_size"], rng):
            xb, ab, pb = xt[idx], at[idx], pt[idx]
            if cfg["augment"]:
                # flips and permutations of the axes map a valid (pattern, object) pair onto another
                # (flipping I flips rho and conjugates nothing; the twin-invariant loss absorbs the rest)
                flips = [d for d in (1, 2, 3) if rng.random() < 0.5]
                if flips:
                    xb, ab, pb = (torch.flip(v, flips) for v in (xb, ab, pb))
                    # a flip about index n//2 needs a roll of 1 on even axes to stay centred
                    xb, ab, pb = (torch.roll(v, [1] * len(flips), flips) for v in (xb, ab, pb))
                perm = [0] + list(1 + rng.permutation(3))
                xb, ab, pb = (v.permute(*perm) for v in (xb, ab, pb))
            xb, ab, pb = xb.contiguous().to(device), ab.contiguous().to(device), pb.contiguous().to(device)
            xb = xb[:, None]
            if device == "cpu":
                xb = xb.contiguous(memory_format=torch.channels_last_3d)
            amp, phase = model(xb)
            loss, _ = twin_invariant_loss(amp, phase, ab, pb, cfg["amp_weight"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
            nb += 1
            bar.update(len(idx))
            bar.set_postfix(loss=f"{tot / nb:.4f}")
        bar.close()
        model.eval()
        with torch.no_grad():
            vl, vn = 0.0, 0
            for i in range(0, len(va["input"]), 32):
                xb = torch.from_numpy(va["input"][i:i + 32])[:, None].to(device)
                a, p = model(xb)
                l, _ = twin_invariant_loss(a, p, torch.from_numpy(va["amplitude"][i:i + 32]).to(device),
                                           torch.from_numpy(va["phase"][i:i + 32]).to(device), cfg["amp_weight"])
                vl += float(l) * len(xb)
                vn += len(xb)
        vl /= vn
        rec = {"epoch": epoch + 1, "train_loss": tot / max(nb, 1), "val_loss": vl, "seconds": time.time() - t0}
        history.append(rec)
        log(f"epoch {epoch + 1}: train loss {rec['train_loss']:.4f}  val loss {vl:.4f}  ({rec['seconds']:.0f} s)")
        if vl < best:
            best = vl
            meta = {"command": cfg["command"], "seed": cfg["seed"], "train_set": _set_record(cfg["train"], tr),
                    "val_set": _set_record(cfg["val"], va), "epochs_trained": epoch + 1, "history": history,
                    "config": {k: v for k, v in cfg.items() if k not in ("command",)}, "version": 1,
                    "oversampling_target": os_target}
            if init_meta is not None:
                meta["init"] = init_meta
            save_weights(model, cfg["out"], meta)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1, "history": history, "best": best}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
        if cfg["time_limit_s"] and time.time() - t0 > cfg["time_limit_s"]:
            log(f"time limit reached after epoch {epoch + 1}; resume with the same command")
            break
    return {"history": history, "best_val_loss": best, "out": cfg["out"]}


def _load_many(paths, limit):
    """One set, or several (a list of paths) concatenated; ``~`` is expanded."""
    from cdi_plugins.physics.atomistic import load_set
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    parts = [load_set(os.path.expanduser(os.fspath(p))) for p in paths]
    out = {k: np.concatenate([d[k] for d in parts])[:limit] for k in ("input", "amplitude", "phase", "support",
                                                                         "mask", "counts")}
    out["parts"] = [{"path": os.path.basename(os.fspath(p)), "seed": d["seed"], "n": int(len(d["input"]))}
                    for p, d in zip(paths, parts)]
    out["settings"] = parts[0]["settings"]
    return out


def _set_record(path, data) -> dict:
    return {"files": data["parts"], "n": int(len(data["input"])), "settings": json.loads(data["settings"])}


def _batches(n, bs, rng):
    idx = rng.permutation(n)
    for i in range(0, n, bs):
        yield idx[i:i + bs]


def check_figures(model, n: int = 12, seed: int = 3, device: str = "cpu") -> dict:
    """Figures on the first *n* crystals of the seed-*seed* held-out set, simulated on the fly.

    Recorded in the shipped weights (``meta["check"]``) so a test can confirm that the file still
    reproduces them.
    """
    from cdi_plugins.physics.atomistic import atomistic_crystal, network_input
    data = {k: [] for k in ("input", "amplitude", "phase", "support")}
    for i in range(n):
        s = atomistic_crystal([seed, i])
        data["input"].append(network_input(s["intensity"]))
        for k in ("amplitude", "phase", "support"):
            data[k].append(s[k])
    data = {k: np.stack(v) for k, v in data.items()}
    out = evaluate(model, data, device)
    out["seed"] = seed
    return out
