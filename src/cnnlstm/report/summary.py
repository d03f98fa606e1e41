"""The one-screen summary printed at the end of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["format_summary"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_summary(metrics: dict[str, Any], run_dir: str | Path, title: str) -> str:
    """The end-of-run summary: model, parameters, best epoch, validation and test metrics, the generalisation gap,
    an overfitting warning when there is one, and where the files are.

    Args:
        metrics: the run's flat metrics (``metrics.json``).
        run_dir: the run directory.
        title: first line, e.g. ``"basic_motions: lstm_fcn on ucr:BasicMotions"``.

    Example:
        >>> print(format_summary({"test/acc": 0.975, "params": 1000}, "runs/x", "demo"))  # doctest: +SKIP
    """
    lines = [title, "-" * min(100, max(40, len(title)))]
    params = metrics.get("params")
    if params is not None:
        trainable = metrics.get("trainable_params", params)
        lines.append(f"parameters   {params:,} ({trainable:,} trainable)")
    if "best_epoch" in metrics:
        lines.append(f"best epoch   {metrics['best_epoch']} of {metrics.get('epochs', '?')} "
                     f"(fit {metrics.get('fit_seconds', 0):.1f} s)")
    for prefix in ("pretrain/", ""):
        for stage in ("val", "test"):
            keys = sorted(k for k in metrics if k.startswith(f"{prefix}{stage}/") and "/" not in k[len(prefix) +
                                                                                              len(stage) + 1:])
            if keys:
                label = f"{prefix}{stage}".ljust(12)
                lines.append(f"{label} " + "  ".join(f"{k.rsplit('/', 1)[1]}={_fmt(metrics[k])}" for k in keys))
    gaps = sorted(k for k in metrics if k.startswith("gap/"))
    if gaps:
        lines.append("gap          " + "  ".join(f"{k[4:]}={_fmt(metrics[k])}" for k in gaps)
                     + "  (train vs validation at the best epoch; positive: better on training data)")
    if metrics.get("weights") == "swa":
        lines.append("weights      stochastic weight average (scored better on validation than the best epoch)")
    if metrics.get("weights") == "refit":
        lines.append(f"weights      refit on train + validation ({metrics.get('refit/train_samples', '?')} samples), "
                     f"{metrics.get('refit/epochs', '?')} epochs; val: the first fit's, test: the refit's")
    if metrics.get("warning"):
        lines.append(f"WARNING      {metrics['warning']}")
    run_dir = Path(run_dir)
    lines.append(f"run dir      {run_dir}  (config.yaml, metrics.json, checkpoints/, *.png, logs/)")
    return "\n".join(lines)
