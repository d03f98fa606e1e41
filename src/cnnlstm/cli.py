"""The ``cnnlstm`` command: fit (and resume), test, predict, report, tune, export, summary and listings.

Thin on purpose: it parses arguments and calls :mod:`cnnlstm.engine`, :mod:`cnnlstm.tune`,
:mod:`cnnlstm.export` and :mod:`cnnlstm.profile`. Every error a user can cause (a
bad recipe, an unknown name, unreadable data) is printed as one line on stderr with exit status 2.

Example:
    $ cnnlstm fit --recipe basic_motions
    $ cnnlstm fit --resume runs/basic_motions-20250101-120000      # after a crash or a kill
    $ cnnlstm fit --data frames:clips/train --set data.options.test_dir=clips/test   # recipe "clips"
    $ cnnlstm test --run runs/basic_motions-20250101-120000
    $ cnnlstm predict --run runs/basic_motions-20250101-120000 walk.npz --csv predictions.csv
    $ cnnlstm export --run runs/basic_motions-20250101-120000 --format onnx
    $ cnnlstm predict --run runs/basic_motions-20250101-120000 --onnx runs/.../export/model.onnx walk.npz
    $ cnnlstm summary --recipe moving_digits --seq-len 8 16 32 --frame-size 32x32 64x64
    $ cnnlstm tune --recipe basic_motions --trials 20
    $ cnnlstm report runs/basic_motions-20250101-120000                # rewrites RUN/report.html
    $ cnnlstm report runs/a runs/b runs/tune-study --out compare.html
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from cnnlstm.errors import CnnLstmError

__all__ = ["main", "build_parser", "DEFAULT_RECIPES"]

#: the recipe ``cnnlstm fit --data SOURCE:...`` uses when no ``--recipe`` is given, by data source
DEFAULT_RECIPES = {"frames": "clips", "images": "images", "vqa": "vqa", "captions": "captions", "text": "text_lines",
                   "forecast": "forecast", "ucr": "ucr"}

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cnnlstm`` command."""
    parser = argparse.ArgumentParser(prog="cnnlstm", description="Train, evaluate and use CNN-LSTM models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="train a recipe, then evaluate the best checkpoint once on test")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--recipe", help="a shipped recipe name (`cnnlstm recipes`) or a .yaml path; "
                        f"default {DEFAULT_RECIPES['frames']!r} for --data frames:DIR")
    source.add_argument("--resume", metavar="RUN",
                        help="continue a stopped run from RUN/checkpoints/last.ckpt with its own config.yaml")
    p.add_argument("--data", help="dataset spec replacing the recipe's data.spec, e.g. ucr:GunPoint")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="recipe overrides, e.g. trainer.max_epochs=5 optim.lr=3e-3")
    p.add_argument("--out", help="run directory (default runs/<recipe>-<timestamp>); an existing run is refused")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its config, checkpoints, logs and reports)")
    p.add_argument("--ensemble", type=int, metavar="N",
                   help="train N members and average their probabilities (trainer.ensemble=N; classification)")

    p = sub.add_parser("test", help="re-evaluate a run's best model on its test split")
    p.add_argument("--run", required=True, help="a run directory written by fit")
    p.add_argument("--data", help="evaluate on this dataset's test split instead")

    p = sub.add_parser("predict", help="predict labels for input files with a run's best model")
    p.add_argument("--run", required=True, help="a run directory written by fit")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz/.ts files, images or clip folders")
    p.add_argument("--csv", help="write predictions to this CSV file instead of printing them")
    p.add_argument("--onnx", metavar="MODEL", help="run this exported .onnx model on onnxruntime instead")
    p.add_argument("--out", help="forecast runs: a new folder for the predicted frames (.npz + .png per sequence)")
    p.add_argument("--beam", type=int, default=1, metavar="K", help="captioning runs: beam search with K hypotheses")

    p = sub.add_parser("export", help="export a run's best model to ONNX or TorchScript, with a parity check")
    p.add_argument("--run", required=True, help="a run directory written by fit")
    p.add_argument("--format", nargs="+", default=["onnx"], choices=("onnx", "torchscript"), dest="formats")
    p.add_argument("--out", help="output folder (default RUN/export)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")

    p = sub.add_parser("summary", help="parameters, FLOPs and peak memory of a recipe's model as T and H x W grow")
    p.add_argument("--recipe", required=True, help="a shipped recipe name or a .yaml path")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="recipe overrides")
    p.add_argument("--seq-len", nargs="+", type=int, default=[16, 64, 256], metavar="T", dest="seq_lens")
    p.add_argument("--frame-size", nargs="+", metavar="HxW", dest="frame_sizes",
                   help="frame sizes for image/frame models, e.g. 32x32 64x64 (default: the data's)")
    p.add_argument("--batch-size", type=int, default=1, help="batch the memory is measured for")
    p.add_argument("--plot", help="also draw the cost curves to this .png (.png is added when it has no suffix)")

    p = sub.add_parser("report", help="an HTML report of a run (RUN/report.html), or of several runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories or cnnlstm tune study folders")
    p.add_argument("--out", help="the .html file to write (default RUN/report.html for one run; required for several)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--worst", type=int, default=8, metavar="K", help="test examples with the highest loss to draw")

    p = sub.add_parser("tune", help="search hyperparameters and architecture with Optuna (see cnnlstm tune -h)")
    from cnnlstm.tune.cli import add_arguments

    add_arguments(p)

    sub.add_parser("models", help="list registered models")
    p = sub.add_parser("datasets", help="list dataset sources and built-in datasets; `datasets write` saves one")
    p.add_argument("action", nargs="?", choices=("write",),
                   help="write builtin:NAME to DIR in its user layout (e.g. vqa:DIR's CSV + PNGs)")
    p.add_argument("spec", nargs="?", help="with write: the built-in dataset, e.g. builtin:sort_of_clevr")
    p.add_argument("dir", nargs="?", help="with write: a new (or empty) folder")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="options",
                   help="with write: dataset options, e.g. n_train=200 image_size=32")
    p.add_argument("--seed", type=int, default=0, help="with write: seed of the generated data")
    sub.add_parser("recipes", help="list shipped recipes")
    return parser


