"""``cnnlstm tune``: arguments, and the entry point shared by the ``cnnlstm`` command and ``python -m cnnlstm.tune``.

Example:
    $ cnnlstm tune --recipe basic_motions --trials 20
    $ cnnlstm tune --recipe basic_motions --trials 40 --storage postgresql://me@db/studies --study bm  # x N machines
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

__all__ = ["add_arguments", "run", "main"]

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``tune`` options to ``parser`` (the ``cnnlstm tune`` subparser, or a standalone one).

    Example:
        >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--recipe", "r.yaml", "--trials", "3"])
        >>> args.trials, args.pruner
        (3, 'hyperband')
    """
    parser.add_argument("--recipe", required=True,
                        help="a shipped recipe name or a .yaml path (its search: section is optional)")
    parser.add_argument("--trials", type=int, required=True,
                        help="finished trials the study should hold, counted over every process on the storage")
    parser.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    parser.add_argument("--storage", help="Optuna RDB URL (default sqlite:///OUT/study.db), e.g. postgresql://...")
    parser.add_argument("--study", help="study name (default: the recipe's name)")
    parser.add_argument("--out", help="output directory (default runs/<recipe>-tune; running again resumes)")
    parser.add_argument("--sampler", default="tpe", choices=("tpe", "random"), help="seeded by the recipe's seed")
    parser.add_argument("--pruner", default="hyperband", choices=("hyperband", "median", "none"))
    parser.add_argument("--models", help="families to search: 'auto' (every family that reads the data) or a "
                                         "comma list, e.g. lstm_fcn,deep_conv_lstm (default: search.models)")
    parser.add_argument("--epochs", type=int, dest="max_epochs", help="each trial's max_epochs (search.max_epochs)")
    parser.add_argument("--data", help="dataset spec replacing the recipe's data.spec")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="base-recipe overrides, e.g. trainer.accelerator=cpu")
    parser.add_argument("--heartbeat", type=int, default=60,
                        help="seconds between a trial's heartbeats; a trial silent for two is failed and retried")
    parser.add_argument("--no-test", action="store_false", dest="test",
                        help="do not evaluate the best trial on the test split at the end")
    return parser


def _quiet() -> None:
    """One line per trial: silence Lightning's per-Trainer banners and Optuna's per-trial logging."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run(args: argparse.Namespace) -> int:
    """Run ``cnnlstm tune`` for parsed ``args``; errors propagate (the caller prints them)."""
    from cnnlstm.tune.api import tune

    _quiet()
    models = args.models
    if models and models != "auto":
        models = [m.strip() for m in models.split(",") if m.strip()]
    result = tune(args.recipe, trials=args.trials, timeout=args.timeout, storage=args.storage, study=args.study,
                  out=args.out, sampler=args.sampler, pruner=args.pruner, data=args.data, overrides=args.overrides,
                  models=models, max_epochs=args.max_epochs, heartbeat=args.heartbeat, test=args.test,
                  log=lambda line: print(line, flush=True))
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.counts.items()))
    print(f"{result.study_name}: {states}", flush=True)
    if result.best_number is not None:
        print(f"best trial {result.best_number}: {result.metric}={result.best_value:.6g} -> {result.best_recipe}")
    if result.test_metrics:
        print("best trial on test (evaluated once): "
              + "  ".join(f"{k}={v:.4f}" for k, v in sorted(result.test_metrics.items())), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cnnlstm.tune ARGS``: parse, run, print a user error as one line with exit status 2.

    Example:
        >>> main(["--recipe", "basic_motions", "--trials", "20"])  # doctest: +SKIP
        0
    """
    import yaml

    from cnnlstm.errors import CnnLstmError

    parser = add_arguments(argparse.ArgumentParser(prog="cnnlstm tune",
                                                   description="Search hyperparameters and architecture."))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return run(args)
    except CnnLstmError as exc:
        message = str(exc)
    except yaml.YAMLError as exc:
        message = f"malformed YAML: {str(exc).splitlines()[0]}"
    except KeyboardInterrupt:
        print("cnnlstm tune: interrupted (run the same command again to resume the study)", file=sys.stderr)
        return 130
    print(f"cnnlstm: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE
