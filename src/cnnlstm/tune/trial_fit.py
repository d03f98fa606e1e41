"""Training one trial: the engine's ``fit`` with extra Lightning callbacks and without the test evaluation.

A trial is scored on validation only; the test split is evaluated once, for the best trial, at the end of
the study. The engine's ``fit(..., callbacks=[...], test=False)`` does exactly that. Until that hook is in
``cnnlstm.engine.fit``, :func:`fit_trial` composes the same steps from the engine's public building blocks
(same seeding and build order as ``fit``, so ``cnnlstm fit`` on the trial's recipe trains the same model).
"""

from __future__ import annotations

import importlib
import inspect
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from cnnlstm.engine.build import build_model
from cnnlstm.engine.data import RecipeData, load_bundle
from cnnlstm.engine.recipe import validate_recipe
from cnnlstm.engine.rundir import save_weights, weights_path, write_json, write_yaml
from cnnlstm.engine.trainer import make_trainer
from cnnlstm.errors import WeightsError
from cnnlstm.tasks import build_task

__all__ = ["fit_trial", "engine_has_hooks"]

# the module, not the function `cnnlstm.engine.fit` that the package re-exports under the same name
engine_fit = importlib.import_module("cnnlstm.engine.fit")


def engine_has_hooks() -> bool:
    """Whether ``cnnlstm.engine.fit.fit`` takes ``callbacks`` and ``test`` (the hooks tuning asks for)."""
    params = inspect.signature(engine_fit.fit).parameters
    return "callbacks" in params and "test" in params


def fit_trial(config: dict[str, Any], out: str | Path, callbacks: list[pl.Callback]) -> dict[str, Any]:
    """Train ``config`` into run directory ``out`` with ``callbacks``; return the validation metrics.

    Args:
        config: a full recipe (validated by the caller or here).
        out: the trial's run directory (``config.yaml``, ``checkpoints/best.safetensors``, ``metrics.json``).
        callbacks: extra Lightning callbacks, e.g. a :class:`~cnnlstm.tune.pruning.PruningCallback`.

    Returns:
        ``val/*`` of the best-on-validation epoch, ``best_epoch``, ``epochs``, ``fit_seconds``.

    Example:
        >>> fit_trial(config, "runs/tune/trials/0003", [])["val/acc"]  # doctest: +SKIP
    """
    if engine_has_hooks():
        result = engine_fit.fit(config, out=out, callbacks=callbacks, test=False, verbose=False)
        return {k: v for k, v in result.metrics.items() if not k.startswith("test/")}
    return _fit_without_test(config, Path(out), callbacks)


def _fit_without_test(config: dict[str, Any], run_dir: Path, callbacks: list[pl.Callback]) -> dict[str, Any]:
    """``engine.fit`` minus the test evaluation, step for step (seeding, pretraining, build order)."""
    config = validate_recipe(config)
    run_dir = run_dir.resolve()
    seed = config["seed"]
    pl.seed_everything(seed, workers=True, verbose=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", config)
    model_section = dict(config["model"])
    if config.get("pretrain"):
        encoder_path, _ = engine_fit._pretrain(config, run_dir)
        model_section["pretrained"] = str(encoder_path)
        model_section.setdefault("freeze", "all")
        pl.seed_everything(seed, workers=True, verbose=False)
    bundle = load_bundle(config["data"], seed=seed)
    model = build_model(model_section, bundle.info.get("model_kwargs", {}))
    name = engine_fit.task_name(config, bundle)
    task = build_task(name, model, bundle.info, config["optim"])
    data = RecipeData(bundle, val_fraction=config["data"]["val_fraction"], batch_size=config["data"]["batch_size"],
                      num_workers=config["data"]["num_workers"], seed=seed, stratify=name == "classification")
    trainer, ckpt = make_trainer(config["trainer"], config["early_stopping"], task, run_dir)
    trainer.callbacks.extend(callbacks)  # after ModelCheckpoint: the epoch is saved before a prune stops it
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    fit_seconds = time.perf_counter() - start
    best = ckpt.best_model_path if ckpt is not None else ""
    if not best or not Path(best).is_file():
        raise WeightsError(f"training wrote no best checkpoint in {run_dir / 'checkpoints'} (no validation epoch ran?)")
    best_epoch = engine_fit.load_best(task, best)
    history = list(task.history)
    best_row = next((h for h in history if h["epoch"] == best_epoch), {})
    metrics: dict[str, Any] = {k: v for k, v in best_row.items() if k.startswith("val/")}
    metrics.update(best_epoch=best_epoch, epochs=len(history), fit_seconds=round(fit_seconds, 3))
    save_weights(task.model, weights_path(run_dir))
    write_json(run_dir / "history.json", history)
    write_json(run_dir / "metrics.json", metrics)
    return metrics
