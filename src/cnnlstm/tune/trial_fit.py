"""Training one trial: the engine's ``fit`` on the trial's recipe, unchanged, as a fresh process would run it.

A trial is scored on validation only; the test split is evaluated once, for the best trial, at the end of
the study (:func:`cnnlstm.tune.api.write_outputs`).

``best.yaml`` must train the best trial again when given to ``cnnlstm fit`` in a new process, so a trial
runs its recipe exactly as written (the progress bar is silenced by a callback, not by editing the recipe),
through the same ``fit`` (which seeds torch, numpy and ``random`` first and reseeds every epoch), and
starts from the process-wide numeric settings the worker started with, whatever an earlier trial left.

Example:
    >>> snapshot = NumericState.capture()
    >>> snapshot == NumericState.capture()
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from cnnlstm.engine import fit
from cnnlstm.engine.ensemble import ensemble_size, validation_fitted_models
from cnnlstm.errors import ConfigError

__all__ = ["fit_trial", "NumericState"]


@dataclass(frozen=True)
class NumericState:
    """Process-wide torch settings that change training numbers and that ``seed_everything`` does not reset.

    Attributes:
        threads: intra-op threads (reduction order on the CPU).
        deterministic: ``torch.are_deterministic_algorithms_enabled()``; ``warn_only`` its warn-only mode.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark``; ``cudnn_deterministic`` likewise.
        matmul_precision: ``torch.get_float32_matmul_precision()`` (TF32 on GPUs).
        default_dtype: ``torch.get_default_dtype()`` (new parameters' dtype).

    Example:
        >>> NumericState.capture().default_dtype
        torch.float32
    """

    threads: int
    deterministic: bool
    warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool
    matmul_precision: str
    default_dtype: torch.dtype

    @classmethod
    def capture(cls) -> NumericState:
        """The settings now."""
        return cls(threads=torch.get_num_threads(), deterministic=torch.are_deterministic_algorithms_enabled(),
                   warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
                   cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                   cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
                   matmul_precision=torch.get_float32_matmul_precision(), default_dtype=torch.get_default_dtype())

    def restore(self) -> None:
        """Put these settings back (a no-op where nothing changed)."""
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.set_default_dtype(self.default_dtype)


def fit_trial(config: dict[str, Any], out: str | Path, callbacks: list[pl.Callback],
              numerics: NumericState | None = None) -> dict[str, Any]:
    """Train ``config`` into run directory ``out`` with ``callbacks``; return the validation metrics.

    Args:
        config: a full recipe; trained as written (it is the trial's ``config.yaml`` and ``best.yaml``).
        out: the trial's run directory (``config.yaml``, ``checkpoints/best.safetensors``, ``metrics.json``).
        callbacks: extra Lightning callbacks, e.g. a :class:`~cnnlstm.tune.pruning.PruningCallback`; they
            observe training and may stop it, never change it. Not used for an ensemble (``trainer.ensemble``
            >= 2, which a space may search): it is scored once, on its averaged validation probabilities, and
            is never pruned.
        numerics: the settings to train under, captured when the worker started (what the process, and a fresh
            ``cnnlstm fit``, began with); ``None`` keeps the current ones.

    Returns:
        ``val/*`` of the best-on-validation epoch, ``best_epoch``, ``epochs``, ``fit_seconds``, ...

    Example:
        >>> fit_trial(config, "runs/tune/trials/0003", [])["val/acc"]  # doctest: +SKIP
    """
    if numerics is not None:
        numerics.restore()  # undo whatever an earlier trial's libraries changed
    if validation_fitted_models(config):
        raise ConfigError("a model with fit_on_validation: true fits on the validation split, so a trial has no "
                          "score to rank; tune with fit_on_validation: false in its model section")
    if ensemble_size(config) > 1:
        if config["trainer"].get("refit"):
            raise ConfigError("an ensemble with trainer.refit trains its members on the validation split, so a "
                              "trial has no score to rank; tune without trainer.refit and refit the chosen recipe "
                              "with cnnlstm fit")
        # An ensemble trains one Trainer per member and is scored once, on the members' averaged probabilities
        # over the validation split: there is no per-epoch value of the ensemble to report, so it is not pruned.
        result = fit(config, out=out, test=False, verbose=False, overwrite=True)
        return {k: v for k, v in result.metrics.items() if not k.startswith("test/")}
    extra = list(callbacks)
    if config["trainer"].get("enable_progress_bar", True):
        extra.append(TQDMProgressBar(refresh_rate=0))  # one line per trial instead; the recipe stays as written
    # tune owns its trial folders: a trial re-run after a crash starts its folder again
    result = fit(config, out=out, callbacks=extra, test=False, verbose=False, overwrite=True)
    return {k: v for k, v in result.metrics.items() if not k.startswith("test/")}
