"""``cdi adapt``: fine-tune 3D-CDI-NN on measured patterns without any truth (physics-aware loss).

The idea is AutoPhaseNN's (Yao et al., npj Comput. Mater. 8, 124, 2022): the network's prediction,
Fourier-transformed, must reproduce the measured intensity.  For every pattern:

1. the pattern is put on the network's grid by the preparation the ``nn`` step applies
   (:func:`prepare`: the ``"smoothed"`` oversampling estimate, then :func:`.mapping.to_network`: crop
   around the peak and interpolate so the smallest per-axis oversampling is the one the weights were
   trained at); the mask goes through the same crop and interpolation, and a network pixel that any
   masked or unmeasured data pixel contributes to is left out;
2. the network predicts the amplitude A and the phase phi; the object is ``A exp(i phi) S`` with S a
   soft support (a steep sigmoid of ``A / max A`` around ``support_threshold``; 0 turns it off);
3. its centred FFT intensity ``|F|^2`` is compared with the prepared measured intensity ``I`` on the
   measured pixels, with the scale s fitted in closed form per pattern:

   * ``amplitude`` (default): ``sum (s |F| - sqrt I)^2 / sum I`` -- the chi^2 the iterative steps report,
     at the best scale;
   * ``poisson``: the Poisson deviance ``2 sum (s|F|^2 - I - I log(s|F|^2 / I)) / N``, with I in photons
     (the prepared pattern before its normalisation to a maximum of 1), ~1 for a perfect fit.

   The twin ``conj(rho(-r))`` and a global phase give the same intensity: they are free by construction.

With ``mix`` (a set written by ``cdi simulate-set``) every step adds ``mix_weight`` times the supervised
twin-invariant loss (:func:`.network.twin_invariant_loss`) on a batch of simulated crystals, so the
network cannot drift away from what it knew.  Random flips and axis permutations of the patterns (each is
the pattern of the flipped object) multiply the few patterns a user has.

:func:`adapt` runs it: a checkpoint after every epoch (plain tensors and numbers: it loads with
``weights_only=True``) from which the same command resumes, the epoch with the lowest physics loss (dropout
off) written atomically with :func:`cdi_plugins.io.atomic.atomic_path`, never over an input, with a record
of what it was adapted on (files and their SHA-256, the loss history, settings, command) under
``meta["adapted"]``.  The ``nn`` step takes the result by path (``weights: my_beamtime.pt``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import numpy as np

from cdi_plugins.algorithms.nn.plugin import ADAPT_FROM, network_input
from cdi_plugins.algorithms.nn.network import (_torch, load_weights, read_checkpoint, save_weights,
                                              twin_invariant_loss)
from cdi_plugins.errors import CDIError

__all__ = ["SETTINGS", "prepare", "read_patterns", "physics_loss", "adapt", "evaluate_physics"]

#: Settings of :func:`adapt` and their defaults.
SETTINGS = {"epochs": 20, "batch_size": 4, "lr": 1e-4, "loss": "amplitude", "support_threshold": 0.1,
            "mix": None, "mix_weight": 0.5, "seed": 0, "device": "auto", "threads": None, "augment": True,
            "resume": True, "checkpoint": None, "time_limit_s": None, "oversampling": None,
            "target_oversampling": None, "train": "all"}
LOSSES = ("amplitude", "poisson")
#: Which parameters adapt: ``all``; ``phase``: the phase decoder only (encoder and amplitude decoder frozen, so
#: the predicted support cannot change); ``decoders``: both decoders, the encoder frozen.
TRAINABLE = {"all": ("encoder.", "amp.", "phase."), "phase": ("phase.",), "decoders": ("amp.", "phase.")}


# ------------------------------------------------------------------------------------------ data

def prepare(intensity, mask, meta: dict, *, oversampling=None, target_oversampling=None) -> dict:
    """A pattern of any shape as the ``nn`` step prepares it, plus what the physics loss compares with.

    Returns ``x`` (the network input: :func:`.mapping.to_network`, sqrt(I) max 1 on the network grid),
    ``intensity`` and ``measured`` (the C^3 crop around the peak that ``x`` was interpolated from, in
    photons, and where it is measured: not masked and inside the data), ``crop`` (C), ``oversampling``
    (per axis) and ``target``.
    """
    from cdi_plugins.compute.fourier import crop_pad
    inten = np.asarray(intensity, dtype=np.float32)
    mask = np.zeros(inten.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    x, c, os_, target = network_input(inten, mask, meta, oversampling, target_oversampling)
    measured = crop_pad(~mask, (c, c, c), False)
    i = np.where(measured, crop_pad(np.clip(inten, 0, None), (c, c, c)), 0).astype(np.float32)
    return {"x": x, "intensity": i, "measured": measured, "crop": int(c),
            "oversampling": tuple(float(o) for o in os_), "target": target}


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_recipe(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in (".yaml", ".yml")


def read_patterns(sources, *, dataset: str | None = None, mask: str | None = None) -> list[dict]:
    """The patterns to adapt on: data files (as ``cdi run --data`` reads them) or one recipe (its datasets).

    Each is ``{"name", "intensity", "mask", "files": [{"path", "sha256"}], "array_sha256"}``; a recipe's
    data is read, masked and prepared (``data.prepare``) as ``cdi run`` does before its first step.
    """
    from cdi_plugins.io import read_array, read_intensity
    sources = [os.fspath(s) for s in sources]
    if not sources:
        raise CDIError("give a recipe or at least one data file (.npy, .tif, .h5, ...)")
    recipes = [s for s in sources if _is_recipe(s)]
    out = []
    if recipes:
        if len(sources) > 1:
            raise CDIError("give either one recipe or data files, not both", recipes[0])
        if mask is not None:
            raise CDIError("--mask applies to data files; a recipe gives its own data.mask", recipes[0])
        import cdi_plugins
        for name, prob in cdi_plugins.problems(recipes[0]).items():
            src = prob.source
            files = [{"path": os.path.abspath(src), "sha256": _sha256(src)}] if os.path.isfile(src) else []
            out.append({"name": f"{os.path.basename(recipes[0])}:{name}", "intensity": np.asarray(prob.intensity),
                        "mask": np.asarray(prob.mask, bool), "files": files})
    else:
        m = None
        if mask is not None:
            m = read_array(mask) != 0
        for s in sources:
            inten = read_intensity(s, dataset=dataset)
            if inten.ndim != 3:
                raise CDIError(f"expected a 3-D pattern, got shape {inten.shape}", s)
            if m is not None and m.shape != inten.shape:
                raise CDIError(f"mask shape {m.shape} does not match the data shape {inten.shape}", mask)
            files = [{"path": os.path.abspath(s), "sha256": _sha256(s)}]
            if mask is not None:
                files.append({"path": os.path.abspath(mask), "sha256": _sha256(mask)})
            out.append({"name": os.path.basename(s), "intensity": inten,
                        "mask": m if m is not None else np.zeros(inten.shape, bool), "files": files})
    seen, unique = set(), []
    for p in out:       # datasets of a recipe may share their data: adapt on each pattern once
        p["array_sha256"] = hashlib.sha256(np.ascontiguousarray(p["intensity"], np.float32).tobytes()
                                           + np.ascontiguousarray(p["mask"]).tobytes()).hexdigest()
        if p["array_sha256"] not in seen:
            seen.add(p["array_sha256"])
            unique.append(p)
    return unique


# ------------------------------------------------------------------------------------------ loss

def _on_crop(rho, c: int):
    """The object (n, n, n) on the C^3 grid of the crop it was predicted from: same voxel, zero-padded or cut."""
    from cdi_plugins.compute.fourier import window_slices
    torch = _torch()
    if rho.shape[-1] == c:
        return rho
    src, dst = window_slices(tuple(rho.shape), (c, c, c), None)
    out = torch.zeros((c, c, c), dtype=rho.dtype, device=rho.device)
    out[dst] = rho[src]
    return out


def physics_loss(amp, phase, targets, *, form: str = "amplitude", support_threshold: float = 0.1):
    """Per-pattern physics loss (B,) of predictions (B, n, n, n) against *targets* (see the module doc).

    *targets*: one ``{"intensity", "measured"}`` pair of C^3 tensors per pattern (from :func:`prepare`).
    A network voxel is a voxel of the C^3 crop's real-space grid, so the predicted object, zero-padded (or
    cut) to C^3 and Fourier-transformed, lands exactly on the crop's pixels: no interpolation in the loss.
    """
    torch = _torch()
    if form not in LOSSES:
        raise CDIError(f"unknown loss {form!r}; use one of {', '.join(LOSSES)}")
    dims = (-3, -2, -1)
    a = amp
    if support_threshold:
        peak = amp.detach().amax(dim=dims, keepdim=True).clamp_min(1e-6)
        a = amp * torch.sigmoid((amp / peak - support_threshold) / 0.02)
    rho = torch.polar(a, phase)
    out = []
    for k, t in enumerate(targets):
        im, m = t["intensity"], t["measured"]
        r = _on_crop(rho[k], im.shape[-1])
        f = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(r)))
        ip = f.real ** 2 + f.imag ** 2
        if form == "amplitude":
            fa, y = torch.sqrt(ip + 1e-12), torch.sqrt(im)
            s = (m * fa * y).sum() / (m * ip).sum().clamp_min(1e-12)
            d = s * fa - y
            out.append((m * d * d).sum() / (m * im).sum().clamp_min(1e-12))
        else:
            s = (m * im).sum() / (m * ip).sum().clamp_min(1e-12)
            mu = s * ip + 1e-6
            lg = torch.where(im > 0, im * torch.log(im.clamp_min(1e-6) / mu), torch.zeros_like(im))
            out.append(2 * (m * (mu - im + lg)).sum() / m.sum().clamp_min(1.0))
    return torch.stack(out)


def _targets(prepared: list[dict], device) -> list[dict]:
    torch = _torch()
    return [{"intensity": torch.from_numpy(p["intensity"]).to(device),
             "measured": torch.from_numpy(p["measured"].astype(np.float32)).to(device)} for p in prepared]


def _forward(model, xb, device):
    torch = _torch()
    xb = xb[:, None].to(device)
    if device == "cpu":
        xb = xb.contiguous(memory_format=torch.channels_last_3d)
    return model(xb)


def evaluate_physics(model, prepared: list[dict], *, form: str = "amplitude", support_threshold: float = 0.1,
                     device: str = "cpu", batch: int = 8) -> np.ndarray:
    """Physics loss of every prepared pattern (dropout off); a numpy array."""
    torch = _torch()
    x = torch.from_numpy(np.stack([p["x"] for p in prepared]))
    tg = _targets(prepared, device)
    was = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            a, p = _forward(model, x[i:i + batch], device)
            out.append(physics_loss(a, p, tg[i:i + batch], form=form,
                                    support_threshold=support_threshold).cpu().numpy())
    model.train(was)
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ run

def _draw(rng) -> tuple:
    """A random symmetry of the pattern grid: axes to flip and an axis permutation."""
    return [d for d in range(3) if rng.random() < 0.5], list(rng.permutation(3))


def _apply(v, sym, batched: bool = True):
    """Flip (about index n // 2) and permute the last three axes of *v* as *sym* says."""
    torch = _torch()
    flips, perm = sym
    lead = 1 if batched else 0
    fl = [d + lead for d in flips]
    if fl:
        v = torch.roll(torch.flip(v, fl), [1 - v.shape[d] % 2 for d in fl], fl)
    return v.permute(*([0] if batched else []), *[p + lead for p in perm]).contiguous()


def _read_checkpoint(path: str, device: str, fingerprint: str) -> dict:
    """The checkpoint at *path* (tensors and plain values only: ``weights_only=True``), if it is of this run."""
    hint = "delete it or pass --no-resume"
    c = read_checkpoint(path, device, hint)
    if not isinstance(c, dict) or c.get("fingerprint") != fingerprint:
        raise CDIError(f"the checkpoint is of another adaptation (other weights, patterns or settings); {hint}", path)
    return c


def _descend(opt, loss) -> float:
    """One optimiser step on *loss*; returns its value."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def _settings(settings: dict) -> dict:
    cfg = dict(SETTINGS)
    unknown = set(settings) - set(cfg)
    if unknown:
        raise CDIError(f"unknown adapt setting(s) {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update({k: v for k, v in settings.items() if v is not None or k in ("mix", "checkpoint")})
    if cfg["loss"] not in LOSSES:
        raise CDIError(f"unknown loss {cfg['loss']!r}; use one of {', '.join(LOSSES)}")
    for k in ("epochs", "batch_size"):
        if not isinstance(cfg[k], int) or cfg[k] < 1:
            raise CDIError(f"{k} must be a positive integer, got {cfg[k]!r}")
    for k in ("lr", "mix_weight"):
        if not isinstance(cfg[k], (int, float)) or not math.isfinite(cfg[k]) or cfg[k] < 0 or (k == "lr" and cfg[k] == 0):
            raise CDIError(f"{k} must be a {'positive' if k == 'lr' else 'non-negative'} number, got {cfg[k]!r}")
    if cfg["train"] not in TRAINABLE:
        raise CDIError(f"train must be one of {', '.join(TRAINABLE)}, got {cfg['train']!r}")
    if not 0 <= cfg["support_threshold"] < 1:
        raise CDIError(f"support_threshold must be in [0, 1), got {cfg['support_threshold']!r}")
    return cfg


def adapt(patterns: list[dict], out, *, weights: str = ADAPT_FROM, settings: dict | None = None,
          command: str = "", arguments: dict | None = None, overwrite: bool = False, progress: bool = True,
          log=print) -> dict:
    """Fine-tune *weights* on *patterns* (from :func:`read_patterns`) and write the result to *out*.

    Returns ``{"out", "history", "loss_before", "loss_after"}`` (losses: per pattern, dropout off).  See
    :data:`SETTINGS` for *settings* and the module documentation for the loss.
    """
    torch = _torch()
    from tqdm import tqdm

    from cdi_plugins.algorithms.nn.network import resolve_device
    from cdi_plugins.io.atomic import atomic_path, check_writable, inputs
    cfg = _settings(settings or {})
    out = os.path.abspath(os.path.expanduser(os.fspath(out)))
    if not patterns:
        raise CDIError("no patterns to adapt on")
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg["device"])
    model, parent = load_weights(weights, device)            # notes the weights file as an input
    mix = None
    if cfg["mix"]:
        from cdi_plugins.physics.atomistic import load_set
        from cdi_plugins.io.atomic import note_input
        mpath = os.path.expanduser(os.fspath(cfg["mix"]))
        mix = load_set(mpath)
        note_input(mpath)
        size = int(parent["arch"]["size"])
        if mix["input"].shape[1:] != (size,) * 3:
            raise CDIError(f"the simulated set's patterns are {mix['input'].shape[1:]}, the network's input is "
                           f"{(size,) * 3}", mpath)
        mix_t = [torch.from_numpy(mix[k]) for k in ("input", "amplitude", "phase")]
    check_writable(out, overwrite=overwrite, protect=inputs())   # before any work
    ckpt = os.path.abspath(os.path.expanduser(cfg["checkpoint"] or out + ".ckpt"))
    check_writable(ckpt, overwrite=True, protect=inputs() + [out])
    prepared = []
    for p in patterns:
        try:
            prepared.append(prepare(p["intensity"], p["mask"], parent, oversampling=cfg["oversampling"],
                                    target_oversampling=cfg["target_oversampling"]))
        except CDIError as e:
            raise e if e.location else e.at(p["name"])
    form, thr = cfg["loss"], float(cfg["support_threshold"])
    record = {"files": [f for p in patterns for f in p["files"]],
              "patterns": [{"name": p["name"], "shape": list(np.shape(p["intensity"])),
                            "array_sha256": p["array_sha256"], "crop": q["crop"],
                            "oversampling": list(q["oversampling"])} for p, q in zip(patterns, prepared)],
              "settings": {k: v for k, v in cfg.items() if k not in ("checkpoint", "resume", "threads")},
              "command": command}
    if arguments is not None:
        record["arguments"] = arguments
    if mix is not None:
        record["mix_set"] = {"path": os.path.abspath(os.path.expanduser(os.fspath(cfg["mix"]))),
                             "sha256": _sha256(os.path.expanduser(os.fspath(cfg["mix"]))),
                             "seed": mix["seed"], "n": int(len(mix["input"]))}
    # what the run's result depends on: a resumed run must have the same (not the time limit or the device)
    same = {k: v for k, v in record["settings"].items() if k not in ("time_limit_s", "device")}
    fingerprint = hashlib.sha256(json.dumps({"weights": str(weights), "patterns": record["patterns"],
                                             "settings": same}, sort_keys=True, default=str).encode()).hexdigest()

    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last_3d)
    params = []
    for name, prm in model.named_parameters():
        prm.requires_grad_(name.startswith(TRAINABLE[cfg["train"]]))
        if prm.requires_grad:
            params.append(prm)
    opt = torch.optim.Adam(params, lr=cfg["lr"])
    before = evaluate_physics(model, prepared, form=form, support_threshold=thr, device=device)
    start, history, best, best_state = 0, [], float(before.mean()), None
    if cfg["resume"] and os.path.exists(ckpt):
        c = _read_checkpoint(ckpt, device, fingerprint)
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        start, history, best, best_state = c["epoch"], c["history"], c["best"], c["best_state"]
        rng = np.random.default_rng([cfg["seed"], start])
        log(f"resumed from {ckpt} after epoch {start}")
    else:
        log(f"physics loss ({form}) of {weights} on {len(prepared)} pattern(s): mean {before.mean():.4f}")
    x = torch.from_numpy(np.stack([p["x"] for p in prepared]))
    targets = _targets(prepared, device)
    t0 = time.time()
    for epoch in range(start, cfg["epochs"]):
        model.train()
        tot, nb = 0.0, 0
        bar = tqdm(total=len(x), desc=f"adapt {epoch + 1}/{cfg['epochs']}", disable=not progress, unit="pattern")
        order = rng.permutation(len(x))
        for i in range(0, len(x), cfg["batch_size"]):
            idx = torch.from_numpy(order[i:i + cfg["batch_size"]])
            xb, tb = x[idx], [targets[int(j)] for j in idx]
            if cfg["augment"]:         # each is the pattern of the flipped / permuted object
                sym = _draw(rng)
                xb = _apply(xb, sym)
                tb = [{k: _apply(v, sym, batched=False) for k, v in t.items()} for t in tb]
            a, p = _forward(model, xb, device)
            loss = physics_loss(a, p, tb, form=form, support_threshold=thr).mean()
            if mix is not None and cfg["mix_weight"] > 0:
                j = torch.from_numpy(rng.choice(len(mix_t[0]), size=len(idx), replace=len(mix_t[0]) < len(idx)))
                sx, sa, sp = (v[j] for v in mix_t)
                if cfg["augment"]:
                    sym = _draw(rng)
                    sx, sa, sp = (_apply(v, sym) for v in (sx, sa, sp))
                a2, p2 = _forward(model, sx, device)
                sup, _ = twin_invariant_loss(a2, p2, sa.to(device), sp.to(device))
                loss = loss + cfg["mix_weight"] * sup
            tot, nb = tot + _descend(opt, loss), nb + 1
            bar.update(len(idx))
            bar.set_postfix(loss=f"{tot / nb:.4f}")
        bar.close()
        ev = evaluate_physics(model, prepared, form=form, support_threshold=thr, device=device)
        rec = {"epoch": epoch + 1, "train_loss": tot / max(nb, 1), "physics_loss": float(ev.mean()),
               "seconds": time.time() - t0}
        history.append(rec)
        log(f"epoch {epoch + 1}: train loss {rec['train_loss']:.4f}  physics loss {rec['physics_loss']:.4f}")
        if rec["physics_loss"] < best:
            best = rec["physics_loss"]
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        with atomic_path(ckpt, overwrite=True, protect=inputs() + [out]) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                        "history": history, "best": best, "best_state": best_state,
                        "fingerprint": fingerprint}, tmp)
        if cfg["time_limit_s"] is not None and time.time() - t0 > cfg["time_limit_s"] and epoch + 1 < cfg["epochs"]:
            log(f"time limit reached after epoch {epoch + 1}; the same command resumes")
            return {"out": None, "history": history, "loss_before": before, "loss_after": None,
                    "checkpoint": ckpt}
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        log("no epoch lowered the physics loss: the written weights are the starting ones")
    after = evaluate_physics(model, prepared, form=form, support_threshold=thr, device=device)
    record.update({"history": history, "loss_before": before.tolist(), "loss_after": after.tolist(),
                   "best_epoch": (min(history, key=lambda r: r["physics_loss"])["epoch"]
                                  if best_state is not None else 0)})
    meta = {k: v for k, v in parent.items() if k not in ("format", "arch", "arch_hash", "parameters", "held_out",
                                                         "check", "adapted", "init")}
    meta["init"] = {k: v for k, v in parent.items() if k not in ("format", "arch", "parameters")}
    meta["init"]["weights"] = str(weights)
    meta["adapted"] = record
    meta["command"] = command
    cpu_model = model.to("cpu").to(memory_format=torch.contiguous_format)
    with atomic_path(out, overwrite=overwrite, protect=inputs()) as tmp:
        save_weights(cpu_model, tmp, meta)
    os.remove(ckpt)
    return {"out": out, "history": history, "loss_before": before, "loss_after": after}
