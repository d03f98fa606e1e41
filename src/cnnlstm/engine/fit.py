"""Fit, test and the pretraining stage: a recipe in, a run directory out.

``fit`` trains on the training split minus a validation split, keeps the checkpoint that scores best on
validation, and evaluates that checkpoint once on the test split. ``evaluate_run`` rebuilds a run from its
directory alone (``config.yaml`` + ``checkpoints/best.safetensors``) and evaluates it again, giving the same
test metrics.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from cnnlstm.data import DatasetBundle
from cnnlstm.engine.build import build_model, count_parameters
from cnnlstm.engine.data import RecipeData, load_bundle
from cnnlstm.engine.recipe import apply_overrides, load_recipe, validate_recipe
from cnnlstm.engine.rundir import (
    RUN_DIR_ENV,
    load_weights,
    read_config,
    resolve_run_dir,
    save_weights,
    weights_path,
    write_json,
    write_yaml,
)
from cnnlstm.engine.trainer import make_trainer
from cnnlstm.errors import ConfigError, WeightsError
from cnnlstm.tasks import ClassificationTask, Task, build_task, task_for_kind

__all__ = ["RunResult", "resolve_config", "fit", "evaluate_run", "task_name", "load_best"]


@dataclass
class RunResult:
    """What ``fit`` / ``evaluate_run`` return.

    Attributes:
        run_dir: the run directory.
        metrics: flat metrics (``test/acc``, ``val/acc``, ``best_epoch``, ...), as in ``metrics.json``.
        config: the resolved recipe.
        history: per-epoch train/validation metrics.
    """

    run_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_config(recipe: str | dict[str, Any], *, data: str | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The validated recipe: loaded (name, path or dict), ``--data`` and ``--set`` overrides applied.

    Example:
        >>> cfg = resolve_config("basic_motions", overrides=["trainer.max_epochs=1"])  # doctest: +SKIP
    """
    config = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if data is not None:
        config = {**config, "data": {**config.get("data", {}), "spec": data}}
    config = apply_overrides(config, list(overrides))
    return validate_recipe(config)


def task_name(config: dict[str, Any], bundle: DatasetBundle) -> str:
    """The recipe's ``task``, or the one the data's kind implies."""
    return config.get("task") or task_for_kind(bundle.kind)


def _is_rank_zero() -> bool:
    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def load_best(task: Task, ckpt_path: str | Path) -> int:
    """Load the model weights of a Lightning checkpoint into ``task`` (tensors only); return its epoch (1-based).

    The checkpoint holds only primitives and tensors, so ``torch.load(weights_only=True)`` reads it: no
    pickled code is ever run.
    """
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    task.load_state_dict(state["state_dict"])
    return int(state.get("epoch", 0)) + 1


class _EncoderClassifier(nn.Module):
    """A frame encoder plus a linear head: the pretraining model of a two-stage recipe (not registered)."""

    input_names = ("x",)
    output_kind = "logits"
    supports_lengths = False

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.head = nn.Linear(encoder.out_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))  # (B, C, H, W) -> (B, D) -> (B, K)


def _train_and_test(config: dict[str, Any], section: dict[str, Any], bundle: DatasetBundle, task: Task,
                    run_dir: Path, seed: int) -> tuple[dict[str, Any], list[dict[str, float]], pl.Trainer]:
    """Train ``task`` on ``bundle`` (validation carved from train), then test the best checkpoint once."""
    data = RecipeData(bundle, val_fraction=section["data"]["val_fraction"], batch_size=section["data"]["batch_size"],
                      num_workers=section["data"]["num_workers"], seed=seed,
                      stratify=task_name(config, bundle) == "classification")
    trainer, ckpt = make_trainer(section["trainer"], section["early_stopping"], task, run_dir)
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    fit_seconds = time.perf_counter() - start
    history = list(task.history)
    best = ckpt.best_model_path if ckpt is not None else ""
    if not best or not Path(best).is_file():
        raise WeightsError(f"training wrote no best checkpoint in {run_dir / 'checkpoints'} (no validation epoch ran?)")
    best_epoch = load_best(task, best)
    results = trainer.test(task, datamodule=data, verbose=False)[0]
    total, trainable = count_parameters(task.model)
    metrics: dict[str, Any] = {k: float(v) for k, v in sorted(results.items())}
    best_row = next((h for h in history if h["epoch"] == best_epoch), {})
    metrics.update({k: v for k, v in best_row.items() if k.startswith("val/")})
    last = history[-1] if history else {}
    metrics.update({k: v for k, v in last.items() if k.startswith("train/")})
    metrics.update(best_epoch=best_epoch, epochs=len(history), fit_seconds=round(fit_seconds, 3), params=total,
                   trainable_params=trainable, train_samples=len(data.train_set), val_samples=len(data.val_set),
                   test_samples=len(data.test_set))
    return metrics, history, trainer


def _write_reports(run_dir: Path, task: Task, history: list[dict[str, float]], prefix: str = "") -> None:
    from cnnlstm.report import plot_confusion_matrix, plot_learning_curves

    write_json(run_dir / f"{prefix}history.json", history)
    if history:
        metric = task.monitor.split("/", 1)[1] if task.monitor != "val/loss" else None
        plot_learning_curves(history, run_dir / f"{prefix}learning_curves.png", metric=metric)
    if isinstance(task, ClassificationTask) and task.confusion is not None:
        plot_confusion_matrix(task.confusion.numpy(), task.class_names, run_dir / f"{prefix}confusion_matrix.png")