def _fmt(metrics: dict, prefix: str = "test/") -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items() if k.startswith(prefix))


def _frame_size(text: str) -> tuple[int, int]:
    from cnnlstm.errors import ConfigError

    parts = text.lower().split("x")
    if not 1 <= len(parts) <= 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--frame-size {text!r} must look like 64x64 (H x W) or 64")
    return (int(parts[0]), int(parts[-1]))


def _summary(args: argparse.Namespace) -> None:
    from cnnlstm.engine.build import allocation_guard, model_kwargs_for
    from cnnlstm.engine.data import load_bundle
    from cnnlstm.engine.outputs import check_output_file
    from cnnlstm.engine.recipe import resolve_config
    from cnnlstm.errors import ConfigError
    from cnnlstm.profile import cost_report

    plot = None
    if args.plot:  # matplotlib adds .png to a name without a suffix; say where the file really goes
        plot = Path(args.plot)
        plot = plot if plot.suffix or plot.is_dir() else plot.with_name(plot.name + ".png")
        plot = check_output_file(plot, flag="--plot", inputs=[args.recipe], example="cost.png")
    config = resolve_config(args.recipe, overrides=args.overrides)
    if any(t < 1 for t in args.seq_lens) or args.batch_size < 1:
        raise ConfigError("--seq-len and --batch-size must be positive integers")
    bundle = load_bundle(config["data"], seed=config["seed"])  # the data fixes num_classes, in_channels, ...
    section = dict(config["model"])
    if config.get("pretrain"):
        section.pop("pretrained", None)  # the summary measures the architecture; no stage-one weights needed
    name, kwargs = model_kwargs_for(section, bundle.info.model_kwargs)
    kwargs.pop("pretrained", None)
    frames = [_frame_size(f) for f in args.frame_sizes] if args.frame_sizes else None
    with allocation_guard(section):
        table = cost_report(name, seq_lens=args.seq_lens, frame_sizes=frames, batch_size=args.batch_size, **kwargs)
    print(table.to_text())
    if plot is not None:
        print(f"wrote {table.plot(plot)}")


def _report(args: argparse.Namespace) -> None:
    from cnnlstm.engine.run_report import compare_runs, run_report
    from cnnlstm.errors import ConfigError

    if args.worst < 0:
        raise ConfigError(f"--worst must be >= 0, got {args.worst}")
    single = len(args.runs) == 1 and (Path(args.runs[0]) / "config.yaml").is_file()
    if single:
        print(f"wrote {run_report(args.runs[0], out=args.out, overwrite=args.overwrite, k=args.worst)}")
        return
    if not args.out:
        raise ConfigError("several runs (or a tune study) go into one page: name it with --out compare.html")
    print(f"wrote {compare_runs(args.runs, args.out, overwrite=args.overwrite)}")


def _export(args: argparse.Namespace) -> None:
    from cnnlstm.export import export_run

    for report in export_run(args.run, args.out, formats=tuple(dict.fromkeys(args.formats)), opset=args.opset):
        print(report.summary())


def _write_dataset(args: argparse.Namespace) -> None:
    from cnnlstm.data import write_dataset
    from cnnlstm.errors import ConfigError

    if not args.spec or not args.dir:
        raise ConfigError("usage: cnnlstm datasets write builtin:NAME DIR [--set KEY=VALUE ...]")
    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE, e.g. n_train=200")
        options[key] = yaml.safe_load(value)
    folder = write_dataset(args.spec, args.dir, seed=args.seed, **options)
    print(f"wrote {args.spec} to {folder}")


