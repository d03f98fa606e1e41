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
    $ cnnlstm bench clevr --clevr-seeds 3 --clevr-accelerator gpu --clevr-jobs 8
    $ cnnlstm bench clevr --clevr-fusions concat film --clevr-set trainer.max_epochs=5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from cnnlstm.bench.runs import fit_seeds, summarize
from cnnlstm.errors import ConfigError
from cnnlstm.layers.fusion import FUSION_MODES, SPATIAL_FUSION_MODES

__all__ = ["HELP", "RECIPE", "PUBLISHED", "TARGET_RELATIONAL", "add_arguments", "run", "run_clevr", "markdown"]

HELP = "each multi-input fusion on Sort-of-CLEVR: relational / non-relational accuracy vs Santoro et al. 2017"
RECIPE = "sort_of_clevr"
#: Santoro et al. 2017, Sort-of-CLEVR test accuracy: (model, relational, non-relational)
PUBLISHED = (("CNN+MLP (Santoro et al. 2017)", 0.63, 0.94), ("Relation Network (Santoro et al. 2017)", 0.94, 0.94))
#: the published CNN+MLP relational accuracy, which the best fusion has to beat clearly
TARGET_RELATIONAL = 0.63
#: per-run test metrics read from each run's ``metrics.json`` (``fit_seeds`` keeps the overall accuracy only)
TYPE_METRICS = {"test_acc_relational": "test/acc_relational", "test_acc_non_relational": "test/acc_non-relational",
                "val_acc_relational": "val/acc_relational", "val_acc_non_relational": "val/acc_non-relational"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's ``--clevr-*`` options to ``parser``.

    Args:
        parser: the ``cnnlstm bench clevr`` (or ``all``) parser.

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


def _type_accuracy(run_dir: Path) -> dict[str, float]:
    """Relational / non-relational accuracy of a finished run, from its ``metrics.json``.

    A type with no question in the split (a tiny validation carve) was written as ``null``; it stays ``None``.
    """
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: None if metrics[name] is None else float(metrics[name])
            for key, name in TYPE_METRICS.items() if name in metrics}


def _fit_one(fusion: str, seed: int, overrides: list[str], out: Path, threads: int | None) -> tuple[str, dict]:
    """One (fusion, seed) run; module level so a spawned worker process can call it."""
    if threads is not None:  # a worker: share the cores with the other workers instead of each taking all
        import torch

        torch.set_num_threads(threads)
    run = fit_seeds(RECIPE, [seed], data=None, overrides=[f"model.fusion={fusion}", *overrides], out=out / fusion)[0]
    run.update(_type_accuracy(out / fusion / f"seed{seed}"))
    return fusion, run


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: r["seed"])
    val_rel = [{"test_acc": r["val_acc_relational"]} for r in runs if r.get("val_acc_relational") is not None]
    return {
        "relational": {k: v for k, v in summarize(runs, "test_acc_relational").items() if k != "runs"},
        "non_relational": {k: v for k, v in summarize(runs, "test_acc_non_relational").items() if k != "runs"},
        "overall": {k: v for k, v in summarize(runs, "test_acc").items() if k != "runs"},
        "val_relational": summarize(val_rel)["mean"] if val_rel else None,
        "params": runs[0].get("params") if runs else None,
        "fit_seconds_median": summarize(runs)["fit_seconds_median"],
        "runs": runs,
    }


