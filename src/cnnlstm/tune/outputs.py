"""What a study leaves in ``--out``: best.yaml, trials.csv, the history and importance plots, summary.json.

Every file is written atomically and rebuilt from the storage alone, so any worker (or a later
``cnnlstm tune`` with zero new trials) can write them, and the last worker to finish writes them complete.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from cnnlstm._io import atomic_write  # noqa: E402
from cnnlstm.engine.rundir import write_yaml  # noqa: E402

__all__ = ["best_trial", "best_recipe", "write_best_yaml", "write_trials_csv", "plot_history", "plot_importances",
           "compute_importances"]


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial, or None while no trial has completed."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    return pick(complete, key=lambda t: t.value)  # trials come in number order: ties go to the earliest


def best_recipe(study: optuna.Study, trial: FrozenTrial, metric: str) -> dict[str, Any]:
    """The best trial's full recipe, as ``cnnlstm fit --recipe best.yaml`` takes it: the recipe the trial ran
    (its run directory's ``config.yaml``, same seed, same epochs), with a note on where it came from added to
    ``description``, which training never reads."""
    config = dict(trial.user_attrs["config"])
    note = f"tuned by cnnlstm tune: study {study.study_name!r}, trial {trial.number}, {metric}={trial.value:.6g}"
    config["description"] = f"{config.get('description', '')} [{note}]".strip()
    return config


def write_best_yaml(study: optuna.Study, trial: FrozenTrial, metric: str, path: str | Path) -> Path:
    """Write :func:`best_recipe` as YAML."""
    return write_yaml(path, best_recipe(study, trial, metric))


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return "" if value is None else value


def write_trials_csv(study: optuna.Study, path: str | Path) -> Path:
    """One row per trial: number, state, value, timing, retry/prune/failure notes, then every parameter.

    Example:
        >>> write_trials_csv(study, "runs/tune/trials.csv")  # doctest: +SKIP
    """
    trials = study.get_trials(deepcopy=False)
    params = sorted({p for t in trials for p in t.params})
    head = ["number", "state", "value", "duration_s", "datetime_start", "datetime_complete", "retry_of",
            "last_epoch", "best_epoch", "note"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head + params)
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else None
        last_epoch = max(t.intermediate_values) if t.intermediate_values else None
        note = t.user_attrs.get("error") or t.user_attrs.get("diverged") or ""
        row = [t.number, t.state.name, t.value, duration, t.datetime_start, t.datetime_complete,
               t.system_attrs.get("failed_trial"), last_epoch, t.user_attrs.get("best_epoch"), note]
        writer.writerow([_cell(v) for v in row] + [_cell(t.params.get(p)) for p in params])
    return atomic_write(path, buf.getvalue())


def _save(fig: plt.Figure, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def plot_history(study: optuna.Study, metric: str, path: str | Path) -> Path:
    """Each trial's score by trial number, pruned trials at their last reported epoch, and the best so far.

    Example:
        >>> plot_history(study, "val/loss", "runs/tune/history.png")  # doctest: +SKIP
    """
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter(*zip(*pruned, strict=True), marker="x", color="0.6", label="pruned (last epoch)")
    if done:
        ax.scatter(*zip(*done, strict=True), color="C0", label="complete", zorder=3)
        best, xs, ys = None, [], []
        for number, value in done:
            best = value if best is None else (min(best, value) if minimize else max(best, value))
            xs.append(number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title=f"optimisation history ({'lower' if minimize else 'higher'} is better)")
    if done or pruned:
        ax.legend(fontsize=8)
    return _save(fig, path)


def compute_importances(study: optuna.Study) -> dict[str, float] | None:
    """``optuna.importance.get_param_importances``, or None when it cannot be computed (fewer than two
    complete trials, or no parameter shared by all of them)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return None
    return {k: float(v) for k, v in importances.items() if math.isfinite(v)} or None


def plot_importances(importances: dict[str, float], path: str | Path) -> Path:
    """Horizontal bars of parameter importances, the most important on top."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set(xlabel="importance (share of the score's variance)", title="parameter importances")
    return _save(fig, path)
