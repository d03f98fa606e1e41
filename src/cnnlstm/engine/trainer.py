"""The Lightning Trainer of a recipe: passthrough settings, checkpoints, early stopping, SWA and the loggers.

Loggers (``trainer.logger``: one name or a list): ``csv`` (default, ``RUN/logs/metrics.csv``), ``tensorboard``
(``RUN/logs/tensorboard``, read with TensorBoard) and ``mlflow`` (a local MLflow store, ``RUN/mlflow.db``, unless
``MLFLOW_TRACKING_URI`` names another); the last two need ``pip install 'cnnlstm[report]'``. Every logger
receives the same per-epoch ``train/``, ``val/`` and ``test/`` values as ``history.json`` and ``metrics.json``.

Checkpoints (``RUN/checkpoints``): ``best.ckpt`` is the epoch that scores best on the validation monitor;
``last.ckpt`` is written at the end of every training epoch (after the epoch's metrics are recorded) and, with
``trainer.checkpoint_every_n_steps: N``, also every N optimiser steps, so ``cnnlstm fit --resume RUN`` loses
at most that much work. Every checkpoint is written atomically (:class:`~cnnlstm.engine.resume.AtomicCheckpointIO`).
"""

from __future__ import annotations

import csv
import datetime
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import (
    EarlyStopping,
    ModelCheckpoint,
    ProgressBar,
    StochasticWeightAveraging,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from cnnlstm.config import EarlyStoppingConfig, SwaConfig, TrainerConfig, section_defaults
from cnnlstm.engine.resume import AtomicCheckpointIO, LastCheckpoint
from cnnlstm.engine.unfreeze import unfreeze_callback
from cnnlstm.errors import ConfigError, did_you_mean
from cnnlstm.tasks import Task

__all__ = ["LossProgressBar", "make_trainer", "resolve_clip", "swa_callback", "make_loggers", "PASSTHROUGH", "LOGGERS",
           "AppendingCSVLogger"]


class _DropAdverts(logging.Filter):
    """Drops Lightning's "try litlogger" tip, printed by every Trainer; it says nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdverts())
# Raised inside Lightning's own _pytree helper on every fit with torch >= 2.10; nothing a user can change.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

#: recipe ``trainer`` keys handed to ``lightning.Trainer`` unchanged
PASSTHROUGH = ("max_epochs", "min_epochs", "accelerator", "devices", "strategy", "num_nodes", "precision",
               "accumulate_grad_batches", "deterministic", "limit_train_batches", "limit_val_batches",
               "limit_test_batches", "log_every_n_steps", "enable_progress_bar")



class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted.

    Lightning's writer removes a run's log when a new writer opens the same folder; a resumed run
    (``cnnlstm fit --resume``) would lose the epochs before the interruption. Rows logged by an interrupted
    epoch after its last checkpoint can appear twice; ``history.json`` is the exact per-epoch record.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)  # new rows append under the existing header


class AppendingCSVLogger(CSVLogger):
    """A ``CSVLogger`` whose ``metrics.csv`` survives a resume (see :class:`_AppendingWriter`).

    Args:
        Those of Lightning's ``CSVLogger``.
    """

    @property
    def experiment(self) -> ExperimentWriter:  # noqa: D102 - Lightning's property, with the appending writer
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

#: ``trainer.logger`` names -> the package each needs (``None``: always there)
LOGGERS = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow"}


def make_loggers(spec: str | list[str] | None, run_dir: Path) -> list[Logger]:
    """The Lightning loggers of a recipe's ``trainer.logger``: ``csv``, ``tensorboard``, ``mlflow`` or a list.

    Args:
        spec: one name, a list of names, or ``None`` (the CSV log).
        run_dir: the run directory; every log is written inside it (MLflow: ``RUN/mlflow.db`` unless the
            ``MLFLOW_TRACKING_URI`` environment variable names another store).

    Raises:
        ConfigError: an unknown name, or a logger whose package is not installed.

    Example:
        >>> [type(x).__name__ for x in make_loggers(["csv", "tensorboard"], Path("runs/x"))]  # doctest: +SKIP
        ['AppendingCSVLogger', 'TensorBoardLogger']
    """
    names = [spec] if isinstance(spec, str) else list(spec or ["csv"])
    loggers: list[Logger] = []
    for name in dict.fromkeys(names):
        if name not in LOGGERS:
            raise ConfigError(f"trainer.logger: unknown logger {name!r}{did_you_mean(str(name), LOGGERS)}; "
                              f"choose from {', '.join(LOGGERS)} (or a list of them)")
        package = LOGGERS[name]
        if package is not None:
            import importlib.util

            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"trainer.logger: {name} needs the {package} package; pip install "
                                  "'cnnlstm[report]' (or drop it from trainer.logger)")
        if name == "csv":
            loggers.append(AppendingCSVLogger(save_dir=str(run_dir), name="logs", version=""))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="logs", version="tensorboard",
                                             default_hp_metric=False))
        else:
            from lightning.pytorch.loggers import MLFlowLogger

            # MLflow's own variable wins; otherwise a local SQLite store inside the run (its file store is frozen).
            uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"
            loggers.append(MLFlowLogger(experiment_name="cnnlstm", run_name=Path(run_dir).name, tracking_uri=uri))
    return loggers


def resolve_clip(value: Any, model: nn.Module) -> float | None:
    """``gradient_clip_val``: ``"auto"`` clips at 1.0 when the model has a recurrent layer, else not at all.

    Example:
        >>> resolve_clip("auto", nn.LSTM(2, 2)), resolve_clip("auto", nn.Linear(2, 2)), resolve_clip(0.5, None)
        (1.0, None, 0.5)
    """
    if value == "auto":
        return 1.0 if any(isinstance(m, nn.RNNBase) for m in model.modules()) else None
    if isinstance(value, str):
        raise ConfigError(f"trainer.gradient_clip_val must be a number, null or 'auto', got {value!r}")
    return None if value is None or value <= 0 else float(value)


def swa_callback(swa: SwaConfig | dict[str, Any] | None) -> StochasticWeightAveraging | None:
    """Lightning's stochastic weight averaging for a recipe's ``optim.swa`` (``None``: off).

    ``start_epoch`` is a 1-based epoch (int) or a fraction of ``max_epochs`` (float); from then on the
    learning rate anneals to ``lr`` over ``annealing_epochs`` and the weights at the start of each epoch are
    averaged; the average replaces the weights when training reaches ``max_epochs``.

    Example:
        >>> type(swa_callback({"lr": 1e-3, "start_epoch": 3})).__name__
        'StochasticWeightAveraging'
        >>> swa_callback(None) is None
        True
    """
    if swa is None:
        return None
    swa = swa if isinstance(swa, SwaConfig) else SwaConfig(**swa)
    start = swa.start_epoch
    start = start if isinstance(start, int) else float(start)  # Lightning's int is 1-based, like the recipe's
    return StochasticWeightAveraging(swa_lrs=float(swa.lr), swa_epoch_start=start,
                                     annealing_epochs=int(swa.annealing_epochs))


class LossProgressBar(TQDMProgressBar):
    """Lightning's progress bar, with the task's latest training loss (``Task.bar_loss``) read when it redraws.

    Tasks do not ``self.log`` the loss every step for the bar: Lightning's logging call costs about a millisecond
    of host time, as much as a small model's whole training step, and the bar redraws far less often.
    """

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        loss = getattr(pl_module, "bar_loss", None)
        if loss is not None:
            metrics = {"loss": round(float(loss), 3), **metrics}  # a tensor (TBPTT) is read here, at a redraw
        return metrics


def make_trainer(section: dict[str, Any], early: dict[str, Any], task: Task, run_dir: Path | None,
                 *, checkpoints: bool = True, callbacks: list[pl.Callback] | None = None
                 ) -> tuple[pl.Trainer, ModelCheckpoint | None]:
    """A Trainer for a recipe's ``trainer`` and ``early_stopping`` sections.

    The task decides what "best" means (``task.monitor``, ``task.monitor_mode``: ``val/acc`` max for
    classification, ``val/cer`` min for CTC, ...) unless ``early_stopping.monitor``/``mode`` say otherwise;
    the same metric chooses the best checkpoint. Only validation metrics may be monitored.

    Args:
        section: the recipe's ``trainer`` section (passthrough keys in :data:`PASSTHROUGH`).
        early: the recipe's ``early_stopping`` section.
        task: the task to train (its model decides the automatic gradient clipping).
        run_dir: where checkpoints and the logs (``trainer.logger``) go; ``None`` writes nothing (evaluation only).
        checkpoints: keep best/last checkpoints.
        callbacks: extra Lightning callbacks (they run before the checkpoint callbacks, as Lightning orders them).

    Returns:
        ``(trainer, checkpoint_callback)``.

    Example:
        >>> trainer, ckpt = make_trainer({"max_epochs": 1}, {}, task, Path("runs/x"))  # doctest: +SKIP
    """
    early = {**section_defaults(EarlyStoppingConfig), **early}
    settings = {**section_defaults(TrainerConfig), **section}  # cnnlstm's own keys a partial section leaves out
    monitor = early["monitor"] or task.monitor
    mode = early["mode"] or (task.monitor_mode if monitor == task.monitor else "min")
    if not monitor.startswith("val/"):
        raise ConfigError(f"early_stopping.monitor must be a validation metric (val/...), got {monitor!r}; "
                          "choosing on training or test metrics would bias the result")
    if mode not in ("min", "max"):
        raise ConfigError(f"early_stopping.mode must be 'min' or 'max', got {mode!r}")
    callbacks = list(callbacks or [])
    if section.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(LossProgressBar())
    swa = swa_callback(task.optim.swa)
    if swa is not None:
        callbacks.insert(0, swa)
    unfreeze = unfreeze_callback(task.model, task.optim.unfreeze_at_epoch)
    if unfreeze is not None:
        callbacks.insert(0, unfreeze)
    ckpt = None
    if run_dir is not None and checkpoints:
        folder = run_dir / "checkpoints"
        ckpt = ModelCheckpoint(dirpath=folder, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                               save_last=False, enable_version_counter=False)
        callbacks += [ckpt, LastCheckpoint(folder / "last.ckpt", settings["checkpoint_every_n_steps"])]
    if early["enabled"] and run_dir is not None:
        callbacks.insert(0, EarlyStopping(monitor=monitor, mode=mode, patience=int(early["patience"]),
                                          min_delta=float(early["min_delta"])))
    kwargs = {k: section[k] for k in PASSTHROUGH if k in section}  # what the section leaves out: Lightning's default
    if kwargs.get("strategy") == "ddp":
        # Lightning's "ddp" with a bounded wait: a rank that hangs (rather than dies, which the others see at once)
        # stops every other rank after trainer.ddp_timeout seconds instead of the process group's 30 minutes.
        # The recipe check (TrainerConfig) keeps the timeout positive.
        kwargs["strategy"] = DDPStrategy(timeout=datetime.timedelta(seconds=float(settings["ddp_timeout"])))
    clip = resolve_clip(settings["gradient_clip_val"], task.model)
    if not task.automatic_optimization:  # a TBPTT task clips and steps per chunk itself; Lightning refuses both
        kwargs["accumulate_grad_batches"] = 1
        clip = None
    logger = make_loggers(settings["logger"], run_dir) if run_dir is not None else False
    try:
        trainer = pl.Trainer(
            **kwargs,
            gradient_clip_val=clip,
            callbacks=callbacks,
            logger=logger,
            enable_checkpointing=ckpt is not None,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(run_dir) if run_dir is not None else None,
            plugins=[AtomicCheckpointIO()],
        )
    except (MisconfigurationException, ValueError, TypeError) as exc:
        raise ConfigError(f"trainer settings rejected by Lightning: {str(exc).splitlines()[0]}") from None
    return trainer, ckpt