def run_clevr(fusions: list[str], seeds: list[int], *, out: Path, overrides: list[str] | None = None,
              accelerator: str = "auto", jobs: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the Sort-of-CLEVR recipe once per (fusion, seed) and summarise the test accuracy per question type.

    Args:
        fusions: fusion modes (``model.fusion``), each from :data:`~cnnlstm.layers.fusion.FUSION_MODES`.
        seeds: one run per seed; the seed draws the scenes and questions (train and test), the validation
            carve, the initialisation and the training order.
        out: parent directory; run ``(f, s)`` goes to ``out/f/seed{s}``.
        overrides: ``key=value`` recipe overrides for every run.
        accelerator: ``trainer.accelerator`` (``"cpu"``, ``"gpu"`` or ``"auto"``).
        jobs: runs trained at once in separate processes; 1 trains in this process.
        log: called with one line per finished run.

    Returns:
        ``{"recipe", "overrides", "seeds", "accelerator", "data", "fusions": {fusion: summary}, "published",
        "target_relational", "best", "target_met"}``; a summary holds ``relational``, ``non_relational`` and
        ``overall`` (each ``mean``, ``std``), ``params``, ``fit_seconds_median`` and the per-seed ``runs``.

    Example:
        >>> rec = run_clevr(["concat", "film"], [0], out=Path("runs/bench/clevr"))  # doctest: +SKIP
        >>> rec["fusions"]["film"]["relational"]["mean"]  # doctest: +SKIP
    """
    from cnnlstm.engine.fit import resolve_config

    unknown = [f for f in fusions if f not in FUSION_MODES]
    if unknown:
        raise ConfigError(f"unknown fusion {unknown}; use some of {FUSION_MODES}")
    if jobs < 1:
        raise ConfigError(f"--clevr-jobs must be >= 1, got {jobs}")
    overrides = [f"trainer.accelerator={accelerator}", *(overrides or [])]
    config = resolve_config(RECIPE, overrides=overrides)  # fails fast on a bad override, before any training
    tasks = [(f, s) for f in fusions for s in seeds]
    runs: dict[str, list[dict[str, Any]]] = {f: [] for f in fusions}

    def done(fusion: str, record: dict[str, Any]) -> None:
        runs[fusion].append(record)
        log(f"clevr: {fusion} seed {record['seed']}: relational {record.get('test_acc_relational', float('nan')):.3f}"
            f", non-relational {record.get('test_acc_non_relational', float('nan')):.3f} "
            f"({record.get('fit_seconds', 0):.0f} s)")

    if jobs == 1:
        for fusion, seed in tasks:
            done(*_fit_one(fusion, seed, overrides, out, None))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        # spawn, not fork: a forked child would inherit this process's CUDA context and torch thread pools
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_fit_one, f, s, overrides, out, threads) for f, s in tasks]
            for future in as_completed(futures):
                done(*future.result())

    summaries = {f: _summary(runs[f]) for f in fusions}
    best = max(fusions, key=lambda f: summaries[f]["relational"]["mean"] or 0.0)
    data = config["data"]
    return {
        "recipe": RECIPE, "overrides": overrides, "seeds": list(seeds), "accelerator": accelerator,
        "data": {"spec": data["spec"], "options": data.get("options", {}), "val_fraction": data["val_fraction"]},
        "epochs": config["trainer"]["max_epochs"],
        "fusions": summaries,
        "published": [{"model": m, "relational": r, "non_relational": n} for m, r, n in PUBLISHED],
        "target_relational": TARGET_RELATIONAL,
        "best": best,
        "target_met": (summaries[best]["relational"]["mean"] or 0.0) > TARGET_RELATIONAL,
    }


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """The suite's entry point for ``cnnlstm bench clevr``.

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
                     log=log)


def _pct(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "—"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


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
    lines = [
        f"Sort-of-CLEVR (`{record['recipe']}` recipe, {opts.get('n_train', '?')} training / "
        f"{opts.get('n_test', '?')} test questions, {record['epochs']} epochs max, "
        f"seeds {', '.join(map(str, record['seeds']))}; test accuracy %, mean ± std over seeds).",
        "",
        "| model | image enters fusion as | relational | non-relational | overall | params | fit s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fusion, s in record["fusions"].items():
        grid = "grid + coordinates" if fusion in SPATIAL_FUSION_MODES else "pooled vector"
        fit_s = "—" if s["fit_seconds_median"] is None else f"{s['fit_seconds_median']:.0f}"
        params = "—" if s["params"] is None else f"{s['params'] / 1e3:.0f}k"
        lines.append(f"| multi_input, fusion={fusion} | {grid} | {_pct(s['relational'])} | "
                     f"{_pct(s['non_relational'])} | {_pct(s['overall'])} | {params} | {fit_s} |")
    for p in record["published"]:
        lines.append(f"| {p['model']} | published | {100 * p['relational']:.0f} | {100 * p['non_relational']:.0f} "
                     "| | | |")
    best = record["best"]
    rel = record["fusions"][best]["relational"]["mean"]
    verdict = "met" if record["target_met"] else "not met"
    lines += ["", f"Target (relational accuracy clearly above CNN+MLP's {100 * record['target_relational']:.0f}%): "
              f"{verdict}; best fusion `{best}` at {100 * (rel or 0):.1f}%."]
    epochs = {f: [r.get("best_epoch") for r in s["runs"]] for f, s in record["fusions"].items()}
    lines.append("Best epochs (chosen on validation): "
                 + "; ".join(f"{f} {'/'.join(str(e) for e in ep)}" for f, ep in epochs.items()) + ".")
    times = [r["fit_seconds"] for s in record["fusions"].values() for r in s["runs"] if "fit_seconds" in r]
    if times:
        lines.append(f"Accelerator: {record['accelerator']}; total fit time {statistics.fsum(times) / 60:.1f} min.")
    return "\n".join(lines)
