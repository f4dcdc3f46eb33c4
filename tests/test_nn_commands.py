"""Tests for the nn plugin's commands: simulate-set, train (with resume) and nn-eval."""

from cdi_plugins.algorithms.nn.network import load_weights


def test_cli_simulate_set_train_and_eval(tmp_path, capsys):
    from cdi_plugins.cli import main
    data = tmp_path / "s.h5"
    assert main(["simulate-set", str(data), "--n", "2", "--seed", "4", "-q"]) == 0
    cfg = tmp_path / "t.yaml"
    out = tmp_path / "w.pt"
    cfg.write_text(f"train: {data}\nval: {data}\nout: {out}\nwidth: 0.125\ndropout: 0.0\nepochs: 1\n"
                   "batch_size: 2\nthreads: 1\n")
    assert main(["train", str(cfg), "-q"]) == 0
    assert out.exists() and (tmp_path / "w.pt.ckpt").exists()
    assert main(["train", str(cfg), "-q", "--epochs", "2"]) == 0          # resumes at epoch 1
    assert "resumed" in capsys.readouterr().out
    _, meta = load_weights(str(out))
    assert meta["epochs_trained"] in (1, 2) and meta["seed"] == 0 and meta["train_set"]["files"][0]["seed"] == 4
    assert main(["nn-eval", str(data), "--weights", str(out)]) == 0
    assert "support IoU" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"train: {data}\nval: {data}\nout: {out}\nwidht: 1\n")
    assert main(["train", str(bad)]) == 2
    assert "widht" in capsys.readouterr().err
