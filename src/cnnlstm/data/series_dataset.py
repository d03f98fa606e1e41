"""Series classification samples, their normalisation, and the bundle every series source returns.

``ucr:``, ``ts:``, ``npz:`` and ``windows:`` all end here, so they share one dataset class, one set of
checks (:mod:`cnnlstm.data.validate`) and one meaning of ``normalize``:

- ``"none"``: values as stored. The UCR archive is already z-normalised per series for univariate sets.
- ``"series"``: z-normalise each series, each channel over its own time steps (the UCR convention), done
  per sample when it is read, so nothing is copied.
- ``"channel"``: subtract each channel's mean and divide by its std, both computed on the TRAINING split
  only and applied to both splits (no test statistics leak into training). ``info.normalization``
  keeps them so predictions on new data can apply the same transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnlstm.data._registry import DatasetBundle
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.validate import check_finite, check_lengths, check_non_empty, check_same_count, encode_labels
from cnnlstm.errors import ConfigError, DataError

__all__ = ["NORMALIZE_MODES", "SeriesDataset", "channel_stats", "zscore", "build_series_bundle"]

NORMALIZE_MODES = ("none", "series", "channel")
_EPS = 1e-8  # a constant channel has std 0: leave it centred instead of dividing by zero


def zscore(x: Tensor) -> Tensor:
    """Z-normalise one series, each channel over its own time steps.

    Args:
        x: a series.

    Shape:
        - x: (T, F) -> (T, F)

    Example:
        >>> zscore(torch.tensor([[1.0], [3.0]])).flatten().tolist()
        [-1.0, 1.0]
    """
    mean = x.mean(dim=0, keepdim=True)  # (1, F)
    std = x.std(dim=0, unbiased=False, keepdim=True)  # (1, F)
    return (x - mean) / torch.where(std > _EPS, std, torch.ones_like(std))


def channel_stats(series: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of every channel over all time steps of all series (float64 for accuracy).

    Args:
        series: (N, T, F), or arrays (T_i, F) of any lengths, or one stream (N, F).

    Shape:
        - returns: mean (F,), std (F,); a zero std is replaced by 1.

    Example:
        >>> mean, std = channel_stats([np.array([[0.0], [2.0]]), np.array([[4.0]])])
        >>> mean.tolist(), std.round(3).tolist()
        ([2.0], [1.633])
    """
    if isinstance(series, np.ndarray):
        steps = series.reshape(-1, series.shape[-1])  # (N*T, F)
    else:
        steps = np.concatenate([np.reshape(s, (-1, np.shape(s)[-1])) for s in series])  # (sum T_i, F)
    steps = steps.astype(np.float64)
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    return mean, np.where(std > _EPS, std, 1.0)


class SeriesDataset(Dataset):
    """Labelled series: sample ``i`` is ``{"x": (T_i, F) float32, "y": int64}``.

    Args:
        series: one tensor (N, T, F) when all series share a length, or any indexable of (T_i, F) tensors
            (a list, or a lazy view such as windows over a stream).
        labels: class ids (N,) int64.
        zscore_each: z-normalise every series when it is read (``normalize="series"``).

    Shape:
        - sample ``x``: (T_i, F); ``pad_collate`` pads a batch to (B, max T_i, F) and adds ``lengths``.

    Example:
        >>> ds = SeriesDataset(torch.zeros(4, 10, 3), torch.tensor([0, 1, 0, 1]))
        >>> ds[1]["x"].shape, int(ds[1]["y"])
        (torch.Size([10, 3]), 1)
    """

    def __init__(self, series: Tensor | Sequence[Tensor], labels: Tensor, zscore_each: bool = False) -> None:
        if len(series) != len(labels):
            raise ConfigError(f"SeriesDataset got {len(series)} series but {len(labels)} labels")
        self.series = series
        self.labels = labels.to(torch.int64)
        self.zscore_each = zscore_each

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        x = self.series[index]
        return {"x": zscore(x) if self.zscore_each else x, "y": self.labels[index]}

    @property
    def targets(self) -> list[int]:
        """Class id of every sample (for stratified splits)."""
        return self.labels.tolist()