def _data_info(bundle: DatasetBundle, task: str) -> dict[str, Any]:
    """What predict needs to read new inputs the way the model was trained (JSON-safe entries of info)."""
    keep = ("class_names", "charset", "vocab", "answers", "question_types", "normalization", "model_kwargs",
            "image_size", "data_range", "lengths")
    return {"name": bundle.name, "kind": bundle.kind, "task": task,
            **{k: bundle.info[k] for k in keep if k in bundle.info}}


def _pretrain(config: dict[str, Any], run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Stage one of a two-stage recipe: train encoder + linear head on single images, save the encoder."""
    from cnnlstm.encoders import build_encoder, save_encoder

    section = config["pretrain"]
    model_section = config["model"]
    encoder_cfg = dict(section.get("encoder") or {"name": model_section.get("encoder", "cnn"),
                                                   **(model_section.get("encoder_kwargs") or {})})
    encoder_name = encoder_cfg.pop("name", "cnn")
    bundle = load_bundle(section["data"], seed=config["seed"])
    model_kwargs = bundle.info.get("model_kwargs", {})
    encoder = build_encoder(encoder_name, in_channels=int(model_kwargs.get("in_channels", 3)), **encoder_cfg)
    model = _EncoderClassifier(encoder, int(model_kwargs["num_classes"]))
    task = ClassificationTask(model, class_names=bundle.info.get("class_names"), optim=section["optim"])
    stage_dir = run_dir / "pretrain"
    metrics, history, trainer = _train_and_test(config, section, bundle, task, stage_dir, config["seed"])
    path = stage_dir / "encoder.safetensors"
    if trainer.is_global_zero:
        save_encoder(encoder, path)
        _write_reports(stage_dir, task, history)
    trainer.strategy.barrier()  # every process reads the encoder file next
    return path, {f"pretrain/{k}": v for k, v in metrics.items()}


def fit(recipe: str | dict[str, Any], *, data: str | None = None, overrides: list[str] | tuple[str, ...] = (),
        out: str | Path | None = None, verbose: bool = True) -> RunResult:
    """Train a recipe, evaluate its best-on-validation checkpoint once on test, and write the run directory.

    Args:
        recipe: a shipped recipe name, a YAML path, or a recipe dict.
        data: a dataset spec replacing the recipe's ``data.spec``.
        overrides: ``key.path=value`` strings (see :func:`cnnlstm.engine.recipe.apply_overrides`).
        out: the run directory; ``runs/<recipe>-<timestamp>`` by default.
        verbose: print the end-of-run summary (rank 0 only).

    Returns:
        A :class:`RunResult` (the same metrics as ``RUN/metrics.json``).

    Example:
        >>> result = fit("basic_motions", overrides=["trainer.max_epochs=1"], out="runs/demo")  # doctest: +SKIP
        >>> result.metrics["test/acc"]  # doctest: +SKIP
    """
    config = resolve_config(recipe, data=data, overrides=overrides)
    run_dir = resolve_run_dir(out, config.get("name", "run")).resolve()
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP workers are started later from this process's environment
    seed = config["seed"]
    pl.seed_everything(seed, workers=True, verbose=False)
    if _is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(run_dir / "config.yaml", config)

    metrics: dict[str, Any] = {}
    model_section = dict(config["model"])
    if config.get("pretrain"):
        encoder_path, metrics = _pretrain(config, run_dir)
        model_section["pretrained"] = str(encoder_path)
        model_section.setdefault("freeze", "all")
        pl.seed_everything(seed, workers=True, verbose=False)

    bundle = load_bundle(config["data"], seed=seed)
    model = build_model(model_section, bundle.info.get("model_kwargs", {}))
    name = task_name(config, bundle)
    task = build_task(name, model, bundle.info, config["optim"])
    stage, history, trainer = _train_and_test(config, config, bundle, task, run_dir, seed)
    metrics = {**stage, **metrics}
    if trainer.is_global_zero:
        save_weights(task.model, weights_path(run_dir))
        write_json(run_dir / "data_info.json", _data_info(bundle, name))
        _write_reports(run_dir, task, history)
        write_json(run_dir / "metrics.json", metrics)
        if verbose:
            from cnnlstm.report import format_summary

            title = f"{config.get('name', 'run')}: {model.model_name} on {bundle.name} ({name})"
            print(format_summary(metrics, run_dir, title), flush=True)
    trainer.strategy.barrier()
    return RunResult(run_dir=run_dir, metrics=metrics, config=config, history=history)


def evaluate_run(run_dir: str | Path, *, data: str | None = None, accelerator: str = "cpu") -> RunResult:
    """Rebuild a run from its directory alone and evaluate it on the test split (or on ``data``'s test split).

    Args:
        run_dir: a directory written by :func:`fit`.
        data: another dataset spec with the same classes and input layout.
        accelerator: Lightning accelerator for the evaluation.

    Example:
        >>> evaluate_run("runs/demo").metrics["test/acc"]  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if data is not None:
        config = validate_recipe({**config, "data": {**config["data"], "spec": data}})
    model = load_weights(weights_path(run_dir))
    bundle = load_bundle(config["data"], seed=config["seed"])
    name = task_name(config, bundle)
    task = build_task(name, model, bundle.info, config["optim"])
    data_module = RecipeData(bundle, val_fraction=config["data"]["val_fraction"],
                             batch_size=config["data"]["batch_size"], num_workers=config["data"]["num_workers"],
                             seed=config["seed"], stratify=name == "classification")
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False,
                         precision=config["trainer"].get("precision", "32-true"))
    try:
        results = trainer.test(task, datamodule=data_module, verbose=False)[0]
    except RuntimeError as exc:
        raise ConfigError(f"the run's model cannot read {bundle.name}: {str(exc).splitlines()[0]}") from None
    metrics = {k: float(v) for k, v in sorted(results.items())}
    return RunResult(run_dir=run_dir, metrics=metrics, config=config)
