"""The ``cnnlstm`` command: fit, test and predict with recipes, and list models, datasets and recipes.

Thin on purpose: it parses arguments and calls :mod:`cnnlstm.engine`. Every error a user can cause (a bad
recipe, an unknown name, unreadable data) is printed as one line on stderr with exit status 2.

Example:
    $ cnnlstm fit --recipe basic_motions
    $ cnnlstm test --run runs/basic_motions-20250101-120000
    $ cnnlstm predict --run runs/basic_motions-20250101-120000 walk.npz --csv predictions.csv
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml

from cnnlstm.errors import CnnLstmError

__all__ = ["main", "build_parser"]

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``cnnlstm`` command."""
    parser = argparse.ArgumentParser(prog="cnnlstm", description="Train, evaluate and use CNN-LSTM models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="train a recipe, then evaluate the best checkpoint once on test")
    p.add_argument("--recipe", required=True, help="a shipped recipe name (`cnnlstm recipes`) or a .yaml path")
    p.add_argument("--data", help="dataset spec replacing the recipe's data.spec, e.g. ucr:GunPoint")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="recipe overrides, e.g. trainer.max_epochs=5 optim.lr=3e-3")
    p.add_argument("--out", help="run directory (default runs/<recipe>-<timestamp>)")

    p = sub.add_parser("test", help="re-evaluate a run's best model on its test split")
    p.add_argument("--run", required=True, help="a run directory written by fit")
    p.add_argument("--data", help="evaluate on this dataset's test split instead")

    p = sub.add_parser("predict", help="predict labels for input files with a run's best model")
    p.add_argument("--run", required=True, help="a run directory written by fit")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npz/.ts files, images or clip folders")
    p.add_argument("--csv", help="write predictions to this CSV file instead of printing them")

    sub.add_parser("models", help="list registered models")
    sub.add_parser("datasets", help="list dataset sources and built-in datasets")
    sub.add_parser("recipes", help="list shipped recipes")
    return parser


def _fmt(metrics: dict, prefix: str = "test/") -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in metrics.items() if k.startswith(prefix))


def _run(args: argparse.Namespace) -> int:
    if args.command == "fit":
        from cnnlstm.engine import fit

        result = fit(args.recipe, data=args.data, overrides=args.overrides, out=args.out)
        if "test/acc" in result.metrics and _is_rank_zero():
            print(f"test accuracy: {result.metrics['test/acc']:.4f}")
    elif args.command == "test":
        from cnnlstm.engine import evaluate_run

        result = evaluate_run(args.run, data=args.data)
        print(_fmt(result.metrics))
    elif args.command == "predict":
        from cnnlstm.engine.predict import predict, predictions_csv

        predictions = predict(args.run, args.inputs)
        if args.csv:
            predictions_csv(predictions, args.csv)
            print(f"wrote {len(predictions)} predictions to {args.csv}")
        else:
            for p in predictions:
                prob = f"  {p['probability']:.3f}" if "probability" in p else ""
                print(f"{p['input']}\t{p['label']}{prob}")
    elif args.command == "models":
        from cnnlstm.models import get_model_class, list_models

        for name in list_models():
            doc = (get_model_class(name).__doc__ or "").strip().splitlines()
            print(f"{name:24s} {doc[0] if doc else ''}")
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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its usage line
        return int(exc.code or 0)
    try:
        return _run(args)
    except CnnLstmError as exc:
        message = str(exc)
    except yaml.YAMLError as exc:
        message = f"malformed YAML: {str(exc).splitlines()[0]}"
    except FileNotFoundError as exc:
        message = f"file not found: {exc.filename or exc}"
    except KeyboardInterrupt:
        print("cnnlstm: interrupted", file=sys.stderr)
        return 130
    print(f"cnnlstm: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
