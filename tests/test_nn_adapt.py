"""Tests for ``cdi adapt`` (algorithms/nn/adapt.py): the physics loss, adaptation on a shifted domain, the
command's files, resume and errors."""

import hashlib
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cdi_plugins.algorithms.nn.adapt import adapt, evaluate_physics, physics_loss, prepare, read_patterns  # noqa: E402
from cdi_plugins.algorithms.nn.network import load_weights  # noqa: E402
from cdi_plugins.physics.atomistic import atomistic_crystal  # noqa: E402

SHIFTED = {"strain_phase": (3.0, 5.0), "gap_prob": 0.0}   # far stronger strain than the weights were trained on


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _on_network_grid(rho, c, size=32):
    """The data-grid object as the network should predict it from a C-pixel crop (voxel N / C data voxels)."""
    from cdi_plugins.compute.fourier import crop_pad, fourier_resample
    m = round(size * rho.shape[0] / c)
    return fourier_resample(crop_pad(rho, (m,) * 3), (size,) * 3)


def _loss(obj, prep, **kw):
    t = [{"intensity": torch.from_numpy(prep["intensity"]),
          "measured": torch.from_numpy(prep["measured"].astype(np.float32))}]
    a = torch.from_numpy(np.abs(obj).astype(np.float32))[None]
    p = torch.from_numpy(np.angle(obj).astype(np.float32))[None]
    return float(physics_loss(a, p, t, **kw)[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_physics_loss_is_near_zero_for_the_truth_and_blind_to_twin_and_global_phase(seed):
    from cdi_plugins.compute.metrics import twin
    _, meta = load_weights("au32_w025_ft")
    s = atomistic_crystal([4100, seed], shape=32, **SHIFTED)
    s["mask"][:, :, 20] = True                           # a masked plane: left out of the loss
    s["intensity"][:, :, 20] = 1e9                       # whatever it holds
    prep = prepare(s["intensity"], s["mask"], meta)
    truth = _on_network_grid(s["rho"], prep["crop"])
    truth = truth / np.abs(truth).max()
    ok = _loss(truth, prep, support_threshold=0.0)
    assert ok < 0.01                                     # Poisson noise and the crop's edge only
    assert _loss(twin(truth) * np.exp(1.3j), prep, support_threshold=0.0) == pytest.approx(ok, rel=1e-3, abs=1e-5)
    wrong = np.abs(truth) * np.exp(1j * np.roll(np.angle(truth), 3, axis=0))
    assert _loss(wrong, prep, support_threshold=0.0) > 10 * ok
    assert _loss(truth, prep, form="poisson", support_threshold=0.0) < _loss(wrong, prep, form="poisson",
                                                                              support_threshold=0.0)


@pytest.mark.slow
def test_adaptation_lowers_the_physics_loss_on_held_out_patterns_of_a_shifted_domain(tmp_path):
    # 8 unlabelled patterns, 6 epochs; held out: 4 other crystals of the same domain.  Measured over three
    # pattern sets x two seeds (lr 3e-4, 6 epochs): after / before = 0.71-0.86; asserted: < 0.92.
    tr = [atomistic_crystal([300, i], shape=32, **SHIFTED) for i in range(8)]
    te = [atomistic_crystal([301, i], shape=32, **SHIFTED) for i in range(4)]
    files = []
    for i, s in enumerate(tr):
        files.append(tmp_path / f"p{i}.npy")
        np.save(files[-1], s["intensity"])
    out = tmp_path / "adapted.pt"
    res = adapt(read_patterns(files), out, settings={"epochs": 6, "lr": 3e-4, "threads": 1, "seed": 1},
                progress=False, log=lambda *a: None)

    def held_out(w):
        model, meta = load_weights(w)
        return evaluate_physics(model, [prepare(s["intensity"], s["mask"], meta) for s in te]).mean()
    before, after = held_out("au32_w025_ft"), held_out(str(out))
    assert after < 0.92 * before, (before, after)
    assert res["loss_after"].mean() < res["loss_before"].mean()
    # the record: files and their SHA-256, the loss history, the settings
    _, meta = load_weights(str(out))
    rec = meta["adapted"]
    assert [f["sha256"] for f in rec["files"]] == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert [h["epoch"] for h in rec["history"]] == list(range(1, 7))
    assert rec["settings"]["lr"] == 3e-4 and meta["init"]["weights"] == "au32_w025_ft"
    assert meta["oversampling_target"] == load_weights("au32_w025_ft")[1]["oversampling_target"]
    assert not os.path.exists(str(out) + ".ckpt")        # removed once the weights are written


@pytest.mark.slow
def test_cli_adapt_writes_weights_the_nn_step_takes_by_path_and_resumes(tmp_path, capsys):
    import cdi_plugins
    from cdi_plugins.cli import main
    files = []
    for i in range(2):
        s = atomistic_crystal([4200, i], shape=32, **SHIFTED)
        files.append(str(tmp_path / f"p{i}.npy"))
        np.save(files[-1], s["intensity"])
    out = tmp_path / "beam.pt"
    args = ["adapt", *files, "--out", str(out), "--epochs", "2", "--threads", "1", "-q"]
    assert main(args + ["--time-limit", "0"]) == 0          # stops after epoch 1, keeps the checkpoint
    assert not out.exists()
    ckpt = torch.load(str(out) + ".ckpt", weights_only=True)   # loads safely
    assert ckpt["epoch"] == 1
    assert main(args) == 0                                 # the same command continues
    assert "mean" in capsys.readouterr().out
    _, meta = load_weights(str(out))
    assert [h["epoch"] for h in meta["adapted"]["history"]] == [1, 2]
    assert meta["adapted"]["arguments"]["epochs"] == 2 and meta["adapted"]["arguments"]["inputs"] == files
    # the nn step takes it by path
    recipe = {"name": "t", "data": {"simulate": {"shape": 32, "seed": 1, "counts": 1e8}},
              "steps": [{"algorithm": "nn", "weights": str(out)}]}
    res = cdi_plugins.run(recipe, write=False)
    assert res.history[0]["algorithm"] == "nn" and np.isfinite(res.history[0]["chi2"])
    # an existing output is not replaced without --overwrite; never an input, even with it
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    before = open(files[0], "rb").read()
    assert main(["adapt", *files, "--out", files[0], "--overwrite", "--epochs", "1", "-q"]) == 2
    assert open(files[0], "rb").read() == before


def test_cli_adapt_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    from cdi_plugins.cli import main
    missing = tmp_path / "nope.npy"
    assert main(["adapt", str(missing), "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert "nope.npy" in err and "Traceback" not in err
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((16, 16, 16), np.float32))
    assert main(["adapt", str(flat), "--out", str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err
    assert "flat.npy" in err and "oversampling" in err
    two_d = tmp_path / "img.npy"
    np.save(two_d, np.ones((16, 16), np.float32))
    assert main(["adapt", str(two_d), "--out", str(tmp_path / "o.pt")]) == 2
    assert "img.npy" in capsys.readouterr().err
    small_mask = tmp_path / "mask8.npy"
    np.save(small_mask, np.zeros((8, 8, 8), bool))
    assert main(["adapt", str(flat), "--out", str(tmp_path / "o.pt"), "--mask", str(small_mask)]) == 2
    err = capsys.readouterr().err
    assert "mask8.npy" in err and "(8, 8, 8)" in err
    assert main(["adapt", str(flat), "--out", str(tmp_path / "o.pt"), "--weights", "no_such_weights"]) == 2
    assert "no_such_weights" in capsys.readouterr().err
    assert not (tmp_path / "o.pt").exists()


def test_adapt_reads_a_recipe_s_prepared_data_once_per_distinct_pattern(tmp_path):
    pytest.importorskip("tifffile")
    real = os.path.join(os.path.dirname(__file__), "..", "configs", "real_au.yaml")
    data = os.path.join(os.path.dirname(real), "..", "..", "shared", "data", "au_3dcdinn_ft_crop_64.tif")
    if not os.path.exists(data):
        pytest.skip("the shared real gold pattern is not here")
    pats = read_patterns([real])
    assert len(pats) == 1                                  # three datasets, one pattern
    assert pats[0]["intensity"].shape == (64, 64, 64) and pats[0]["mask"].any()   # prepared: centred, masked
    assert pats[0]["files"][0]["sha256"] == hashlib.sha256(open(data, "rb").read()).hexdigest()


@pytest.mark.slow
def test_adapt_mixed_with_simulated_crystals_records_the_set_and_refuses_a_wrong_size(tmp_path):
    from cdi_plugins.errors import CDIError
    from cdi_plugins.physics.atomistic import make_set
    mix = make_set(tmp_path / "mix.h5", 3, 4)
    s = atomistic_crystal([4300, 0], shape=32, **SHIFTED)
    pats = [{"name": "p0", "intensity": s["intensity"], "mask": s["mask"], "files": [], "array_sha256": "x"}]
    out = tmp_path / "m.pt"
    adapt(pats, out, settings={"epochs": 1, "batch_size": 4, "threads": 1, "mix": mix, "mix_weight": 1.0},
          progress=False, log=lambda *a: None)
    _, meta = load_weights(str(out))
    rec = meta["adapted"]["mix_set"]
    assert rec["n"] == 3 and rec["seed"] == 4
    assert rec["sha256"] == hashlib.sha256(open(mix, "rb").read()).hexdigest()
    wrong = make_set(tmp_path / "mix16.h5", 2, 4, shape=16)
    with pytest.raises(CDIError, match="mix16.h5"):
        adapt(pats, tmp_path / "n.pt", settings={"epochs": 1, "mix": wrong}, progress=False, log=lambda *a: None)
    assert not (tmp_path / "n.pt").exists()