def _recipe_for(recipe: str | None, data: str | None) -> str:
    """The recipe to fit: the one given, else the generic recipe of the data's source (``frames:DIR`` -> ``clips``,
    ``vqa:DIR`` -> ``vqa``, ...: :data:`DEFAULT_RECIPES`)."""
    if recipe:
        return recipe
    source = (data or "").split(":", 1)[0]
    if source in DEFAULT_RECIPES and ":" in (data or ""):
        return DEFAULT_RECIPES[source]
    from cnnlstm.errors import ConfigError

    sources = ", ".join(f"{k}:" for k in DEFAULT_RECIPES)
    raise ConfigError(f"fit needs --recipe (or --resume RUN); without one, --data must name a source with a default "
                      f"recipe ({sources})")


def _run(args: argparse.Namespace) -> int:
    if args.command == "fit":
        from cnnlstm.engine import fit, resume
        from cnnlstm.errors import ConfigError

        overrides = [*args.overrides, *([f"trainer.ensemble={args.ensemble}"] if args.ensemble is not None else [])]
        if args.resume:
            if overrides or args.data or args.out or args.overwrite:
                raise ConfigError("--resume continues a run exactly as configured (its config.yaml); --set, --data, "
                                  "--ensemble, --out and --overwrite cannot change it: start a new run with --recipe "
                                  "RUN/config.yaml")
            result = resume(args.resume)
        else:
            result = fit(_recipe_for(args.recipe, args.data), data=args.data, overrides=overrides, out=args.out,
                         overwrite=args.overwrite)
        if "test/acc" in result.metrics and _is_rank_zero():
            print(f"test accuracy: {result.metrics['test/acc']:.4f}")
    elif args.command == "test":
        from cnnlstm.engine import evaluate_run

        result = evaluate_run(args.run, data=args.data)
        print(_fmt(result.metrics))
    elif args.command == "predict":
        from cnnlstm.engine.outputs import check_output_dir, check_output_file
        from cnnlstm.engine.predict import predict, predictions_csv

        if args.csv:  # before the model is loaded: a bad --csv costs nothing and never touches an input
            check_output_file(args.csv, flag="--csv", inputs=[*args.inputs, *([args.onnx] if args.onnx else [])])
        if args.out:
            check_output_dir(args.out, flag="--out", inputs=args.inputs)
        if args.onnx:
            from cnnlstm.export.predictor import predict_onnx

            predictions = predict_onnx(args.run, args.inputs, args.onnx, out=args.out, beam_size=args.beam)
        else:
            predictions = predict(args.run, args.inputs, out=args.out, beam_size=args.beam)
        if args.csv:
            predictions_csv(predictions, args.csv)
            print(f"wrote {len(predictions)} predictions to {args.csv}")
        else:
            for p in predictions:
                prob = f"  {p['probability']:.3f}" if "probability" in p else ""
                print(f"{p['input']}\t{p['label']}{prob}")
    elif args.command == "export":
        _export(args)
    elif args.command == "summary":
        _summary(args)
    elif args.command == "report":
        _report(args)
    elif args.command == "tune":
        from cnnlstm.tune.cli import run

        return run(args)
    elif args.command == "models":
        from cnnlstm.models import get_model_class, list_models

        for name in list_models():
            doc = (get_model_class(name).__doc__ or "").strip().splitlines()
            print(f"{name:24s} {doc[0] if doc else ''}")
    elif args.command == "datasets" and args.action == "write":
        _write_dataset(args)
    elif args.command == "datasets":
        from cnnlstm.data import list_datasets

        for spec, (kind, description) in list_datasets().items():
            print(f"{spec:28s} {kind:11s} {description}")
    elif args.command == "recipes":
        from cnnlstm.engine import list_recipes

        for name, description in list_recipes().items():
            print(f"{name:20s} {description}")
    return 0


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cnnlstm`` command with ``argv`` (``sys.argv[1:]`` by default); return the exit status.

    Example:
        >>> main(["recipes"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage line
        return int(exc.code or 0)
    try:
        return _run(args)
    except SystemExit as exc:  # a subcommand that ends in sys.exit (Lightning after a signal) keeps its status
        return int(exc.code or 0)
    except CnnLstmError as exc:
        message = str(exc)
    except yaml.YAMLError as exc:
        message = f"malformed YAML: {str(exc).splitlines()[0]}"
    except FileNotFoundError as exc:
        message = f"file not found: {exc.filename or exc}"
    except OSError as exc:  # a disk that filled up, a folder that turned read-only mid-run: name the file
        message = (f"cannot use {exc.filename or 'a file'}: {exc.strerror or exc}; check the path, its permissions "
                   "and free space")
    except KeyboardInterrupt as exc:
        hint = exc.hint() if hasattr(exc, "hint") else "interrupted"
        print(f"cnnlstm: {hint}", file=sys.stderr)
        return 130
    print(f"cnnlstm: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
