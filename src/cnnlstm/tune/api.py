"""``tune``: search a recipe's hyperparameters and architecture in a shared study, then test the best once.

Example:
    >>> from cnnlstm.tune import tune
    >>> result = tune("basic_motions", trials=20, out="runs/bm-tune")  # doctest: +SKIP
    >>> result.best_recipe  # doctest: +SKIP
    PosixPath('runs/bm-tune/best.yaml')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cnnlstm.engine.rundir import weights_path, write_json
from cnnlstm.errors import ConfigError
from cnnlstm.tune.outputs import (
    best_recipe,
    best_trial,
    compute_importances,
    plot_history,
    plot_importances,
    write_best_yaml,
    write_trials_csv,
)
from cnnlstm.tune.runner import FINISHED, count_states, run_worker
from cnnlstm.tune.search import SearchPlan, resolve_search
from cnnlstm.tune.study import make_pruner, make_sampler, make_storage, open_study, sqlite_url

__all__ = ["TuneResult", "tune", "write_outputs"]


@dataclass
class TuneResult:
    """What :func:`tune` returns (also in ``OUT/summary.json``).

    Attributes:
        study_name: the Optuna study.
        storage: its storage URL.
        out: the output directory.
        metric: the optimised validation metric; ``direction``: ``minimize`` or ``maximize``.
        counts: trials by state (``COMPLETE``, ``PRUNED``, ``FAIL``, ...).
        best_number: the best trial's number (None before any trial completed); ``best_value`` its score.
        best_recipe: path of ``best.yaml``.
        test_metrics: the best trial's test metrics, evaluated once when the study's budget is spent.
        importances: parameter importances (None with fewer than two complete trials).
    """

    study_name: str
    storage: str
    out: Path
    metric: str
    direction: str
    counts: dict[str, int]
    best_number: int | None = None
    best_value: float | None = None
    best_recipe: Path | None = None
    test_metrics: dict[str, float] | None = None
    importances: dict[str, float] | None = None


def _evaluate_best(study: optuna.Study, best: FrozenTrial, plan: SearchPlan, out: Path,
                   log: Callable[[str], None]) -> dict[str, float]:
    """Test the best trial's model once; the result is kept in the study, so no later run tests it again."""
    cached = study.user_attrs.get("test")
    if cached and cached.get("trial") == best.number:
        return cached["metrics"]
    engine = importlib.import_module("cnnlstm.engine.fit")
    run_dir = Path(best.user_attrs.get("run_dir", ""))
    if weights_path(run_dir).is_file():
        accelerator = str(plan.base["trainer"]["accelerator"])
        metrics = engine.evaluate_run(run_dir, accelerator=accelerator).metrics
    else:  # the trial ran on another machine: retrain its recipe here (same seed) and test that
        log(f"trial {best.number}'s weights are not in {run_dir}; training best.yaml again to test it")
        # tune owns OUT/best: a rerun after more trials replaces the refit of the earlier best trial
        result = engine.fit(best_recipe(study, best, plan.metric), out=out / "best", verbose=False, overwrite=True)
        metrics = {k: v for k, v in result.metrics.items() if k.startswith("test/")}
    metrics = {k: float(v) for k, v in metrics.items()}
    study.set_user_attr("test", {"trial": best.number, "metrics": metrics})
    return metrics


