"""Run a recipe quietly once per seed and keep the figures a benchmark table needs."""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["quiet", "fit_seeds", "summarize", "mean_std"]

#: per-run metrics copied from the engine's RunResult into the benchmark record
KEPT = ("test/acc", "val/acc", "best_epoch", "epochs", "fit_seconds", "params", "pretrain/test/acc",
        "pretrain/fit_seconds")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's banners and warnings (and stdout) so a benchmark prints only its own lines.

    Example:
        >>> with quiet():
        ...     print("hidden")
    """
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _same_settings(old: Any, new: Any) -> bool:
    """Equal recipes, except keys only one side has: the recipe schema grew (a new feature, off by default)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same_settings(old[k], new[k]) for k in old.keys() & new.keys())
    return old == new


def _finished(run_dir: Path, recipe: str | dict[str, Any], data: str | None, sets: list[str]) -> dict | None:
    """The metrics of a finished run in ``run_dir`` trained with exactly this resolved recipe, else None."""
    import json

    from cnnlstm.engine import resolve_config
    from cnnlstm.engine.rundir import read_config

    if not (run_dir / "metrics.json").is_file() or not (run_dir / "config.yaml").is_file():
        return None
    if not _same_settings(read_config(run_dir), resolve_config(recipe, data=data, overrides=sets)):
        return None  # another recipe, budget or seed: never mix it into this table
    return json.loads((run_dir / "metrics.json").read_text())


def fit_seeds(recipe: str | dict[str, Any], seeds: list[int], *, data: str | None, overrides: list[str],
              out: Path, reuse: bool = False, train: bool = True) -> list[dict[str, Any]]:
    """Fit ``recipe`` once per seed through :func:`cnnlstm.engine.fit.fit` and keep the benchmark metrics.

    The seed changes the weight initialisation, the training order and the validation carve (all drawn from
    the training split); the test split is the same for every seed and is scored once per run, on the
    checkpoint validation chose.

    Args:
        recipe: a shipped recipe name, a YAML path or a recipe dict.
        seeds: one run per seed.
        data: a dataset spec replacing the recipe's.
        overrides: ``key=value`` recipe overrides applied to every run.
        out: parent directory; run ``s`` goes to ``out/seed{s}``.
        reuse: take a seed's finished run from ``out/seed{s}`` when its config is exactly this one.
        train: train seeds that have no finished run (``False`` only collects finished ones).

    Returns:
        one record per seed: ``seed`` plus :data:`KEPT` metrics (``test_acc``, ``val_acc``, ...).

    Example:
        >>> runs = fit_seeds("basic_motions", [0, 1], data=None, overrides=[], out=Path("runs/b"))  # doctest: +SKIP
    """
    from cnnlstm.engine.fit import fit

    records = []
    for seed in seeds:
        sets = ["trainer.enable_progress_bar=false", *overrides, f"seed={seed}"]
        metrics = _finished(out / f"seed{seed}", recipe, data, sets) if reuse or not train else None
        if metrics is None and not train:
            continue
        if metrics is None:
            with quiet():
                metrics = fit(recipe, data=data, overrides=sets, out=out / f"seed{seed}", verbose=False,
                              overwrite=True).metrics  # bench owns --runs; --reuse keeps finished runs
        record: dict[str, Any] = {"seed": seed}
        record.update({k.replace("/", "_"): metrics[k] for k in KEPT if k in metrics})
        records.append(record)
    return records


def summarize(runs: list[dict[str, Any]], key: str = "test_acc") -> dict[str, Any]:
    """Mean, standard deviation (0 for one run), and the median fit time over seeds.

    Example:
        >>> summarize([{"test_acc": 0.9, "fit_seconds": 2.0}, {"test_acc": 1.0, "fit_seconds": 4.0}])["mean"]
        0.95
    """
    if not runs:
        return {"runs": [], "mean": None, "std": None, "fit_seconds_median": None}
    values = [float(r[key]) for r in runs]
    times = [float(r["fit_seconds"]) for r in runs if "fit_seconds" in r]
    return {
        "runs": runs,
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "fit_seconds_median": round(statistics.median(times), 2) if times else None,
    }


def mean_std(summary: dict[str, Any] | None, *, digits: int = 3, scale: float = 1.0) -> str:
    """``"mean ± std"`` of a :func:`summarize` result for a table cell (``"—"`` when nothing was measured).

    Args:
        summary: a dict with ``mean`` and ``std`` (``mean`` None or a missing summary: not measured).
        digits: decimals.
        scale: factor for both numbers (100 for percentages).

    Example:
        >>> mean_std({"mean": 0.9512, "std": 0.0031})
        '0.951 ± 0.003'
        >>> mean_std({"mean": 0.5, "std": 0.01}, digits=1, scale=100)
        '50.0 ± 1.0'
    """
    if not summary or summary.get("mean") is None:
        return "—"
    return f"{summary['mean'] * scale:.{digits}f} ± {summary['std'] * scale:.{digits}f}"
