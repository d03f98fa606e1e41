"""Sensor streams cut into sliding windows (DeepConvLSTM-style activity recognition): ``windows:PATH``.

A stream is a long recording, one row of channels per time step, with a label per step. Models see fixed
windows of it. :func:`sliding_windows` is the one implementation of that cut, shared by training data and
prediction. Windows are views of the stream (no copies), and no window crosses the train/test boundary or
a change of recording (``groups``): each part is windowed on its own. Validation takes whole stretches of the
training stream (:func:`window_blocks`), since overlapping windows share steps.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cnnlstm.data._npz import npz_array, open_npz
from cnnlstm.data._options import reject_unknown_options
from cnnlstm.data._registry import DatasetBundle, register_source
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.series_dataset import NORMALIZE_MODES, SeriesDataset, channel_stats
from cnnlstm.data.validate import check_finite, check_non_empty, check_same_count, encode_labels
from cnnlstm.errors import ConfigError, DataError

__all__ = ["LABEL_POLICIES", "VALIDATION_BLOCKS", "sliding_windows", "window_blocks", "load_windows"]

#: How a window's label is read from its per-step labels: the last step (what an online recogniser knows
#: when the window closes; DeepConvLSTM's choice), the most frequent (ties go to the smallest id), or the
#: middle step (index ``window // 2``).
LABEL_POLICIES = ("last", "majority", "center")


def sliding_windows(
    signals: np.ndarray | Tensor,
    labels: np.ndarray | Tensor | None = None,
    *,
    window: int,
    step: int,
    policy: str = "last",
) -> tuple[Tensor, Tensor | None]:
    """Cut a stream into windows of ``window`` steps, one starting every ``step`` steps.

    Window ``i`` covers steps ``[i * step, i * step + window)``; a tail shorter than ``window`` is dropped,
    and a stream shorter than ``window`` gives no windows. The windows are a view of ``signals``.

    Args:
        signals: the stream, (N, C), or (N,) for one channel.
        labels: integer class id of every step (N,), or None (prediction).
        window: steps per window.
        step: steps between window starts (``step < window`` overlaps windows).
        policy: ``"last"``, ``"majority"`` or ``"center"`` (see :data:`LABEL_POLICIES`).

    Returns:
        ``(windows, window_labels)``; ``window_labels`` is None when ``labels`` is.

    Shape:
        - signals: (N, C) -> windows: (N_w, window, C) with N_w = (N - window) // step + 1 (0 if N < window)
        - labels: (N,) -> window_labels: (N_w,)

    Example:
        >>> w, y = sliding_windows(torch.arange(5.0)[:, None], torch.tensor([0, 0, 1, 1, 1]), window=3, step=2)
        >>> w[:, :, 0].tolist(), y.tolist()
        ([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]], [1, 1])
    """
    if not (isinstance(window, int) and isinstance(step, int) and window >= 1 and step >= 1):
        raise ConfigError(f"window and step must be positive integers, got window={window!r}, step={step!r}")
    if policy not in LABEL_POLICIES:
        raise ConfigError(f"label policy must be one of {', '.join(LABEL_POLICIES)}, got {policy!r}")
    x = torch.as_tensor(signals)
    if x.dim() == 1:
        x = x.unsqueeze(1)  # (N,) -> (N, 1)
    if x.dim() != 2:
        raise DataError(f"sliding_windows expects a stream (N, C), got {tuple(x.shape)}")
    y = None if labels is None else torch.as_tensor(labels)
    if y is not None and (y.shape != (x.shape[0],) or y.is_floating_point()):
        raise DataError(f"sliding_windows expects one integer label per step ({x.shape[0]},), got "
                        f"{tuple(y.shape)} {y.dtype}")
    if x.shape[0] < window:
        empty = x.new_empty((0, window, x.shape[1]))  # (0, window, C)
        return empty, None if y is None else y.new_empty(0)
    windows = x.unfold(0, window, step).transpose(1, 2)  # (N_w, C, window) -> (N_w, window, C)
    if y is None:
        return windows, None
    steps = y.unfold(0, window, step)  # (N_w, window)
    if policy == "last":
        return windows, steps[:, -1]
    if policy == "center":
        return windows, steps[:, window // 2]
    values, inverse = torch.unique(steps, sorted=True, return_inverse=True)  # inverse: (N_w, window)
    counts = torch.zeros(steps.shape[0], len(values), dtype=torch.long)  # (N_w, K)
    counts.scatter_add_(1, inverse, torch.ones_like(inverse))
    return windows, values[counts.argmax(dim=1)]  # argmax takes the first maximum: ties -> smallest id


class _Chunks(Sequence):
    """Windows of several recordings indexed as one sequence, without concatenating (copying) them."""

    def __init__(self, chunks: list[Tensor]) -> None:
        self.chunks = chunks
        self.offsets = np.cumsum([0] + [len(c) for c in chunks]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> Tensor:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        k = bisect.bisect_right(self.offsets, index) - 1
        return self.chunks[k][index - self.offsets[k]]


def _runs(groups: np.ndarray | None, n: int) -> list[slice]:
    if groups is None:
        return [slice(0, n)]
    cuts = [0, *(np.flatnonzero(groups[1:] != groups[:-1]) + 1).tolist(), n]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


#: Validation blocks per training stream: windows are grouped into about this many stretches of time.
VALIDATION_BLOCKS = 20


def _window_split(
    signals: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, *, window: int, step: int, policy: str,
    zscore_each: bool, where: str,
) -> tuple[SeriesDataset, np.ndarray]:
    """The windows of one split, and the validation block of each window (see :func:`window_blocks`)."""
    runs = _runs(groups, len(signals))
    parts = [sliding_windows(torch.from_numpy(signals[r]), torch.from_numpy(labels[r]),
                             window=window, step=step, policy=policy) for r in runs]
    if not any(len(w) for w, _ in parts):
        raise DataError(
            f"{where}: no recording is as long as window={window} steps ({len(signals)} steps in all); "
            "lower window (or give this split more data)"
        )
    blocks = window_blocks([len(w) for w, _ in parts], total_steps=len(signals), window=window, step=step)
    parts = [(w, y) for w, y in parts if len(w)]
    series = parts[0][0] if len(parts) == 1 else _Chunks([w for w, _ in parts])
    return SeriesDataset(series, torch.cat([y for _, y in parts]), zscore_each), blocks


def window_blocks(counts: list[int], *, total_steps: int, window: int, step: int,
                  blocks: int = VALIDATION_BLOCKS) -> np.ndarray:
    """A validation group for every window: stretches of ``max(total_steps / blocks, 5 * window)`` steps of one
    recording.

    Overlapping windows share steps, so a validation split drawn window by window would score windows whose
    steps training has seen. Whole stretches of time go to validation instead (``DataInfo.groups``); a stretch
    never spans two recordings, and only the windows that straddle a stretch's end (at most
    ``ceil(window / step) - 1`` of them) share steps with the next stretch.

    Args:
        counts: windows of each recording, in order (``sliding_windows`` of each).
        total_steps: steps of the whole split (all recordings).
        window: steps per window.
        step: steps between window starts.
        blocks: stretches the split is cut into (at least one per recording that has windows).

    Returns:
        (sum(counts),) int64 group ids, increasing through the split.

    Example:
        >>> window_blocks([20], total_steps=84, window=4, step=4, blocks=4).tolist()  # stretches of 21 steps
        [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3]
        >>> window_blocks([2, 2], total_steps=24, window=8, step=4, blocks=1).tolist()  # one per recording
        [0, 0, 1, 1]
    """
    # steps per stretch (ceil), and at least 5 windows long: the windows at a stretch's edges share steps with
    # the next one, so a stretch must be long against a window for most of it to be unseen by training
    span = max(5 * window, -(-total_steps // max(1, blocks)))
    out, first = [], 0
    for count in counts:
        if count == 0:
            continue
        starts = np.arange(count, dtype=np.int64) * step  # window start within its recording
        ids = starts // span
        out.append(first + ids)
        first += int(ids[-1]) + 1
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _stream(data: Any, key: str, where: str) -> np.ndarray:
    array = npz_array(data, key, where)
    if array.ndim == 1:
        array = array[:, None]  # one channel (N,) -> (N, 1)
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise DataError(f"{where}: {key} must be a numeric stream (N, channels), got {array.shape} {array.dtype}")
    return array.astype(np.float32)


@register_source("windows", kind="series", description="sensor streams in an .npz cut into sliding windows")
def load_windows(
    path: str,
    *,
    seed: int = 0,
    window: int = 24,
    step: int | None = None,
    policy: str = "last",
    test_fraction: float | None = None,
    normalize: str = "none",
    **options: Any,
) -> DatasetBundle:
    """Load sensor streams and cut them into labelled windows: ``windows:recordings.npz``.

    The ``.npz`` holds ``signals`` (N, C) and ``labels`` (N,) (one per step, ids or names), optionally
    ``test_signals``/``test_labels``, and optionally ``groups`` / ``test_groups`` (N,): a recording id per
    step, so no window spans two recordings. Without a test stream the LAST ``test_fraction`` of the steps
    is the test split (chronological, so test windows never overlap training windows).

    Args:
        path: the ``.npz`` file.
        seed: unused (the split is chronological); accepted for a uniform loader signature.
        window: steps per window (default 24: DeepConvLSTM's 0.8 s at 30 Hz).
        step: steps between windows (default ``window // 2``, 50% overlap).
        policy: window label: ``"last"`` (default), ``"majority"`` or ``"center"``.
        test_fraction: share of the stream's steps held out at its end for testing (default 0.2).
        normalize: ``"none"`` (default), ``"series"`` (each window) or ``"channel"`` (training stream stats).

    Returns:
        a series bundle: samples ``{"x": (window, C) float32, "y": int64}``.

    Example:
        >>> bundle = load_windows("recordings.npz", window=32, step=16)  # doctest: +SKIP
    """
    reject_unknown_options("windows", options, ["window", "step", "policy", "test_fraction", "normalize"])
    if normalize not in NORMALIZE_MODES:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {normalize!r}")
    step = max(1, window // 2) if step is None else step
    where = f"windows:{path}"
    data = open_npz(path, where)
    with data:
        files = set(data.files)
        if not {"signals", "labels"} <= files or ("test_signals" in files) != ("test_labels" in files):
            raise DataError(f"{where} holds {sorted(files)}; expected signals (N, C) and labels (N,), optionally "
                            "test_signals and test_labels, groups and test_groups")
        split: dict[str, list] = {}
        for name, prefix in (("train", ""), ("test", "test_")):
            if f"{prefix}signals" in files:
                groups = npz_array(data, f"{prefix}groups", where) if f"{prefix}groups" in files else None
                labels = npz_array(data, f"{prefix}labels", where)
                split[name] = [_stream(data, f"{prefix}signals", where), labels, groups]
    if "test" in split and test_fraction is not None:
        raise ConfigError(f"{where} has its own test_signals; drop test_fraction")
    for name, (signals, labels, groups) in split.items():
        check_same_count(len(signals), len(labels), f"{where} ({name} signals/labels)")
        if groups is not None:
            check_same_count(len(signals), len(groups), f"{where} ({name} signals/groups)")
        check_non_empty(len(signals), f"{where} ({name})")
        check_finite(signals, f"{where} ({name} signals)", axes=("step", "channel"))
    if "test" not in split:
        signals, labels, groups = split["train"]
        fraction = 0.2 if test_fraction is None else test_fraction
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), got {fraction}")
        cut = round(len(signals) * (1.0 - fraction))
        head, tail = (None, None) if groups is None else (groups[:cut], groups[cut:])
        split = {"train": [signals[:cut], labels[:cut], head], "test": [signals[cut:], labels[cut:], tail]}
    split["train"][1], split["test"][1], class_names = encode_labels(split["train"][1], split["test"][1], where=where)
    normalization: dict[str, Any] = {"mode": normalize}
    if normalize == "channel":
        mean, std = channel_stats(split["train"][0])  # training stream only: no test statistics leak in
        normalization.update(mean=mean.tolist(), std=std.tolist())
        for part in split.values():
            part[0] = ((part[0] - mean) / std).astype(np.float32)
    windowed = {name: _window_split(*part, window=window, step=step, policy=policy,
                                    zscore_each=normalize == "series", where=f"{where} ({name})")
                for name, part in split.items()}
    datasets = {name: dataset for name, (dataset, _) in windowed.items()}
    train_ids = datasets["train"].labels
    if len(train_ids.unique()) < 2:
        raise DataError(f"{where}: every training window has the same label; classification needs 2 classes")
    return DatasetBundle(
        name=where,
        kind="series",
        train=datasets["train"],
        test=datasets["test"],
        info=DataInfo(
            model_kwargs={"num_classes": len(class_names), "in_channels": split["train"][0].shape[1]},
            class_names=class_names,
            targets=train_ids.tolist(),
            groups=windowed["train"][1].tolist(),  # validation takes whole stretches of time, not single windows
            normalization=normalization,
            extras={"window": {"window": window, "step": step, "policy": policy}},
        ),
        collate_fn=pad_collate,
    )
