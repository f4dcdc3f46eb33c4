"""``cdi`` commands of the neural predictor: ``simulate-set``, ``train``, ``nn-eval``, ``nn-bench``.

The plugin registers them through the ``cdi_register_commands`` hook (:func:`commands`), as any
third-party plugin would; the host gives them logging, one-line errors and Ctrl-C handling.
Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import os
import sys
import time

from cdi_plugins.core import CDIError, CommandSpec

from cdi_plugins.algorithms.nn.plugin import DEFAULT_WEIGHTS

__all__ = ["commands", "cmd_simulate_set", "cmd_train", "cmd_nn_eval", "cmd_nn_bench"]


def cmd_simulate_set(args) -> int:
    from tqdm import tqdm

    from cdi_plugins.physics.atomistic import make_set
    settings = {}
    if args.shape is not None:
        settings["shape"] = args.shape
    if args.counts is not None:
        settings["counts"] = tuple(args.counts) if len(args.counts) == 2 else args.counts[0]
    bar = tqdm(total=args.n, desc="simulating", unit="crystal", disable=args.quiet)

    def progress(i, n):
        bar.update(i - bar.n)           # absolute: a resumed run starts where the last one stopped
    try:
        make_set(args.out, args.n, args.seed, overwrite=args.overwrite, progress=progress, **settings)
    except KeyboardInterrupt:
        bar.close()
        print(f"cdi: {bar.n} of {args.n} crystals kept in {args.out}.partial; the same command continues",
              file=sys.stderr)
        raise
    bar.close()
    print(f"{args.out}: {args.n} atomistic gold crystals, seed {args.seed}")
    return 0


def _read_config(path) -> dict:
    import yaml
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
    except OSError as e:
        raise CDIError(f"cannot read the training config ({e.strerror})", path) from None
    except yaml.YAMLError as e:
        raise CDIError(f"YAML error: {str(e).splitlines()[0]}", path) from None
    if not isinstance(cfg, dict):
        raise CDIError("a training config must be a mapping", path)
    return cfg


def cmd_train(args) -> int:
    from cdi_plugins.algorithms.nn.training import train
    cfg = _read_config(args.config)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if args.no_resume:
        cfg["resume"] = False
    cfg.setdefault("command", "cdi train " + args.config)
    try:
        out = train(cfg, progress=not args.quiet)
    except CDIError as e:
        raise e if e.location else e.at(args.config)
    print(f"best validation loss {out['best_val_loss']:.4f}; weights in {out['out']}")
    return 0


def cmd_nn_eval(args) -> int:
    import json

    from cdi_plugins.algorithms.nn.network import load_weights, resolve_device
    from cdi_plugins.algorithms.nn.training import evaluate
    from cdi_plugins.physics.atomistic import load_set
    device = resolve_device(args.device)
    model, meta = load_weights(args.weights, device)
    data = load_set(args.data, args.limit)
    fig = evaluate(model, data, device, threshold=args.threshold)
    print(f"weights {args.weights} ({meta['parameters']} parameters, trained {meta.get('epochs_trained')} epochs)")
    print(f"set {args.data}: {fig['n']} crystals, seed {data['seed']}")
    print(f"  support IoU        mean {fig['iou']:.3f}  median {fig['iou_median']:.3f}")
    print(f"  amplitude error    mean {fig['amp_error']:.3f}  median {fig['amp_error_median']:.3f}")
    print(f"  phase RMS (rad)    mean {fig['phase_rms']:.3f}  median {fig['phase_rms_median']:.3f}")
    print(f"  complex error      mean {fig['complex_error']:.3f}  median {fig['complex_error_median']:.3f}")
    if args.json:
        print(json.dumps(fig))
    if args.record:
        import torch

        from cdi_plugins.algorithms.nn.network import save_weights
        from cdi_plugins.algorithms.nn.training import check_figures
        check = check_figures(model, n=12, seed=3, device=device)
        meta = dict(meta)
        meta["held_out"] = {**fig, "set": os.path.basename(args.data), "seed": data["seed"],
                            "threshold": args.threshold,
                            "command": f"cdi nn-eval {args.data} --weights {args.weights}"}
        meta["check"] = check
        for k in ("format", "arch", "arch_hash", "parameters"):
            meta.pop(k, None)
        save_weights(model.to("cpu").to(memory_format=torch.contiguous_format), args.record, meta)
        print(f"wrote {args.record} with these figures and a 12-crystal check "
              f"(IoU {check['iou']:.3f}, phase RMS {check['phase_rms']:.3f})")
    return 0


def cmd_nn_bench(args) -> int:
    import numpy as np
    import torch

    from cdi_plugins.algorithms.nn.plugin import _model     # the model exactly as the nn step runs it
    cores = torch.get_num_threads()
    runs = [("cpu", th) for th in sorted({1, cores})]
    if torch.cuda.is_available():
        runs.append(("cuda", cores))
    for dev, th in runs:
        torch.set_num_threads(th)
        model, meta, _ = _model(args.weights, dev)
        n = meta["arch"]["size"]
        x = torch.rand(1, 1, n, n, n, device=dev)
        if dev == "cpu":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        times = []
        with torch.no_grad():
            for i in range(args.repeat + 2):
                t0 = time.perf_counter()
                model(x)
                if dev == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        t = np.array(times[2:]) * 1e3
        where = f"cpu, {th} thread{'s' if th > 1 else ''}" if dev == "cpu" else torch.cuda.get_device_name()
        print(f"{where}: one {n}^3 prediction ({meta['parameters']} parameters): "
              f"median {np.median(t):.1f} ms, min {t.min():.1f} ms over {args.repeat} runs")
    torch.set_num_threads(cores)
    return 0


def _simulate_set_arguments(s) -> None:
    s.add_argument("out", help="output .h5 file (kept as a cache when it exists with the same settings)")
    s.add_argument("--n", type=int, default=1000, help="number of crystals")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--shape", type=int, default=None, help="grid size (default 32)")
    s.add_argument("--counts", type=float, nargs="+", default=None, metavar="C",
                   help="total photons: one value, or LOW HIGH for a log-uniform range (default 1e5 1e9)")
    s.add_argument("--overwrite", action="store_true")
    s.add_argument("-q", "--quiet", action="store_true")


def _train_arguments(t) -> None:
    t.add_argument("config")
    t.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("-q", "--quiet", action="store_true")


def _nn_eval_arguments(e) -> None:
    e.add_argument("data", help="a set written by simulate-set")
    e.add_argument("--weights", default=DEFAULT_WEIGHTS, help="built-in name or .pt file")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.add_argument("--threshold", type=float, default=0.5, help="support threshold on the predicted amplitude")
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--json", action="store_true")
    e.add_argument("--record", metavar="OUT.pt", default=None,
                   help="write a copy of the weights with these figures (and a re-checkable 12-crystal check)")


def _nn_bench_arguments(b) -> None:
    b.add_argument("--weights", default=DEFAULT_WEIGHTS)
    b.add_argument("--repeat", type=int, default=20)


def commands() -> list[CommandSpec]:
    """The neural predictor's ``cdi`` commands."""
    return [
        CommandSpec("simulate-set", "simulate atomistic gold crystals for 3D-CDI-NN training (HDF5 cache)",
                    _simulate_set_arguments, cmd_simulate_set),
        CommandSpec("train", "train 3D-CDI-NN from a YAML config (validation, checkpoints, resume)",
                    _train_arguments, cmd_train),
        CommandSpec("nn-eval", "IoU, amplitude error and phase RMS of NN weights on a simulated set",
                    _nn_eval_arguments, cmd_nn_eval),
        CommandSpec("nn-bench", "time one prediction on the CPU (and the GPU when present)",
                    _nn_bench_arguments, cmd_nn_bench),
    ]