def _to_tensors(series: list[np.ndarray]) -> Tensor | list[Tensor]:
    if len({s.shape for s in series}) == 1:
        return torch.from_numpy(np.stack(series).astype(np.float32, copy=False))  # (N, T, F)
    return [torch.from_numpy(s.astype(np.float32, copy=False)) for s in series]  # ragged: keep every length


def build_series_bundle(
    name: str,
    train: tuple[np.ndarray | Sequence[np.ndarray], Sequence | np.ndarray],
    test: tuple[np.ndarray | Sequence[np.ndarray], Sequence | np.ndarray],
    *,
    normalize: str = "none",
    info: dict[str, Any] | None = None,
) -> DatasetBundle:
    """Check, label-encode and normalise series splits, and wrap them in a :class:`DatasetBundle`.

    Args:
        name: the spec, used in every message (e.g. ``"npz:data.npz"``).
        train: ``(series, labels)``: series (N, T, F) or arrays (T_i, F); labels (N,) ids or names.
        test: the same for the test split.
        normalize: ``"none"``, ``"series"`` or ``"channel"`` (see the module docstring).
        info: extra kind-specific entries for ``info.extras`` (e.g. the window settings).

    Returns:
        a ``kind="series"`` bundle; ``info`` has ``model_kwargs`` (``num_classes``, ``in_channels``),
        ``class_names``, ``targets``, ``normalization`` and ``extras["lengths"]`` (min, max).

    Example:
        >>> x = np.random.default_rng(0).normal(size=(4, 5, 2))
        >>> b = build_series_bundle("demo", (x, [0, 1, 0, 1]), (x, [1, 0, 1, 0]))
        >>> b.info.model_kwargs
        {'num_classes': 2, 'in_channels': 2}
    """
    if normalize not in NORMALIZE_MODES:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
    splits = {}
    for split, (series, labels) in (("train", train), ("test", test)):
        where = f"{name} ({split})"
        series = list(series) if not isinstance(series, np.ndarray) else series
        check_non_empty(len(series), where)
        check_same_count(len(series), len(labels), where)
        check_lengths(series, where)
        check_finite(series, where)
        splits[split] = [np.asarray(s) for s in series]
        bad = next((s for s in splits[split] if s.ndim != 2), None)
        if bad is not None:
            raise DataError(f"{where}: every series must be (T, F), got {bad.shape}")
    widths = {s.shape[-1] for part in splits.values() for s in part}
    if len(widths) != 1:
        raise DataError(f"{name}: series have different channel counts {sorted(widths)}; use one count")
    y_train, y_test, class_names = encode_labels(train[1], test[1], where=name)
    normalization: dict[str, Any] = {"mode": normalize}
    if normalize == "channel":
        mean, std = channel_stats(splits["train"])  # training statistics only
        normalization.update(mean=mean.tolist(), std=std.tolist())
        splits = {k: [(s - mean) / std for s in v] for k, v in splits.items()}
    lengths = [s.shape[0] for s in splits["train"]]
    return DatasetBundle(
        name=name,
        kind="series",
        train=SeriesDataset(_to_tensors(splits["train"]), torch.from_numpy(y_train), normalize == "series"),
        test=SeriesDataset(_to_tensors(splits["test"]), torch.from_numpy(y_test), normalize == "series"),
        info=DataInfo(
            model_kwargs={"num_classes": len(class_names), "in_channels": widths.pop()},
            class_names=class_names,
            targets=y_train.tolist(),
            normalization=normalization,
            extras={"lengths": (min(lengths), max(lengths)), **(info or {})},
        ),
        collate_fn=pad_collate,
    )
