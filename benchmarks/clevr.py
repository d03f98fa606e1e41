"""Suite ``clevr``: each multi-input fusion type on Sort-of-CLEVR, relational vs non-relational accuracy.

Every fusion trains the shipped ``sort_of_clevr`` recipe with only ``model.fusion`` changed (same data, CNN,
question LSTM, head, optimiser and budget), once per seed, and is scored once on the test split with the
checkpoint validation chose. The table sets the test accuracy on relational questions (closest shape,
furthest colour, count same shape) and non-relational ones (shape, left, top) beside Santoro et al. (2017):
CNN+MLP 63% / 94%, Relation Network 94% / 94%. The target is the best fusion clearly above CNN+MLP on
relational questions. ``film`` and ``cross_attention`` see the CNN's spatial grid with coordinates; the other
modes fuse the pooled image vector, which has already lost where objects are.

Runs are independent, so ``--clevr-jobs N`` trains N at a time in separate processes (a GPU, or many cores);
the figures equal a sequential run's, since each run is seeded on its own.

Example:
    $ python -m benchmarks clevr --clevr-seeds 3 --clevr-accelerator gpu --clevr-jobs 8
    $ python -m benchmarks clevr --clevr-fusions concat film --clevr-set trainer.max_epochs=5
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from benchmarks.runs import mean_std, quiet, summarize
from cnnlstm.errors import ConfigError
from cnnlstm.layers.fusion import FUSION_MODES, SPATIAL_FUSION_MODES

__all__ = ["HELP", "RECIPE", "PUBLISHED", "TARGET_RELATIONAL", "add_arguments", "run", "run_clevr", "markdown"]

HELP = "each multi-input fusion on Sort-of-CLEVR: relational / non-relational accuracy vs Santoro et al. 2017"
RECIPE = "sort_of_clevr"
#: Santoro et al. 2017, Sort-of-CLEVR test accuracy: (model, relational, non-relational)
PUBLISHED = (("CNN+MLP (Santoro et al. 2017)", 0.63, 0.94), ("Relation Network (Santoro et al. 2017)", 0.94, 0.94))
#: the published CNN+MLP relational accuracy, which the best fusion has to beat clearly
TARGET_RELATIONAL = 0.63
#: per-run figures kept from the engine's metrics: record key -> metric name
KEPT = {"test_acc": "test/acc", "test_acc_relational": "test/acc_relational",
        "test_acc_non_relational": "test/acc_non-relational", "val_acc": "val/acc",
        "val_acc_relational": "val/acc_relational", "val_acc_non_relational": "val/acc_non-relational",
        "best_epoch": "best_epoch", "epochs": "epochs", "fit_seconds": "fit_seconds", "params": "params"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's ``--clevr-*`` options to ``parser``.

    Args:
        parser: the ``python -m benchmarks clevr`` (or ``all``) parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--clevr-fusions", "film"]).clevr_fusions
        ['film']
    """
    parser.add_argument("--clevr-fusions", nargs="+", choices=FUSION_MODES, default=list(FUSION_MODES),
                        metavar="FUSION", help=f"fusion types to train (default all: {', '.join(FUSION_MODES)})")
    parser.add_argument("--clevr-seeds", type=int, default=3, help="runs per fusion (seeds 0..N-1)")
    parser.add_argument("--clevr-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run, e.g. trainer.max_epochs=5 data.options.n_train=2000")
    parser.add_argument("--clevr-accelerator", choices=("cpu", "gpu", "auto"), default="auto",
                        help="trainer.accelerator of every run")
    parser.add_argument("--clevr-jobs", type=int, default=1,
                        help="runs trained at once, each in its own process (e.g. 8 on one GPU)")
    parser.add_argument("--clevr-validation-only", action="store_true",
                        help="report validation accuracy (carved from train) and never score test: for choosing "
                        "epochs, data size or widths before the real run")


