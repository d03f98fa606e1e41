"""Learning curves and confusion matrices as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in DDP workers

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cnnlstm._io import atomic_write  # noqa: E402

__all__ = ["plot_learning_curves", "plot_confusion_matrix", "learning_curves_figure", "confusion_matrix_figure",
           "png_bytes", "MaxNLocator"]


def png_bytes(fig: plt.Figure, dpi: int = 110) -> bytes:
    """A figure as PNG bytes; the figure is closed.

    Example:
        >>> png_bytes(plt.figure(figsize=(1, 1)))[:4]
        b'\\x89PNG'
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _save(fig: plt.Figure, path: str | Path) -> Path:
    return atomic_write(path, png_bytes(fig))


def _epoch_ticks(ax: plt.Axes, epochs: Sequence[int]) -> None:
    """Whole epochs on the x axis: each epoch for a short run, a few integers for a long one."""
    if len(epochs) <= 12:
        ax.set_xticks(list(epochs))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_learning_curves(history: Sequence[dict[str, float]], path: str | Path, metric: str | None = None) -> Path:
    """Train and validation loss per epoch (left) and a validation metric per epoch (right).

    Args:
        history: one dict per epoch: ``epoch``, ``train/loss``, ``val/loss``, ``val/<metric>``, ...
        path: the PNG to write.
        metric: the metric of the right panel without prefix (e.g. ``"acc"``); the first val metric that is
            not the loss when ``None``.

    Example:
        >>> plot_learning_curves([{"epoch": 1, "train/loss": 1.0, "val/loss": 1.1, "val/acc": 0.5}], "c.png")
        ... # doctest: +SKIP
    """
    return _save(learning_curves_figure(history, metric), path)


def learning_curves_figure(history: Sequence[dict[str, float]], metric: str | None = None) -> plt.Figure:
    """The figure of :func:`plot_learning_curves` (loss panel, and a metric panel when there is a metric)."""
    epochs = [h["epoch"] for h in history]
    if metric is None:
        names = [k.split("/", 1)[1] for h in history[:1] for k in h if k.startswith("val/") and k != "val/loss"]
        metric = names[0] if names else None
    panels = 2 if metric else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    ax = axes[0, 0]
    for stage in ("train", "val"):
        values = [h.get(f"{stage}/loss", np.nan) for h in history]
        ax.plot(epochs, values, marker="o", ms=3, label=stage)
    ax.set(xlabel="epoch", ylabel="loss", title="loss")
    _epoch_ticks(ax, epochs)
    ax.legend()
    if metric:
        ax = axes[0, 1]
        for stage in ("train", "val"):
            values = [h.get(f"{stage}/{metric}", np.nan) for h in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, marker="o", ms=3, label=stage)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        _epoch_ticks(ax, epochs)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path,
                          title: str = "test confusion matrix") -> Path:
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells.

    Shape:
        - matrix: (K, K) counts.

    Example:
        >>> plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], "cm.png")  # doctest: +SKIP
    """
    return _save(confusion_matrix_figure(matrix, class_names, title), path)


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str],
                            title: str = "test confusion matrix") -> plt.Figure:
    """The figure of :func:`plot_confusion_matrix`.

    Shape:
        - matrix: (K, K) counts.
    """
    matrix = np.asarray(matrix)
    k = len(matrix)
    size = min(12.0, 2.0 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    labels = [str(n)[:12] for n in class_names]
    rotation = 90 if k > 6 else 30 if max(map(len, labels), default=0) > 6 else 0  # long names would overlap
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation == 30 else "center")
    ax.set_yticklabels(labels)
    if k <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    return fig
