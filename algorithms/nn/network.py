"""3D-CDI-NN (Chan et al., Appl. Phys. Rev. 8, 021407, 2021) in PyTorch: network, loss, training, weights.

The network maps sqrt(I) on a 32^3 grid (max-normalised, Bragg peak at the centre) to the amplitude and
the phase of the object.  One shared 3-D conv encoder (blocks of two 3x3x3 convs + ReLU, then max-pool 2,
at 32/64/128 channels) and two mirrored decoders (two convs + ReLU, then upsample x2, at 128/64/32
channels) ending in a one-channel conv with a sigmoid; the phase p in [0, 1] is decoded as
(p - 0.5) * 2 pi.  Dropout after every conv as published.  ``width=1`` is the published network
(3.46 M parameters); ``width=0.25`` is the CPU-trainable variant the package ships.

The loss does not punish what the data cannot determine: for every sample it is computed against the
truth and against its twin conj(truth(-r)) and the smaller is kept; the phase term compares unit
phasors weighted by the true amplitude after the best global phase.

Weights are saved as a ``.pt`` holding ``{"state_dict", "meta"}``; ``meta`` records the format version,
the architecture and its hash, the training command, seed, data settings and validation figures.
:func:`load_weights` checks all of that and raises :class:`CDIError` on any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

import numpy as np

from cdi_plugins.errors import CDIError

__all__ = ["CDINN", "arch_hash", "twin_invariant_loss", "save_weights", "load_weights", "train",
           "evaluate", "WEIGHTS_FORMAT", "builtin_weights", "twin_torch", "estimate_oversampling", "crop_pad",
           "fourier_resample", "to_network", "from_network", "figures", "predict_batch", "resolve_device",
           "check_figures"]

WEIGHTS_FORMAT = 1
_BASE = (32, 64, 128)


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        raise CDIError(f"the neural predictor needs PyTorch ({e}); pip install torch") from None
    return torch


def channels(width: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(c * width))) for c in _BASE)


def arch_dict(width: float = 1.0, dropout: float = 0.1, size: int = 32) -> dict:
    return {"name": "3dcdinn", "size": int(size), "channels": list(channels(width)), "dropout": float(dropout)}


def arch_hash(arch: dict) -> str:
    """Short hash of what determines the parameter shapes (dropout does not)."""
    key = json.dumps({"name": arch["name"], "size": arch["size"], "channels": arch["channels"]}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def CDINN(width: float = 1.0, dropout: float = 0.1, size: int = 32):
    """Build the network (a ``torch.nn.Module``); ``forward(x)`` with x (B, 1, n, n, n) -> (amp, phase)."""
    torch = _torch()
    nn = torch.nn
    c1, c2, c3 = channels(width)

    def block(cin, cout):
        layers = [nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Conv3d(cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        return layers

    class _Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.arch = arch_dict(width, dropout, size)
            self.encoder = nn.Sequential(*block(1, c1), nn.MaxPool3d(2), *block(c1, c2), nn.MaxPool3d(2),
                                         *block(c2, c3), nn.MaxPool3d(2))

            def decoder():
                return nn.Sequential(*block(c3, c3), nn.Upsample(scale_factor=2), *block(c3, c2),
                                     nn.Upsample(scale_factor=2), *block(c2, c1), nn.Upsample(scale_factor=2),
                                     nn.Conv3d(c1, 1, 3, padding=1), nn.Sigmoid())
            self.amp = decoder()
            self.phase = decoder()
            # He (Kaiming) initialisation: with PyTorch's default the signal shrinks ~6x per conv, and
            # after 14 convs without normalisation the output no longer depends on the input at all.
            for mod in self.modules():
                if isinstance(mod, nn.Conv3d):
                    nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                    nn.init.zeros_(mod.bias)
            # Start the amplitude near its typical mean (a crystal fills ~5 % of the grid) instead of
            # sigmoid(0) = 0.5: the first steps otherwise drive the sigmoid into saturation at 0 and the
            # network never recovers (an empty prediction).
            with torch.no_grad():
                self.amp[-2].bias.fill_(-3.0)

        def forward(self, x):
            z = self.encoder(x)
            return self.amp(z)[:, 0], (self.phase(z)[:, 0] - 0.5) * (2 * math.pi)

    return _Net()


# ------------------------------------------------------------------------------------------ loss

def twin_torch(a):
    """conj(a(-r)) about index n // 2 for a batch (B, n, n, n) of even-sized complex arrays."""
    torch = _torch()
    out = torch.flip(a, dims=(-3, -2, -1)).conj()
    shifts = tuple(1 - n % 2 for n in a.shape[-3:])
    return torch.roll(out, shifts=shifts, dims=(-3, -2, -1))


