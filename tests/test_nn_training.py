"""Tests for the nn plugin's training module: training, fine-tuning, evaluation and the shipped weights' check."""

import numpy as np
import pytest
import torch

from cdi_plugins import CDIError
from cdi_plugins.algorithms.nn.mapping import OVERSAMPLING_PRESET
from cdi_plugins.algorithms.nn.network import load_weights
from cdi_plugins.algorithms.nn.training import check_figures, train
from cdi_plugins.compute.fourier import oversampling
from cdi_plugins.physics.atomistic import load_set
from tests.helpers import SHIPPED, CodePayload, needs_weights


@needs_weights
def test_the_default_weights_are_the_third_stage_and_beat_the_second_on_the_held_out_set():
    from cdi_plugins.algorithms.nn.plugin import DEFAULT_WEIGHTS
    assert DEFAULT_WEIGHTS == "au32_w025_ft2"
    _, meta = load_weights(DEFAULT_WEIGHTS)
    _, parent = load_weights(SHIPPED)
    # fine-tuned from the second stage, whose record (and its own parent's) it carries
    assert meta["init"]["weights"] == SHIPPED and meta["init"]["epochs_trained"] == 8
    assert meta["init"]["init"]["weights"] == "au32_w025"
    assert meta["train_set"]["n"] == 1500 and meta["seed"] == 21
    new, old = meta["held_out"], parent["held_out"]
    assert new["set"] == old["set"] and new["seed"] == old["seed"] == 3 and new["n"] == old["n"] == 200
    assert new["iou"] > old["iou"] and new["phase_rms"] < old["phase_rms"]
    assert new["amp_error"] < old["amp_error"]


@needs_weights
@pytest.mark.parametrize("name", [SHIPPED, "au32_w025", "au32_w025_ft2"])
def test_shipped_weights_reproduce_their_recorded_figures(name):
    model, meta = load_weights(name)
    for key in ("version", "command", "seed", "train_set", "val_set", "check", "held_out", "arch_hash"):
        assert key in meta
    if name == SHIPPED:          # the second stage records the first, which ships beside it
        assert meta["init"]["weights"] == "au32_w025" and meta["init"]["epochs_trained"] == 5
        assert meta["held_out"]["iou"] >= 0.8 and meta["held_out"]["phase_rms"] <= 0.5   # issue targets
    rec = meta["check"]
    now = check_figures(model, n=rec["n"], seed=rec["seed"])
    for k in ("iou", "amp_error", "phase_rms"):
        assert now[k] == pytest.approx(rec[k], abs=0.01), k

def test_fine_tuning_starts_from_weights_and_records_them(tmp_path, capsys):
    """``init`` in a training config: the new weights start from the given ones (same architecture)
    and record how those were trained; a file of another width is refused with a clear error."""
    import torch

    from cdi_plugins.cli import main
    data = tmp_path / "s.h5"
    assert main(["simulate-set", str(data), "--n", "2", "--seed", "4", "-q"]) == 0
    base = f"train: {data}\nval: {data}\ndropout: 0.0\nbatch_size: 2\nthreads: 1\nwidth: 0.125\n"
    first = tmp_path / "first.pt"
    (tmp_path / "a.yaml").write_text(base + f"out: {first}\nepochs: 1\ncommand: stage one\n")
    assert main(["train", str(tmp_path / "a.yaml"), "-q"]) == 0
    second = tmp_path / "second.pt"
    # lr 1e-12: the fine-tuned network must still be the one it started from
    (tmp_path / "b.yaml").write_text(base + f"out: {second}\nepochs: 1\nlr: 1.0e-12\ninit: {first}\n")
    assert main(["train", str(tmp_path / "b.yaml"), "-q"]) == 0
    m1, meta1 = load_weights(str(first))
    m2, meta2 = load_weights(str(second))
    assert meta2["init"]["command"] == "stage one" and meta2["init"]["weights"] == str(first)
    assert meta2["init"]["history"] == meta1["history"] and "init" not in meta1
    # the oversampling the weights were trained at is the nn step's ("smoothed") estimate of the set
    val = load_set(str(data))["input"]
    assert meta1["oversampling_target"] == float(np.median(
        [min(oversampling(x.astype(np.float32) ** 2, preset=OVERSAMPLING_PRESET)) for x in val]))
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), k
    (tmp_path / "c.yaml").write_text(base.replace("width: 0.125", "width: 0.25")
                                     + f"out: {tmp_path / 'c.pt'}\nepochs: 1\ninit: {first}\n")
    assert main(["train", str(tmp_path / "c.yaml"), "-q"]) == 2
    assert "init weights have channels [4, 8, 16]" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    from cdi_plugins.physics.atomistic import make_set
    data = make_set(tmp_path / "s.h5", 2, seed=4)
    out, marker = tmp_path / "w.pt", tmp_path / "ran"
    torch.save({"model": CodePayload(str(marker))}, str(out) + ".ckpt")
    cfg = {"train": data, "val": data, "out": str(out), "width": 0.125, "epochs": 1, "threads": 1}
    with pytest.raises(CDIError, match="w.pt.ckpt: cannot read the checkpoint"):
        train(cfg, progress=False, log=lambda *a: None)
    assert not marker.exists() and not out.exists()
