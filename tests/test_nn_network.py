"""Tests for the nn plugin's network module: the 3D-CDI-NN model, its twin-invariant loss, figures and weights files."""

import math
import os

import numpy as np
import pytest
import torch

from cdi_plugins import CDIError
from cdi_plugins.algorithms.nn.network import (CDINN, builtin_weights, figures, load_weights, save_weights,
                                               twin_invariant_loss, twin_torch)
from tests.helpers import SHIPPED, CodePayload, needs_weights


def test_full_network_matches_the_published_size():
    n = sum(p.numel() for p in CDINN(1.0).parameters())
    assert 3.4e6 < n < 3.5e6                                  # paper: about 3.46 M
    m = CDINN(0.25, 0.0).eval()
    with torch.no_grad():
        a, p = m(torch.rand(2, 1, 32, 32, 32))
    assert a.shape == p.shape == (2, 32, 32, 32)
    assert a.min() >= 0 and a.max() <= 1 and p.abs().max() <= math.pi

def test_loss_ignores_global_phase_and_twin():
    g = torch.Generator().manual_seed(0)
    amp = torch.zeros(2, 32, 32, 32)
    amp[:, 10:20, 12:22, 9:23] = torch.rand(2, 10, 10, 14, generator=g)
    phase = torch.rand(2, 32, 32, 32, generator=g) - 0.5
    ref, _ = twin_invariant_loss(amp, phase, amp, phase)
    assert float(ref) < 1e-5
    shifted = torch.angle(torch.exp(1j * (phase + 1.3)))    # global phase offset
    assert float(twin_invariant_loss(amp, shifted, amp, phase)[0]) < 1e-5
    tw = twin_torch(torch.polar(amp, phase))
    loss, which = twin_invariant_loss(tw.abs(), tw.angle(), amp, phase)
    assert float(loss) < 1e-5 and which.tolist() == [1, 1]
    wrong, _ = twin_invariant_loss(amp, -phase, amp, phase)  # conjugate without the flip: not the same object
    assert float(wrong) > 1e-3

def test_bad_weights_files_give_clear_errors(tmp_path):
    with pytest.raises(CDIError, match="no such weights"):
        load_weights(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CDIError, match="cannot read weights"):
        load_weights(str(junk))
    torch.save({"foo": 1}, tmp_path / "other.pt")
    with pytest.raises(CDIError, match="not a cdi-plugins"):
        load_weights(str(tmp_path / "other.pt"))
    m = CDINN(0.25, 0.0)
    good = tmp_path / "good.pt"
    save_weights(m, good, {"command": "test"})
    model, meta = load_weights(str(good))
    assert meta["parameters"] == sum(p.numel() for p in m.parameters())
    blob = torch.load(good, weights_only=True)
    blob["meta"]["arch"]["channels"] = [16, 32, 64]            # record says one size, tensors another
    torch.save(blob, tmp_path / "lying.pt")
    with pytest.raises(CDIError, match="architecture hash|do not match"):
        load_weights(str(tmp_path / "lying.pt"))
    from cdi_plugins.algorithms.nn.network import arch_hash
    blob["meta"]["arch_hash"] = arch_hash(blob["meta"]["arch"])
    torch.save(blob, tmp_path / "lying2.pt")
    with pytest.raises(CDIError, match="do not match the architecture"):
        load_weights(str(tmp_path / "lying2.pt"))

def test_figures_are_twin_and_phase_invariant():
    rng = np.random.default_rng(1)
    amp = np.zeros((32, 32, 32), np.float32)
    amp[10:21, 11:22, 9:24] = 1
    ph = (0.5 * rng.normal(size=amp.shape)).astype(np.float32)
    sup = amp > 0.5
    tw = np.conj(np.roll(np.flip(amp * np.exp(1j * (ph + 2.0))), 1, axis=(0, 1, 2)))
    f = figures(np.abs(tw), np.angle(tw), amp, ph, sup)
    assert f["iou"] == pytest.approx(1.0) and f["phase_rms"] < 1e-5 and f["twin"]


@needs_weights
def test_shipped_weights_load_by_name_from_the_package():
    from cdi_plugins.algorithms.nn import network
    paths = builtin_weights()
    assert {SHIPPED, "au32_w025"} <= set(paths)
    assert os.path.basename(network.WEIGHTS_DIR) == "weights"
    assert all(os.path.dirname(p) == network.WEIGHTS_DIR and p.endswith(".pt") for p in paths.values())
    model, meta = load_weights(SHIPPED)
    assert not model.training and meta["arch"]["size"] == 32
    assert meta["parameters"] == sum(p.numel() for p in model.parameters())


def test_weights_files_are_read_without_running_code_in_them(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "meta": CodePayload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CDIError, match="evil.pt: cannot read weights"):
        load_weights(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_onednn_inference_predicts_what_the_generic_path_predicts():
    # the nn step runs every convolution through oneDNN; the weights and the state dict stay the same,
    # the predictions agree to float32 rounding, and training (gradients on) keeps PyTorch's own path
    import copy

    from cdi_plugins.algorithms.nn.network import onednn_inference
    torch.manual_seed(0)
    model = CDINN(width=0.25, dropout=0.0).eval()
    fast = onednn_inference(copy.deepcopy(model))
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), model.state_dict().values()))
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        (a0, p0), (a1, p1) = model(x), fast(x)
    assert a1.shape == a0.shape == (1, 32, 32, 32)
    assert float((a1 - a0).abs().max()) < 1e-5 and float((p1 - p0).abs().max()) < 1e-4
    # with gradients on, the output is differentiable as before
    a2, p2 = fast(x)
    (a2.sum() + p2.sum()).backward()
    assert all(p.grad is not None for p in fast.parameters())