def _fit_one(fusion: str, seed: int, overrides: list[str], out: Path, threads: int | None,
             test: bool = True) -> tuple[str, dict]:
    """One (fusion, seed) run into ``out/fusion/seed{seed}``; module level so a spawned worker can call it.

    A question type with no question in a split (a tiny validation carve) is kept as ``None``.
    """
    if threads is not None:  # a worker: share the cores with the other workers instead of each taking all
        import torch

        torch.set_num_threads(threads)
    from cnnlstm.engine.fit import fit

    sets = ["trainer.enable_progress_bar=false", f"model.fusion={fusion}", *overrides, f"seed={seed}"]
    with quiet():
        metrics = fit(RECIPE, overrides=sets, out=out / fusion / f"seed{seed}", verbose=False, test=test,
                      overwrite=True).metrics  # bench owns --runs
    run: dict[str, Any] = {"seed": seed}
    for key, name in KEPT.items():
        if name in metrics:
            value = metrics[name]
            run[key] = None if value is None or value != value else value  # NaN: no question of the type
    return fusion, run


def _summary(runs: list[dict[str, Any]], split: str) -> dict[str, Any]:
    """Mean ± std over seeds of ``split``'s accuracy per question type (a seed without the type is left out)."""
    runs = sorted(runs, key=lambda r: r["seed"])

    def stat(key: str) -> dict[str, Any]:
        values = [{"v": r[key]} for r in runs if r.get(key) is not None]
        return {k: v for k, v in summarize(values, "v").items() if k in ("mean", "std")}

    return {
        "relational": stat(f"{split}_acc_relational"),
        "non_relational": stat(f"{split}_acc_non_relational"),
        "overall": stat(f"{split}_acc"),
        "params": runs[0].get("params") if runs else None,
        "fit_seconds_median": statistics.median(times) if (times := [r["fit_seconds"] for r in runs]) else None,
        "runs": runs,
    }


