"""Training one trial: the engine's ``fit`` with extra Lightning callbacks and without the test evaluation.

A trial is scored on validation only; the test split is evaluated once, for the best trial, at the end of
the study (:func:`cnnlstm.tune.api.write_outputs`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from cnnlstm.engine import fit

__all__ = ["fit_trial"]


def fit_trial(config: dict[str, Any], out: str | Path, callbacks: list[pl.Callback]) -> dict[str, Any]:
    """Train ``config`` into run directory ``out`` with ``callbacks``; return the validation metrics.

    Args:
        config: a full recipe.
        out: the trial's run directory (``config.yaml``, ``checkpoints/best.safetensors``, ``metrics.json``).
        callbacks: extra Lightning callbacks, e.g. a :class:`~cnnlstm.tune.pruning.PruningCallback`.

    Returns:
        ``val/*`` of the best-on-validation epoch, ``best_epoch``, ``epochs``, ``fit_seconds``, ...

    Example:
        >>> fit_trial(config, "runs/tune/trials/0003", [])["val/acc"]  # doctest: +SKIP
    """
    result = fit(config, out=out, callbacks=callbacks, test=False, verbose=False)
    return {k: v for k, v in result.metrics.items() if not k.startswith("test/")}