def twin_invariant_loss(amp, phase, t_amp, t_phase, amp_weight: float = 1.0):
    """Per-batch loss, the smaller of (truth, twin) per sample; returns (loss, which candidate).

    For a candidate T = |T| exp(i psi) (the truth or its twin conj(T(-r))):

    - amplitude: ``||A - |T| ||^2 / ||T||^2`` (0 when right, 1 for an empty prediction);
    - phase: ``1 - |sum w exp(i (phi - psi))| / sum w`` with ``w = |T|``: the unit phasors compared where
      the crystal is, after the best global phase (the modulus of the sum removes it), in [0, 1].

    The two terms are independent, so a still-random phase never pushes the amplitude towards zero.
    """
    torch = _torch()
    dims = (-3, -2, -1)
    t = torch.polar(t_amp, t_phase)
    losses = []
    for cand in (t, twin_torch(t)):
        ca = cand.abs()
        cphase = torch.angle(cand)
        tn = (ca ** 2).sum(dim=dims).clamp_min(1e-8)
        la = ((amp - ca) ** 2).sum(dim=dims) / tn
        d = phase - cphase
        wsum = ca.sum(dim=dims).clamp_min(1e-8)
        c = (ca * torch.cos(d)).sum(dim=dims)
        s = (ca * torch.sin(d)).sum(dim=dims)
        lp = 1.0 - torch.sqrt(c * c + s * s + 1e-12) / wsum
        losses.append(amp_weight * la + lp)
    both = torch.stack(losses, dim=1)
    best, which = both.min(dim=1)
    return best.mean(), which


# ------------------------------------------------------------------------------------------ figures

def _twin_np(a):
    out = np.conj(np.flip(a))
    return np.roll(out, tuple(1 - n % 2 for n in a.shape), axis=tuple(range(a.ndim)))


def figures(pred_amp, pred_phase, t_amp, t_phase, t_support, threshold: float = 0.5) -> dict:
    """IoU, amplitude error and phase RMS (inside the true support) after removing twin and global phase.

    The predicted support is ``pred_amp > threshold * max``.  The amplitude error is
    ``||A - |T| || / || |T| ||`` over the array.  Phase RMS is the amplitude-unweighted RMS of the wrapped
    phase difference inside the true support, after the best global phase offset.  The better of the
    prediction and its twin (by the complex error) is used.
    """
    p = pred_amp * np.exp(1j * pred_phase)
    t = t_amp * np.exp(1j * t_phase)
    best = None
    for cand, is_twin in ((p, False), (_twin_np(p), True)):
        inner = np.vdot(cand, t)                            # sum conj(cand) t
        c = inner / abs(inner) if abs(inner) > 0 else 1.0
        al = cand * c
        err = float(np.linalg.norm(al - t) / np.linalg.norm(t))
        if best is None or err < best[0]:
            best = (err, al, is_twin)
    err, al, is_twin = best
    a = np.abs(al)
    sup = a > threshold * a.max()
    inter = float(np.logical_and(sup, t_support).sum())
    union = float(np.logical_or(sup, t_support).sum())
    d = np.angle(al[t_support] * np.conj(t[t_support]))
    d = np.angle(np.exp(1j * (d - np.angle(np.mean(np.exp(1j * d))))))   # best global offset on the support
    return {"iou": inter / union if union else 0.0,
            "amp_error": float(np.linalg.norm(a - t_amp) / np.linalg.norm(t_amp)),
            "phase_rms": float(np.sqrt(np.mean(d ** 2))), "complex_error": err, "twin": is_twin}


# ------------------------------------------------------------------------------------------ weights

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")


