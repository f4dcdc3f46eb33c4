"""3D-CDI-NN (Chan et al., Appl. Phys. Rev. 8, 021407, 2021) in PyTorch: network, loss, figures, weights.

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

Training and evaluation on simulated sets live in :mod:`.training`; putting a pattern onto the network's
grid and the prediction back onto the data's, in :mod:`.mapping`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from cdi_plugins.compute.metrics import twin
from cdi_plugins.errors import CDIError
from cdi_plugins.io.atomic import note_input

__all__ = ["CDINN", "arch_hash", "twin_invariant_loss", "save_weights", "load_weights", "WEIGHTS_FORMAT",
           "builtin_weights", "twin_torch", "figures", "predict_batch", "resolve_device", "onednn_inference",
           "read_checkpoint"]

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
    for cand, is_twin in ((p, False), (twin(p), True)):
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


def read_checkpoint(path: str, device: str, hint: str):
    """A training or adaptation checkpoint (tensors and plain values only: ``weights_only=True``, so reading
    it cannot run code); one CDIError naming the file, ending with *hint*, when it cannot be read."""
    from cdi_plugins.errors import CDIError
    try:
        return _torch().load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise CDIError(f"cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); {hint}",
                       path) from None


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
        note_input(path)  # no output of this run may replace it (cdi_plugins.io.atomic)
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


# ------------------------------------------------------------------------------------------ running

def resolve_device(device: str = "auto") -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CDIError("device 'cuda' asked for, but PyTorch sees no CUDA device; use device: cpu or auto")
    return device


def onednn_inference(model):
    """Make every 3-D convolution of *model* call oneDNN directly on the CPU, for inference; returns it.

    PyTorch sends a float32 3-D convolution to oneDNN only above a size heuristic (batch > 1, or a
    large first-layer input); a single 32^3 prediction of this network falls below it and runs in
    the generic ``slow_conv3d`` loop, about 9x slower per convolution on one thread (73 ms against
    8 ms for the whole network, measured 2026-11-30).  The weights and state dict are unchanged; a
    convolution still takes PyTorch's own path when gradients are on, off the CPU, or for another
    dtype.  The results agree with the generic path to float32 rounding (about 1e-6 relative).
    """
    torch = _torch()
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return model
    import types
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv3d) and mod.padding_mode == "zeros" and isinstance(mod.padding, tuple):
            mod.forward = types.MethodType(_onednn_conv_forward, mod)
    return model


def _onednn_conv_forward(self, x):
    torch = _torch()
    if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled():
        return type(self).forward(self, x)
    return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                    self.groups)


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
