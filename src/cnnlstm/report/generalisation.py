"""Generalisation: the train/validation gap at the chosen epoch, and a warning when a run overfits.

A CNN-LSTM has many parameters per training sample; the signs of overfitting are a training loss far below
the validation loss at the chosen epoch, and a validation loss that climbs for epochs while the training loss
keeps falling. :func:`generalisation_gap` puts numbers on the first, :func:`overfitting_warning` detects the
second from a run's per-epoch history.
"""

from __future__ import annotations

__all__ = ["OVERFIT_EPOCHS", "generalisation_gap", "overfitting_warning"]

#: epochs of rising validation loss (with falling training loss) before a run is called overfitting
OVERFIT_EPOCHS = 5


def generalisation_gap(history: list[dict[str, float]], epoch: int) -> dict[str, float]:
    """Training and validation values of ``epoch`` and their gaps.

    ``gap/loss`` is ``val/loss - train/loss`` (positive: validation is worse); for every metric logged in
    both stages (``acc``, ``f1``, ...) ``gap/<name>`` is ``train - val``, so a positive gap again means the
    model does better on data it was trained on.

    Args:
        history: one dict per epoch (``epoch``, ``train/...``, ``val/...``).
        epoch: the 1-based epoch to report (the best checkpoint's).

    Returns:
        ``{"best/train/loss": ..., "gap/loss": ..., "gap/acc": ...}``; empty when the epoch is not in the
        history.

    Example:
        >>> generalisation_gap([{"epoch": 1, "train/loss": 0.2, "val/loss": 0.5, "train/acc": 1.0,
        ...                      "val/acc": 0.8}], 1)
        {'best/train/loss': 0.2, 'best/train/acc': 1.0, 'gap/loss': 0.3, 'gap/acc': 0.2}
    """
    row = next((h for h in history if h.get("epoch") == epoch), None)
    if row is None:
        return {}
    out: dict[str, float] = {}
    names = [k.split("/", 1)[1] for k in row if k.startswith("train/") and f"val/{k.split('/', 1)[1]}" in row]
    for name in names:
        out[f"best/train/{name}"] = row[f"train/{name}"]
    for name in names:
        train, val = row[f"train/{name}"], row[f"val/{name}"]
        out[f"gap/{name}"] = round(val - train if name == "loss" else train - val, 10)
    return out


def overfitting_warning(history: list[dict[str, float]], epochs: int = OVERFIT_EPOCHS) -> str | None:
    """A warning when validation loss has risen for ``epochs`` epochs since its minimum while training loss fell.

    Args:
        history: one dict per epoch with ``train/loss`` and ``val/loss``.
        epochs: how many epochs past the validation minimum count as overfitting.

    Returns:
        The warning text, or ``None`` for a healthy run.

    Example:
        >>> healthy = [{"epoch": e, "train/loss": 1 / e, "val/loss": 1 / e} for e in range(1, 9)]
        >>> overfitting_warning(healthy) is None
        True
        >>> over = [{"epoch": e, "train/loss": 1 / e, "val/loss": abs(e - 3) + 1.0} for e in range(1, 10)]
        >>> overfitting_warning(over).split(":")[0]
        'overfitting'
    """
    rows = [h for h in history if "train/loss" in h and "val/loss" in h]
    if len(rows) <= epochs:
        return None
    best = min(range(len(rows)), key=lambda i: rows[i]["val/loss"])
    tail = rows[best:]
    if len(tail) <= epochs:
        return None
    first, last = tail[0], tail[-1]
    if not (last["val/loss"] > first["val/loss"] and last["train/loss"] < first["train/loss"]):
        return None
    return (f"overfitting: validation loss rose for {len(tail) - 1} epochs after epoch {first['epoch']} "
            f"({first['val/loss']:.4f} -> {last['val/loss']:.4f}) while training loss fell "
            f"({first['train/loss']:.4f} -> {last['train/loss']:.4f}); more regularisation may help "
            "(model.dropout, optim.weight_decay, optim.label_smoothing, data.augment, optim.swa) or earlier "
            "stopping (early_stopping.patience)")