def builtin_weights() -> dict:
    """Shipped weights by name: ``{name: path}`` (the ``.pt`` files next to this module)."""
    wdir = WEIGHTS_DIR
    if not os.path.isdir(wdir):
        return {}
    return {f[:-3]: os.path.join(wdir, f) for f in sorted(os.listdir(wdir)) if f.endswith(".pt")}


def save_weights(model, path, meta: dict) -> None:
    """Write ``{"state_dict", "meta"}`` atomically; *meta* gets version, architecture and hash."""
    torch = _torch()
    meta = dict(meta)
    meta.update({"format": WEIGHTS_FORMAT, "arch": model.arch, "arch_hash": arch_hash(model.arch),
                 "parameters": int(sum(p.numel() for p in model.parameters()))})
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tmp = os.fspath(path) + ".tmp"
    torch.save({"state_dict": sd, "meta": meta}, tmp)
    os.replace(tmp, path)


def load_weights(name_or_path: str, device: str = "cpu"):
    """Load a network from a built-in name or a ``.pt`` file; returns ``(model, meta)`` in eval mode.

    Raises
    ------
    CDIError
        Unknown name, missing or unreadable file, wrong format version, or parameters that do not match
        the recorded architecture.
    """
    torch = _torch()
    known = builtin_weights()
    path = known.get(name_or_path, name_or_path)
    if not os.path.exists(path):
        names = ", ".join(known) or "none installed"
        raise CDIError(f"no such weights file or built-in name (built-in: {names})", str(name_or_path))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CDIError(f"cannot read weights ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None
    if not isinstance(blob, dict) or "state_dict" not in blob or "meta" not in blob:
        raise CDIError("not a cdi-plugins 3D-CDI-NN weights file (expected keys state_dict and meta)", path)
    meta = blob["meta"]
    if meta.get("format") != WEIGHTS_FORMAT:
        raise CDIError(f"weights format {meta.get('format')!r} is not supported (expected {WEIGHTS_FORMAT})", path)
    arch = meta.get("arch") or {}
    try:
        if arch_hash(arch) != meta.get("arch_hash"):
            raise CDIError("the architecture hash does not match the recorded architecture", path)
        ch = arch["channels"]
        model = CDINN(width=ch[0] / _BASE[0], dropout=arch.get("dropout", 0.0), size=arch["size"])
    except (KeyError, TypeError, IndexError) as e:
        raise CDIError(f"malformed architecture record in the weights ({e})", path) from None
    if list(model.arch["channels"]) != list(ch):
        raise CDIError(f"unsupported channel layout {ch}", path)
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as e:
        raise CDIError("the weights do not match the architecture they record: "
                       + str(e).splitlines()[0][:300], path) from None
    model.eval()
    return model.to(device), meta


# ------------------------------------------------------------------------------------------ training

def resolve_device(device: str = "auto") -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CDIError("device 'cuda' asked for, but PyTorch sees no CUDA device; use device: cpu or auto")
    return device


def _batches(n, bs, rng):
    idx = rng.permutation(n)
    for i in range(0, n, bs):
        yield idx[i:i + bs]


def predict_batch(model, x: np.ndarray, device="cpu", batch: int = 16):
    """Amplitude and phase (numpy) for inputs x (N, n, n, n)."""
    torch = _torch()
    amps, phases = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))[:, None].to(device)
            a, p = model(xb)
            amps.append(a.cpu().numpy())
            phases.append(p.cpu().numpy())
    return np.concatenate(amps), np.concatenate(phases)


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
    """Train from a cached set (see :func:`cdi_plugins.atomistic.make_set`) as described by *config*.

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
        c = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        start, history, best = c["epoch"], c["history"], c["best"]
        rng = np.random.default_rng([cfg["seed"], start])
        log(f"resumed from {ckpt} at epoch {start}")
    # the oversampling the network is trained at, measured by the same estimator the nn step uses
    os_target = float(np.median([min(estimate_oversampling(x.astype(np.float32) ** 2)) for x in va["input"]]))
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


# ------------------------------------------------------------------------------------------ resampling

def estimate_oversampling(intensity, mask=None, threshold: float = 0.1, sigma: float = 1.0) -> tuple:
    """Oversampling per axis from the intensity autocorrelation: ``os = 2 N / e``.

    *e* is the extent (pixels) of the smoothed autocorrelation above *threshold* of its maximum; the
    autocorrelation of an object of extent w spans 2 w, so os = N / w.  *intensity* is centred (peak at
    ``n // 2``); masked pixels are set to 0 first.
    """
    import scipy.fft
    import scipy.ndimage
    i = np.array(intensity, dtype=np.float32)
    if mask is not None:
        i[np.asarray(mask, dtype=bool)] = 0.0
    ac = np.abs(scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(i))))
    if sigma:
        ac = scipy.ndimage.gaussian_filter(ac, sigma, mode="wrap")
    above = ac > threshold * ac.max()
    out = []
    for k, n in enumerate(i.shape):
        idx = np.flatnonzero(above.any(axis=tuple(j for j in range(3) if j != k)))
        e = (idx[-1] - idx[0] + 1) if idx.size else n
        out.append(float(2.0 * n / e))
    return tuple(out)


def crop_pad(a, shape, value=0):
    """Centre-crop or zero-pad *a* to *shape*, keeping index ``n // 2`` at ``m // 2``."""
    a = np.asarray(a)
    out = np.full(tuple(shape), value, dtype=a.dtype)
    src, dst = [], []
    for n, m in zip(a.shape, shape):
        lo = n // 2 - m // 2                    # source index that lands at 0
        s0, d0 = max(lo, 0), max(-lo, 0)
        length = min(n - s0, m - d0)
        src.append(slice(s0, s0 + length))
        dst.append(slice(d0, d0 + length))
    out[tuple(dst)] = a[tuple(src)]
    return out


def fourier_resample(a, shape):
    """Band-limited (Fourier) interpolation of a centred complex array onto *shape* (same field of view).

    The centred spectrum is cropped or zero-padded; values keep their scale, so resampling up and back
    down returns the original exactly.
    """
    import scipy.fft
    a = np.asarray(a, dtype=np.complex128)
    f = scipy.fft.fftshift(scipy.fft.fftn(scipy.fft.ifftshift(a)))
    f = crop_pad(f, shape)
    out = scipy.fft.fftshift(scipy.fft.ifftn(scipy.fft.ifftshift(f)))
    return out * (np.prod(shape) / np.prod(a.shape))


def to_network(intensity, mask=None, *, target: float = 2.0, size: int = 32, oversampling=None) -> tuple:
    """Map a centred pattern of any size onto the network grid at the trained oversampling.

    The pattern is cropped (or zero-padded) to C pixels on every axis around the peak, with
    ``C = size * os_min / target``, then interpolated to ``size`` pixels per axis: the smallest per-axis
    oversampling becomes *target* and the aspect of the data is kept.  Returns ``(x, C, os)`` with x the
    network input (sqrt(I), max 1, float32).
    """
    import scipy.ndimage
    i = np.array(intensity, dtype=np.float32)
    if mask is not None:
        i[np.asarray(mask, dtype=bool)] = 0.0
    os_ = tuple(oversampling) if oversampling is not None else estimate_oversampling(i)
    c = max(4, int(round(size * min(os_) / target)))
    crop = crop_pad(i, (c, c, c))
    if c != size:
        coords = np.meshgrid(*[c // 2 + (np.arange(size) - size // 2) * (c / size)] * 3, indexing="ij")
        crop = scipy.ndimage.map_coordinates(crop, coords, order=1, mode="constant", cval=0.0)
    x = np.sqrt(np.clip(crop, 0, None)).astype(np.float32)
    m = float(x.max())
    return (x / m if m > 0 else x), c, os_


def from_network(obj, data_shape, c: int) -> np.ndarray:
    """Map an object predicted on the network grid back onto the data's grid (Fourier interpolation).

    A network voxel spans ``N_k / c`` data voxels on axis k, so the network's field of view covers
    ``size * N_k / c`` data voxels: the object is Fourier-resampled to that many voxels, then centre-cropped
    or padded to the data shape.
    """
    obj = np.asarray(obj)
    m = tuple(max(1, int(round(obj.shape[k] * data_shape[k] / c))) for k in range(3))
    return crop_pad(fourier_resample(obj, m), data_shape).astype(np.complex64)


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
