"""A Lightning callback that reports each epoch's validation score to Optuna and stops weak trials.

Optuna's own Lightning callback lives in the separate ``optuna-integration`` package; this one is a few
lines and reads the same ``val/<metric>`` the checkpoint is chosen on.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import optuna

from cnnlstm.errors import ConfigError

__all__ = ["PruningCallback"]


class PruningCallback(pl.Callback):
    """Report ``monitor`` after every validation epoch (step = epoch, 1-based); raise ``TrialPruned`` when the
    study's pruner says the trial is behind the others at that epoch.

    Args:
        trial: the running Optuna trial.
        monitor: the logged validation metric, e.g. ``"val/loss"``.

    Example:
        >>> trainer = pl.Trainer(callbacks=[PruningCallback(trial, "val/acc")])  # doctest: +SKIP
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.reported: list[tuple[int, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
            raise ConfigError(f"search.metric {self.monitor!r} is not logged by this task; it logs {logged}")
        epoch = trainer.current_epoch + 1
        score = float(value)
        self.trial.report(score, step=epoch)
        self.reported.append((epoch, score))
        if not math.isfinite(score) or self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={score:.4g}")
