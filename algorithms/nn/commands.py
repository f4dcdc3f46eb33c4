"""``cdi`` commands of the neural predictor: ``simulate-set``, ``train``, ``nn-eval``, ``nn-bench``, ``adapt``.

The plugin registers them through the ``cdi_register_commands`` hook (:func:`commands`), as any
third-party plugin would; the host gives them logging, one-line errors and Ctrl-C handling.
Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

from cdi_plugins.core import CDIError, CommandSpec

from cdi_plugins.algorithms.nn.plugin import ADAPT_FROM, DEFAULT_WEIGHTS

__all__ = ["commands", "cmd_simulate_set", "cmd_train", "cmd_nn_eval", "cmd_nn_bench", "cmd_adapt"]


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


def cmd_adapt(args) -> int:
    import numpy as np

    from cdi_plugins.algorithms.nn.adapt import adapt, read_patterns
    patterns = read_patterns(args.inputs, dataset=args.dataset, mask=args.mask)
    settings = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "loss": args.loss,
                "support_threshold": args.support_threshold, "mix": args.mix, "mix_weight": args.mix_weight,
                "seed": args.seed, "device": args.device, "threads": args.threads, "augment": not args.no_augment,
                "resume": not args.no_resume, "checkpoint": args.checkpoint, "time_limit_s": args.time_limit,
                "oversampling": args.oversampling, "train": args.train}
    # the command as typed (when run as `cdi ... adapt ...`) and, always, its parsed arguments
    command = "cdi " + shlex.join(sys.argv[1:]) if "adapt" in sys.argv[1:] else ""
    arguments = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    res = adapt(patterns, args.out, weights=args.weights, settings=settings, command=command, arguments=arguments,
                overwrite=args.overwrite, progress=not args.quiet, log=(lambda *a: None) if args.quiet else print)
    if res["out"] is None:
        print(f"stopped at the time limit; checkpoint {res['checkpoint']}: the same command continues")
        return 0
    b, a = res["loss_before"], res["loss_after"]
    print(f"physics loss ({args.loss}) on {len(b)} pattern(s): mean {b.mean():.4f} -> {a.mean():.4f}, "
          f"median {float(np.median(b)):.4f} -> {float(np.median(a)):.4f}")
    print(f"wrote {res['out']} (use it with: {{algorithm: nn, weights: {res['out']}}})")
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


def _adapt_arguments(a) -> None:
    a.add_argument("inputs", nargs="+", metavar="RECIPE_OR_FILES",
                   help="one recipe (.yaml: every dataset's data, prepared as cdi run does) or data files "
                        "(.npy, .tif, .h5, ... as cdi run --data reads them)")
    a.add_argument("--weights", default=ADAPT_FROM, help="built-in name or .pt file to start from")
    a.add_argument("--out", required=True, help="the adapted weights (.pt); never an input")
    a.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    a.add_argument("--epochs", type=int, default=20)
    a.add_argument("--batch-size", type=int, default=4)
    a.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    a.add_argument("--loss", choices=("amplitude", "poisson"), default="amplitude")
    a.add_argument("--support-threshold", type=float, default=0.1,
                   help="soft support at this fraction of the maximum predicted amplitude (0: none)")
    a.add_argument("--train", choices=("all", "phase", "decoders"), default="all",
                   help="what adapts: all layers; phase: the phase decoder only (the support cannot change); "
                        "decoders: both decoders, the encoder frozen")
    a.add_argument("--mix", metavar="SIMULATED.h5", default=None,
                   help="a set from cdi simulate-set: add its supervised loss so the network cannot drift")
    a.add_argument("--mix-weight", type=float, default=0.5)
    a.add_argument("--mask", default=None, help="one mask file for every data file (nonzero = not measured)")
    a.add_argument("--dataset", default=None, help="HDF5 dataset inside the data files")
    a.add_argument("--oversampling", type=float, default=None,
                   help="smallest-axis oversampling of the data, as the nn step's parameter (default: estimated)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    a.add_argument("--threads", type=int, default=None)
    a.add_argument("--checkpoint", default=None, help="default: OUT.ckpt (removed when done)")
    a.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    a.add_argument("--no-augment", action="store_true", help="no random flips / axis permutations")
    a.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="stop after the epoch that passes S seconds (resume with the same command)")
    a.add_argument("-q", "--quiet", action="store_true")


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
        CommandSpec("adapt", "fine-tune NN weights on measured patterns without truth (physics-aware loss)",
                    _adapt_arguments, cmd_adapt),
    ]