def run_clevr(fusions: list[str], seeds: list[int], *, out: Path, overrides: list[str] | None = None,
              accelerator: str = "auto", jobs: int = 1, test: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the Sort-of-CLEVR recipe once per (fusion, seed) and summarise the test accuracy per question type.

    Args:
        fusions: fusion modes (``model.fusion``), each from :data:`~cnnlstm.layers.fusion.FUSION_MODES`.
        seeds: one run per seed; the seed draws the scenes and questions (train and test), the validation
            carve, the initialisation and the training order.
        out: parent directory; run ``(f, s)`` goes to ``out/f/seed{s}``.
        overrides: ``key=value`` recipe overrides for every run.
        accelerator: ``trainer.accelerator`` (``"cpu"``, ``"gpu"`` or ``"auto"``).
        jobs: runs trained at once in separate processes; 1 trains in this process.
        test: score the test split; ``False`` summarises validation (carved from train) and never touches
            test, for choosing a budget or setting.
        log: called with one line per finished run.

    Returns:
        ``{"recipe", "overrides", "seeds", "accelerator", "split", "data", "epochs", "fusions": {fusion:
        summary}, "published", "target_relational", "best", "target_met"}``; a summary holds ``relational``,
        ``non_relational`` and ``overall`` accuracy on ``split`` (each ``mean``, ``std``), ``params``,
        ``fit_seconds_median`` and the per-seed ``runs``.

    Example:
        >>> rec = run_clevr(["concat", "film"], [0], out=Path("runs/bench/clevr"))  # doctest: +SKIP
        >>> rec["fusions"]["film"]["relational"]["mean"]  # doctest: +SKIP
    """
    from cnnlstm.engine import resolve_config

    unknown = [f for f in fusions if f not in FUSION_MODES]
    if unknown:
        raise ConfigError(f"unknown fusion {unknown}; use some of {FUSION_MODES}")
    if jobs < 1:
        raise ConfigError(f"--clevr-jobs must be >= 1, got {jobs}")
    overrides = [f"trainer.accelerator={accelerator}", *(overrides or [])]
    config = resolve_config(RECIPE, overrides=overrides)  # fails fast on a bad override, before any training
    tasks = [(f, s) for f in fusions for s in seeds]
    runs: dict[str, list[dict[str, Any]]] = {f: [] for f in fusions}

    split = "test" if test else "val"

    def done(fusion: str, record: dict[str, Any]) -> None:
        runs[fusion].append(record)
        rel, non = (record.get(f"{split}_acc_{t}") for t in ("relational", "non_relational"))
        log(f"clevr: {fusion} seed {record['seed']}: {split} relational {rel if rel is None else round(rel, 3)}, "
            f"non-relational {non if non is None else round(non, 3)} ({record.get('fit_seconds', 0):.0f} s)")

    if jobs == 1:
        for fusion, seed in tasks:
            done(*_fit_one(fusion, seed, overrides, out, None, test))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        # spawn, not fork: a forked child would inherit this process's CUDA context and torch thread pools
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_fit_one, f, s, overrides, out, threads, test) for f, s in tasks]
            for future in as_completed(futures):
                done(*future.result())

    summaries = {f: _summary(runs[f], split) for f in fusions}
    best = max(fusions, key=lambda f: summaries[f]["relational"].get("mean") or 0.0)
    data = config["data"]
    return {
        "recipe": RECIPE, "overrides": overrides, "seeds": list(seeds), "accelerator": accelerator, "split": split,
        "data": {"spec": data["spec"], "options": data.get("options", {}), "val_fraction": data["val_fraction"]},
        "epochs": config["trainer"]["max_epochs"],
        "fusions": summaries,
        "published": [{"model": m, "relational": r, "non_relational": n} for m, r, n in PUBLISHED],
        "target_relational": TARGET_RELATIONAL,
        "best": best,
        # only a test figure can meet the target; validation runs are for choosing settings
        "target_met": test and (summaries[best]["relational"].get("mean") or 0.0) > TARGET_RELATIONAL,
    }


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """The suite's entry point for ``python -m benchmarks clevr``.

    Args:
        args: parsed options (``--clevr-*`` and ``--runs``).
        log: progress printer.

    Returns:
        the record of :func:`run_clevr`.

    Example:
        >>> record = run(build_parser().parse_args(["clevr", "--clevr-seeds", "1"]), print)  # doctest: +SKIP
    """
    return run_clevr(list(args.clevr_fusions), list(range(args.clevr_seeds)), out=Path(args.runs) / "clevr",
                     overrides=list(args.clevr_set), accelerator=args.clevr_accelerator, jobs=args.clevr_jobs,
                     test=not args.clevr_validation_only, log=log)


def markdown(record: dict[str, Any]) -> str:
    """The fusion table beside the published rows, then the target verdict.

    Args:
        record: what :func:`run` returned.

    Returns:
        Markdown text.

    Example:
        >>> print(markdown(record))  # doctest: +SKIP
    """
    opts = record["data"]["options"]
    split = record.get("split", "test")
    what = "test accuracy" if split == "test" else "VALIDATION accuracy (carved from train; test not scored)"
    lines = [
        f"Sort-of-CLEVR (`{record['recipe']}` recipe, {opts.get('n_train', '?')} training / "
        f"{opts.get('n_test', '?')} test questions, {record['epochs']} epochs max, "
        f"seeds {', '.join(map(str, record['seeds']))}; {what} %, mean ± std over seeds).",
        "",
        "| model | image enters fusion as | relational | non-relational | overall | params | fit s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fusion, s in record["fusions"].items():
        grid = "grid + coordinates" if fusion in SPATIAL_FUSION_MODES else "pooled vector"
        fit_s = "—" if s["fit_seconds_median"] is None else f"{s['fit_seconds_median']:.0f}"
        params = "—" if s["params"] is None else f"{s['params'] / 1e3:.0f}k"
        cells = " | ".join(mean_std(s[k], digits=1, scale=100) for k in ("relational", "non_relational", "overall"))
        lines.append(f"| multi_input, fusion={fusion} | {grid} | {cells} | {params} | {fit_s} |")
    for p in record["published"]:
        lines.append(f"| {p['model']} | published | {100 * p['relational']:.0f} | {100 * p['non_relational']:.0f} "
                     "| | | |")
    best = record["best"]
    rel = record["fusions"][best]["relational"].get("mean")
    verdict = ("met" if record["target_met"] else "not met") if split == "test" else "not judged on validation"
    lines += ["", f"Target (relational accuracy clearly above CNN+MLP's {100 * record['target_relational']:.0f}%): "
              f"{verdict}; best fusion `{best}` at {100 * (rel or 0):.1f}% ({split})."]
    epochs = {f: [r.get("best_epoch") for r in s["runs"]] for f, s in record["fusions"].items()}
    lines.append("Best epochs (chosen on validation): "
                 + "; ".join(f"{f} {'/'.join(str(e) for e in ep)}" for f, ep in epochs.items()) + ".")
    times = [r["fit_seconds"] for s in record["fusions"].values() for r in s["runs"] if "fit_seconds" in r]
    if times:
        lines.append(f"Accelerator: {record['accelerator']}; total fit time {statistics.fsum(times) / 60:.1f} min.")
    return "\n".join(lines)
