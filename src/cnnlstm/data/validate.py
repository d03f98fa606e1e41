"""Checks every data source runs, so a bad file gets the same clear message whichever loader read it.

Each check raises :class:`~cnnlstm.errors.DataError` naming the source (``where``), what is wrong, where in
the data it is, and what to change. Series here are in cnnlstm's layout: one array (T, F) per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cnnlstm.errors import DataError

__all__ = [
    "read_utf8",
    "check_non_empty",
    "check_same_count",
    "check_lengths",
    "check_finite",
    "encode_labels",
]


def read_utf8(path: Path, not_utf8: Callable[[int, int], str], *, bom: bool = False) -> str:
    """The text of a UTF-8 file; a missing file or an undecodable byte is a ``DataError``.

    Args:
        path: the file.
        not_utf8: the message for a byte that is not UTF-8, from its line (1-based) and its value.
        bom: drop a leading byte-order mark (files saved by spreadsheets and Windows editors).

    Raises:
        DataError: ``path`` is not a file, or is not UTF-8.

    Example:
        >>> read_utf8(Path("train.csv"), lambda line, byte: f"train.csv line {line} is not UTF-8")  # doctest: +SKIP
        'image,text\\n...'
    """
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as err:
        raise DataError(not_utf8(raw[: err.start].count(b"\n") + 1, raw[err.start])) from None


def check_non_empty(n: int, where: str) -> None:
    """Raise when a split has no samples.

    Args:
        n: number of samples in the split.
        where: what the split is, e.g. ``"npz:data.npz (test)"``.

    Example:
        >>> check_non_empty(3, "train")
    """
    if n == 0:
        raise DataError(f"{where} has no samples; add data to it (or check the path and file)")


def check_same_count(n_samples: int, n_labels: int, where: str) -> None:
    """Raise when the number of samples and labels differ.

    Args:
        n_samples: samples (series, clips, stream steps) in the split.
        n_labels: labels in the split.
        where: what the split is, e.g. ``"npz:data.npz X_train/y_train"``.

    Example:
        >>> check_same_count(4, 4, "train")
    """
    if n_samples != n_labels:
        raise DataError(f"{where}: {n_samples} samples but {n_labels} labels; give one label per sample")


def check_lengths(series: Sequence[np.ndarray], where: str) -> None:
    """Raise when any series has no time steps.

    Args:
        series: arrays of shape (T_i, F).
        where: what the split is.

    Example:
        >>> check_lengths([np.zeros((3, 1))], "train")
    """
    empty = [i for i, s in enumerate(series) if s.shape[0] == 0]
    if empty:
        shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
        raise DataError(f"{where}: {len(empty)} series have zero length (samples {shown}); drop them")


def check_finite(
    series: np.ndarray | Sequence[np.ndarray],
    where: str,
    axes: tuple[str, ...] = ("sample", "step", "channel"),
) -> None:
    """Raise when any value is NaN or infinite, saying how many and where the first one is.

    Args:
        series: one array whose dims are named by ``axes`` (e.g. (N, T, F)), or a sequence of arrays (T_i, F)
            whose position in the sequence is ``axes[0]``.
        where: what the data is, e.g. ``"npz:data.npz X_train"``.
        axes: names of the dims, for the message; a sensor stream (N, C) passes ``("step", "channel")``.

    Example:
        >>> check_finite(np.zeros((2, 3, 1)), "train")
    """
    if isinstance(series, np.ndarray):
        bad = ~np.isfinite(series)
        if not bad.any():
            return
        total = int(bad.sum())
        rows = int(bad.reshape(len(bad), -1).any(axis=1).sum())
        first = np.argwhere(bad)[0].tolist()
    else:
        total, rows, first = 0, 0, None
        for i, array in enumerate(series):
            bad = ~np.isfinite(array)
            count = int(bad.sum())
            if count:
                total, rows = total + count, rows + 1
                first = first or [i, *np.argwhere(bad)[0].tolist()]
        if not total:
            return
    at = ", ".join(f"{name} {i}" for name, i in zip(axes, first, strict=False))
    raise DataError(
        f"{where} has {total} NaN/inf values in {rows} {axes[0]}(s), the first at {at}; "
        "impute or drop them before loading"
    )


def _as_label_array(labels: Sequence | np.ndarray, where: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"{where}: labels must be one value per sample (N,), got shape {array.shape}")
    if array.dtype.kind == "f":
        # Integer ids saved as floats (a common numpy round trip) are still class ids; fractions are not.
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(
                f"{where}: labels are non-integer floats; classification needs class ids or names "
                "(this looks like a regression target)"
            )
        array = array.astype(np.int64)
    elif array.dtype.kind == "b":
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iuUS":
        raise DataError(f"{where}: labels must be integers or strings, got dtype {array.dtype}")
    return array


def encode_labels(
    train_labels: Sequence | np.ndarray,
    test_labels: Sequence | np.ndarray | None = None,
    *,
    where: str,
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Map class labels (ids or names) to 0..K-1 in the sorted order of the training labels.

    The classes are fixed by the training split alone: the test split may not bring new ones, because a
    model cannot predict a class it never saw (and ``num_classes`` comes from training).

    Args:
        train_labels: training labels (N,), integers or strings.
        test_labels: test labels (M,) of the same kind, or None.
        where: the source, for messages.

    Returns:
        ``(train_ids, test_ids, class_names)``: int64 arrays and the name of each id.

    Example:
        >>> encode_labels(["b", "a", "b"], ["a"], where="demo")
        (array([1, 0, 1]), array([0]), ['a', 'b'])
    """
    train = _as_label_array(train_labels, f"{where} (train)")
    classes, train_ids = np.unique(train, return_inverse=True)
    if len(classes) < 2:
        found = f"only class {classes[0].item()!r}" if len(classes) else "no labels"
        raise DataError(f"{where}: the training split has {found}; classification needs at least 2 classes")
    test_ids = None
    if test_labels is not None:
        test = _as_label_array(test_labels, f"{where} (test)")
        if (test.dtype.kind in "US") != (train.dtype.kind in "US"):
            raise DataError(f"{where}: training labels are {train.dtype} but test labels are {test.dtype}")
        unseen = np.setdiff1d(test, classes)
        if len(unseen):
            shown = ", ".join(repr(v.item()) for v in unseen[:10]) + (", ..." if len(unseen) > 10 else "")
            raise DataError(
                f"{where}: test labels {shown} never occur in training; a model cannot learn them. "
                "Move samples of those classes into training or drop them from the test split"
            )
        test_ids = np.searchsorted(classes, test).astype(np.int64)
    return train_ids.astype(np.int64), test_ids, [str(c.item()) for c in classes]