def write_outputs(study: optuna.Study, plan: SearchPlan, out: Path, *, trials: int, storage: str = "",
                  test: bool = True, log: Callable[[str], None] = print) -> TuneResult:
    """Write trials.csv, history.png, importances.png, best.yaml and summary.json; test the best trial once
    when the study holds ``trials`` finished trials and none is running.

    Example:
        >>> write_outputs(study, plan, Path("runs/tune"), trials=20)  # doctest: +SKIP
    """
    out.mkdir(parents=True, exist_ok=True)
    counts = count_states(study)
    write_trials_csv(study, out / "trials.csv")
    plot_history(study, plan.metric, out / "history.png")
    importances = compute_importances(study)
    if importances:
        plot_importances(importances, out / "importances.png")
    else:
        log("parameter importances need at least two complete trials with shared parameters; none plotted")
    best = best_trial(study)
    result = TuneResult(study_name=study.study_name, storage=storage, out=out, metric=plan.metric,
                        direction=plan.direction, counts={s.name: n for s, n in counts.items()},
                        importances=importances)
    if best is None:
        log("no trial completed yet: no best.yaml")
    else:
        result.best_number, result.best_value = best.number, float(best.value)
        result.best_recipe = write_best_yaml(study, best, plan.metric, out / "best.yaml")
        spent = sum(counts[s] for s in FINISHED) >= trials and not counts[TrialState.RUNNING]
        if test and spent:
            result.test_metrics = _evaluate_best(study, best, plan, out, log)
    summary: dict[str, Any] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(result).items()}
    summary["best_params"] = best.params if best is not None else None
    write_json(out / "summary.json", summary)
    return result


def _check_outputs(out: Path, url: str, recipe: str | dict[str, Any]) -> None:
    """``--out`` and an SQLite ``--storage`` can be written (checked before the study opens); rerunning resumes."""
    from cnnlstm.engine.outputs import check_output_dir, check_output_file

    inputs = [recipe] if isinstance(recipe, str) else []
    check_output_dir(out, flag="--out", inputs=inputs)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        check_output_file(url[len("sqlite:///"):], flag="--storage", inputs=inputs, example="study.db")


def tune(recipe: str | dict[str, Any], *, trials: int, timeout: float | None = None, storage: str | None = None,
         study: str | None = None, out: str | Path | None = None, sampler: str = "tpe", pruner: str = "hyperband",
         data: str | None = None, overrides: list[str] | tuple[str, ...] = (), models: str | list[str] | None = None,
         max_epochs: int | None = None, heartbeat: int = 60, test: bool = True,
         log: Callable[[str], None] = print) -> TuneResult:
    """Run (or join, or resume) a study over a recipe's search space; write the outputs; test the best once.

    Args:
        recipe: a shipped recipe name, a YAML path or a dict; its ``search:`` section is optional.
        trials: the study's budget of finished (complete or pruned) trials, shared by every process on it.
        timeout: start no new trial after this many seconds.
        storage: an Optuna RDB URL; ``sqlite:///OUT/study.db`` by default.
        study: the study name; the recipe's name by default.
        out: output directory; ``runs/<recipe>-tune`` by default (so running the command again resumes).
        sampler: ``tpe`` (seeded by the recipe's seed) or ``random``.
        pruner: ``hyperband``, ``median`` or ``none``.
        data, overrides: as for ``cnnlstm fit``, applied to the base recipe.
        models: replaces ``search.models`` (``"auto"`` or model names).
        max_epochs: replaces ``search.max_epochs``.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for two is failed and retried.
        test: evaluate the best trial once on the test split when the budget is spent.
        log: receives one line per trial.

    Returns:
        A :class:`TuneResult`.

    Example:
        >>> tune("basic_motions", trials=20, pruner="median")  # doctest: +SKIP
    """
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {timeout}")
    plan = resolve_search(recipe, data=data, overrides=list(overrides), models=models, max_epochs=max_epochs)
    name = str(plan.base.get("name", "study"))
    out = Path(out) if out is not None else Path("runs") / f"{name}-tune"
    url = storage or sqlite_url(out / "study.db")
    _check_outputs(out, url, recipe)
    seed = int(plan.base["seed"])
    rdb = make_storage(url, heartbeat=heartbeat)
    shared = open_study(rdb, study or name, plan.direction, make_sampler(sampler, seed),
                        make_pruner(pruner, plan.max_epochs))
    families = ", ".join(plan.spaces)
    log(f"study {shared.study_name!r} ({url}): {plan.direction} {plan.metric} over {families}, "
        f"{trials} trials of up to {plan.max_epochs} epochs, {pruner} pruning")
    run_worker(shared, rdb, plan, trials=trials, out=out, timeout=timeout, sampler=sampler, seed=seed,
               heartbeat=heartbeat, log=log)
    return write_outputs(shared, plan, out, trials=trials, storage=url, test=test, log=log)
