"""``python -m benchmarks``: accuracy and speed benchmarks, each printed as Markdown and written to JSON.

Example:
    $ python -m benchmarks accuracy --data ucr:GunPoint ucr:ItalyPowerDemand --seeds 3
    $ python -m benchmarks digits --seeds 1
    $ python -m benchmarks speed
    $ python -m benchmarks crnn --crnn-seeds 1
    $ python -m benchmarks charts
    $ python -m benchmarks all

Task suites (``crnn``, ``clevr``, ``forecast``, ``captions``, ``gpu``) live in their own modules and plug in
through :data:`SUITES`: each module defines ``HELP``, ``add_arguments(parser)`` (options prefixed with the
suite's name, so ``all`` can hold every suite's options), ``run(args, log) -> record`` and
``markdown(record) -> str``.

Default output folders are fixed in the repository (:data:`REPO`), not taken from the working directory, so a
run started from anywhere updates the same records that docs/benchmarks.md quotes.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Any

from cnnlstm.errors import CnnLstmError, ConfigError

__all__ = ["REPO", "SUITES", "build_parser", "main"]

EXIT_USAGE = 2

#: the repository this package sits in: the default ``--out``, ``--runs`` and ``--img`` live under it
REPO = Path(__file__).resolve().parent.parent

#: task suites by name -> module (see the module docstring for the interface); ``all`` runs them in this order
SUITES = {
    "crnn": "benchmarks.crnn",
    "clevr": "benchmarks.clevr",
    "forecast": "benchmarks.forecast",
    "captions": "benchmarks.captions",
    "gpu": "benchmarks.gpu",
}
#: suites that ``all`` skips: they need hardware the run may not have
NOT_IN_ALL = ("gpu",)


def _suite_modules() -> dict[str, ModuleType]:
    """The task suite modules by name, in :data:`SUITES` order."""
    return {name: import_module(module) for name, module in SUITES.items()}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m benchmarks``."""
    from benchmarks.accuracy import DEFAULT_DATASETS, DEFAULT_RECIPE

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Measure cnnlstm against baselines.")
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                       help="where the JSON and Markdown records go (default: the repository's benchmarks/results)")
        p.add_argument("--runs", default=str(REPO / "runs" / "bench"),
                       help="where training run directories go (default: the repository's runs/bench)")

    def accuracy_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", nargs="+", default=list(DEFAULT_DATASETS), metavar="SPEC",
                       help="UCR/UEA datasets, e.g. ucr:GunPoint ucr:JapaneseVowels")
        p.add_argument("--seeds", type=int, default=3, help="runs per method (seeds 0..N-1)")
        p.add_argument("--recipe", default=DEFAULT_RECIPE, help="the one recipe used for every dataset")
        p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", dest="overrides",
                       help="recipe overrides for every run, e.g. trainer.max_epochs=10")
        p.add_argument("--variants", nargs="+", choices=("default", "shuffle"), default=["default", "shuffle"],
                       help="our runs: the recipe as is, and/or with the paper's dimension shuffle (model.shuffle)")
        p.add_argument("--reuse", action="store_true",
                       help="take finished runs with exactly the same config from --runs instead of retraining")
        p.add_argument("--collect", action="store_true",
                       help="train nothing: tabulate the finished runs in --runs (an interrupted benchmark)")
        p.add_argument("--name", default="accuracy", help="record name: OUT/NAME.json and OUT/NAME.md")
        p.add_argument("--no-minirocket", action="store_true", help="skip aeon's MiniRocket")

    def digits_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--digits-seeds", type=int, default=1, help="runs per variant of the digit benchmark")
        p.add_argument("--digits-set", nargs="+", default=[], metavar="KEY=VALUE",
                       help="overrides for every digit run, e.g. trainer.max_epochs=2")

    def speed_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repeats", type=int, default=5, help="timed repeats per path (the median is reported)")
        p.add_argument("--no-keras", action="store_true", help="skip the Keras 3 (torch backend) path")
        p.add_argument("--small", action="store_true", help="tiny sizes (smoke tests only; ratios mean little)")

    p = sub.add_parser("accuracy", help="our recipe vs MiniRocket vs published numbers on UCR/UEA sets")
    common(p)
    accuracy_args(p)
    p = sub.add_parser("digits", help="frozen CNN + LSTM vs mean-pooled CNN features vs end to end, digit sequences")
    common(p)
    digits_args(p)
    p = sub.add_parser("speed", help="training throughput ratios measured side by side")
    common(p)
    speed_args(p)
    suites = _suite_modules()
    for name, module in suites.items():
        p = sub.add_parser(name, help=module.HELP)
        common(p)
        module.add_arguments(p)
    p = sub.add_parser("charts", help="redraw the PNG charts from the JSON records in --out")
    common(p)
    p.add_argument("--img", default=str(REPO / "docs" / "img"), help="where the PNGs go (default: docs/img)")
    p = sub.add_parser("all", help="accuracy, digits, the task suites, then speed (last, so the CPU is quieter) "
                       "and the charts")
    common(p)
    accuracy_args(p)
    digits_args(p)
    speed_args(p)
    for name, module in suites.items():
        if name not in NOT_IN_ALL:
            module.add_arguments(p)
    p.add_argument("--img", default=str(REPO / "docs" / "img"), help="where the PNGs go (default: docs/img)")
    return parser


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _accuracy(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from benchmarks.accuracy import accuracy_markdown, run_accuracy
    from benchmarks.machine import machine_info
    from benchmarks.report import write_record

    machine = machine_info(argv)
    start = time.perf_counter()
    record = run_accuracy(args.data, list(range(args.seeds)), out=Path(args.runs) / "accuracy", recipe=args.recipe,
                          overrides=args.overrides, variants=args.variants, reuse=args.reuse,
                          train=not args.collect,
                          minirocket=not args.no_minirocket, log=_log)
    record.update(machine=machine, wall_seconds=round(time.perf_counter() - start, 1))
    table = accuracy_markdown(record)
    write_record(Path(args.out), args.name, record, table)
    print(table, flush=True)
    return record


def _digits(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from benchmarks.digits import digits_markdown, run_digits
    from benchmarks.machine import machine_info
    from benchmarks.report import write_record

    machine = machine_info(argv)
    start = time.perf_counter()
    record = run_digits(list(range(args.digits_seeds)), out=Path(args.runs) / "digits", overrides=args.digits_set,
                        log=_log)
    record.update(machine=machine, wall_seconds=round(time.perf_counter() - start, 1))
    table = digits_markdown(record)
    write_record(Path(args.out), "digits", record, table)
    print(table, flush=True)
    return record


def _speed(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from benchmarks.machine import machine_info
    from benchmarks.report import write_record
    from benchmarks.speed import run_speed, speed_markdown

    machine = machine_info(argv)
    record = run_speed(repeats=args.repeats, keras=not args.no_keras, small=args.small, log=_log)
    record["machine"] = machine
    table = speed_markdown(record)
    write_record(Path(args.out), "speed", record, table)
    print(table, flush=True)
    return record


def _suite(name: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    from benchmarks.machine import machine_info
    from benchmarks.report import write_record

    module = _suite_modules()[name]
    machine = machine_info(argv)
    start = time.perf_counter()
    record = module.run(args, _log)
    record.update(machine=machine, wall_seconds=round(time.perf_counter() - start, 1))
    table = module.markdown(record)
    write_record(Path(args.out), name, record, table)
    print(table, flush=True)
    return record


def _check_arguments(args: argparse.Namespace) -> None:
    """Every ``--*seeds`` count is positive and every output folder can be written, before any suite runs."""
    from cnnlstm.engine.outputs import check_output_dir

    for key, value in sorted(vars(args).items()):
        if key.endswith("seeds") and value < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1 (runs per method), got {value}")
    for key in ("out", "runs", "img"):
        if getattr(args, key, None):
            check_output_dir(getattr(args, key), flag=f"--{key}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks SUITE ...``; user errors print one line and return 2.

    Args:
        argv: arguments after ``bench`` (defaults to ``sys.argv[1:]``).

    Returns:
        the exit status.

    Example:
        >>> main(["accuracy", "--data", "ucr:GunPoint", "--seeds", "1"])  # doctest: +SKIP
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = ["python", "-m", "benchmarks", *argv]
    try:
        _check_arguments(args)
        if args.suite in ("accuracy", "all"):
            _accuracy(args, command)
        if args.suite in ("digits", "all"):
            _digits(args, command)
        for name in _suite_modules():
            if args.suite == name or (args.suite == "all" and name not in NOT_IN_ALL):
                _suite(name, args, command)
        if args.suite in ("speed", "all"):
            _speed(args, command)
        if args.suite in ("charts", "all"):
            from benchmarks.charts import draw_charts

            for path in draw_charts(Path(args.out), Path(args.img)):
                _log(f"wrote {path}")
    except CnnLstmError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
