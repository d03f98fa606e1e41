"""Series classification sources: ``ucr:NAME`` (UCR/UEA via aeon), ``ts:PATH`` (.ts files) and ``npz:PATH``.

aeon ships a few UCR/UEA sets (GunPoint, ItalyPowerDemand, BasicMotions, JapaneseVowels, ...) inside its
wheel; ``ucr:`` reads those files directly, so they load offline and nothing touches the network. Other
archive names go through aeon's downloader (internet needed once; aeon caches them in ``~/aeon_data``).

Every source returns ``x`` as (T, F): aeon and the .ts format store (N, C, T), cnnlstm puts time first.
Variable-length sets (JapaneseVowels) keep each series' own length; ``pad_collate`` pads per batch and
adds ``lengths``. Labels are mapped to 0..K-1 in the sorted order of the training labels. ``normalize``
defaults to ``"none"`` (see :mod:`cnnlstm.data.series_dataset`): the univariate UCR sets are already
z-normalised per series, and user data is left as the user stored it.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from cnnlstm.data._npz import npz_array, open_npz
from cnnlstm.data._options import reject_unknown_options
from cnnlstm.data._registry import DatasetBundle, register_source
from cnnlstm.data.series_dataset import build_series_bundle
from cnnlstm.data.splits import stratified_split
from cnnlstm.data.validate import check_finite, check_non_empty, check_same_count, read_utf8
from cnnlstm.errors import ConfigError, DataError, UnknownNameError, did_you_mean

__all__ = ["read_ts", "bundled_ucr_names", "load_ucr", "load_ts", "load_npz"]


def _ts_text(path: Path) -> str:
    """Read a .ts file as UTF-8 and check what aeon's parser cannot report well."""
    text = read_utf8(path, lambda line, _: f"{path} is not UTF-8 text (invalid byte at line {line}); re-save it as "
                                           "UTF-8 (and check that it is a .ts file)")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "@data"), None)
    if start is None:
        raise DataError(f"{path} has no @data line: it is not a .ts file, or it was cut off inside the header")
    rows = lines[start + 1 :]
    blank = next((i for i, line in enumerate(rows) if not line.strip()), None)
    if not any(line.strip() for line in rows):
        raise DataError(f"{path} has no series after @data; the file is empty or was cut off")
    if blank is not None:
        raise DataError(f"{path} line {start + blank + 2} is blank; remove blank lines after @data")
    return text


def read_ts(path: str | Path) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """Read one classification .ts file into cnnlstm's layout, with a clear error for any broken file.

    Parsing is aeon's ``load_from_ts_file``; this adds the checks it lacks (encoding, truncation, labels
    missing from the header) and turns its exceptions into :class:`DataError`. Like aeon, it lower-cases
    class labels.

    Args:
        path: a ``.ts`` file with ``@classLabel true ...``.

    Returns:
        ``(series, labels)``: series (N, T, F) float64 when all share a length, else a list of (T_i, F)
        arrays; labels (N,) strings.

    Example:
        >>> x, y = read_ts("GunPoint_TRAIN.ts")  # doctest: +SKIP
        >>> x.shape, y[:2]  # doctest: +SKIP
        ((50, 150, 1), array(['2', '1'], dtype='<U1'))
    """
    path = Path(path)
    text = _ts_text(path)
    from aeon.datasets import load_from_ts_file  # aeon.datasets takes about a second to import: only when used

    try:
        x, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except (OSError, ValueError, IndexError, TypeError) as err:
        cut = "" if text.endswith("\n") else " It does not end with a newline, so it was probably cut off."
        raise DataError(f"{path} could not be read as a .ts file ({err}).{cut}") from None
    if not meta.get("classlabel") or y is None or len(y) == 0:
        raise DataError(f"{path} has no class labels (@classLabel true ...); cnnlstm's series sources classify")
    declared = set(meta.get("class_values") or ())
    undeclared = sorted(set(y.tolist()) - declared) if declared else []
    if undeclared:
        raise DataError(
            f"{path}: labels {undeclared[:5]} are not declared in @classLabel {sorted(declared)}; "
            "the file may be cut off, or the header needs those classes"
        )
    if isinstance(x, np.ndarray):
        return x.transpose(0, 2, 1), y  # aeon (N, C, T) -> (N, T, C): time first
    return [s.T for s in x], y  # unequal lengths: (C, T_i) -> (T_i, C) each


def _aeon_data_dir() -> Path | None:
    # Found without importing aeon.datasets (slow): the bundled files live in aeon/datasets/data/<NAME>/.
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


@cache
def bundled_ucr_names() -> tuple[str, ...]:
    """Names of the UCR/UEA sets aeon ships in its wheel (both ``_TRAIN.ts`` and ``_TEST.ts`` present).

    Example:
        >>> "GunPoint" in bundled_ucr_names()
        True
    """
    root = _aeon_data_dir()
    if root is None or not root.is_dir():
        return ()
    return tuple(sorted(d.name for d in root.iterdir()
                        if (d / f"{d.name}_TRAIN.ts").is_file() and (d / f"{d.name}_TEST.ts").is_file()))


def _download_ucr(name: str, extract_path: str | None) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    from aeon.datasets import load_classification
    from aeon.datasets.tsc_datasets import tsc_zenodo

    bundled = bundled_ucr_names()
    if extract_path is None and name not in tsc_zenodo:
        raise UnknownNameError(
            f"unknown UCR/UEA dataset {name!r}{did_you_mean(name, dict.fromkeys([*bundled, *tsc_zenodo]))}; "
            f"offline (bundled with aeon): {', '.join(bundled)}"
        )
    splits = []
    for split in ("train", "test"):
        try:
            x, y = load_classification(name, split=split, extract_path=extract_path)
        except Exception as err:  # aeon raises ValueError, URLError, zipfile errors, ...: all mean "not available"
            raise DataError(
                f"UCR/UEA dataset {name!r} was not found offline (bundled with aeon: {', '.join(bundled)}) and "
                f"downloading it failed ({type(err).__name__}: {err}). It needs internet access once; aeon then "
                "caches it (or pass extract_path=DIR holding NAME/NAME_TRAIN.ts and NAME/NAME_TEST.ts)"
            ) from None
        series = x.transpose(0, 2, 1) if isinstance(x, np.ndarray) else [s.T for s in x]  # (N, C, T) -> (N, T, C)
        splits.append((series, y))
    return splits[0], splits[1]


@register_source("ucr", kind="series", description="UCR/UEA classification archive via aeon (bundled sets offline)")
def load_ucr(
    name: str,
    *,
    seed: int = 0,
    normalize: str = "none",
    extract_path: str | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load a UCR/UEA classification set by name: ``ucr:GunPoint``, ``ucr:JapaneseVowels``.

    Args:
        name: archive name, case as in the archive.
        seed: unused (the archive's own train/test split is kept); accepted for a uniform loader signature.
        normalize: ``"none"`` (default; univariate UCR sets are already z-normalised), ``"series"`` or
            ``"channel"`` (training statistics).
        extract_path: a folder holding ``NAME/NAME_TRAIN.ts`` and ``NAME/NAME_TEST.ts``, read (or downloaded)
            there instead of aeon's bundled data and cache.

    Returns:
        a series bundle: samples ``{"x": (T, F) float32, "y": int64}``.

    Example:
        >>> bundle = load_ucr("GunPoint")
        >>> len(bundle.train), len(bundle.test), bundle.info.model_kwargs
        (50, 150, {'num_classes': 2, 'in_channels': 1})
    """
    reject_unknown_options("ucr", options, ["normalize", "extract_path"])
    root = _aeon_data_dir()
    if extract_path is None and name in bundled_ucr_names() and root is not None:
        train = read_ts(root / name / f"{name}_TRAIN.ts")
        test = read_ts(root / name / f"{name}_TEST.ts")
    else:
        train, test = _download_ucr(name, extract_path)
    return build_series_bundle(f"ucr:{name}", train, test, normalize=normalize)


def _test_path_for(train: Path) -> Path:
    # Replace the last TRAIN/Train/train in the file name (not the folders) by the same-case TEST.
    matches = list(re.finditer(r"TRAIN|Train|train", train.name))
    if not matches:
        raise ConfigError(
            f"ts:{train}: the file name has no 'TRAIN' to replace by 'TEST'; pass the test file with test=PATH"
        )
    m = matches[-1]
    word = {"TRAIN": "TEST", "Train": "Test", "train": "test"}[m.group()]
    return train.with_name(train.name[: m.start()] + word + train.name[m.end() :])


@register_source("ts", kind="series", description="a local .ts train/test file pair (sktime/aeon format)")
def load_ts(
    path: str,
    *,
    seed: int = 0,
    test: str | None = None,
    normalize: str = "none",
    **options: Any,
) -> DatasetBundle:
    """Load a classification ``.ts`` file pair: ``ts:data/Foo_TRAIN.ts`` (the test file is ``Foo_TEST.ts``).

    Args:
        path: the training file.
        seed: unused (the files fix the split); accepted for a uniform loader signature.
        test: the test file; by default ``path`` with ``TRAIN`` replaced by ``TEST`` in the file name.
        normalize: ``"none"`` (default), ``"series"`` or ``"channel"``.

    Returns:
        a series bundle: samples ``{"x": (T, F) float32, "y": int64}``.

    Example:
        >>> bundle = load_ts("data/Foo_TRAIN.ts")  # doctest: +SKIP
    """
    reject_unknown_options("ts", options, ["test", "normalize"])
    train_path = Path(path)
    test_path = Path(test) if test is not None else _test_path_for(train_path)
    return build_series_bundle(f"ts:{path}", read_ts(train_path), read_ts(test_path), normalize=normalize)


def _npz_series(data: Any, x_key: str, lengths_key: str, where: str) -> np.ndarray | list[np.ndarray]:
    x = npz_array(data, x_key, where)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: {x_key} has dtype {x.dtype}; store numbers")
    if x.ndim == 2:
        x = x[:, :, None]  # univariate (N, T) -> (N, T, 1)
    if x.ndim != 3:
        raise DataError(f"{where}: {x_key} must be (N, T, F) or (N, T) for univariate series, got {x.shape}")
    if lengths_key not in data:
        return x
    lengths = npz_array(data, lengths_key, where)
    check_same_count(len(x), len(lengths), f"{where} {x_key}/{lengths_key}")
    if lengths.max(initial=0) > x.shape[1] or lengths.min(initial=1) < 0:
        raise DataError(f"{where}: {lengths_key} must lie in 0..{x.shape[1]} (the padded length of {x_key})")
    return [s[:n] for s, n in zip(x, lengths.tolist(), strict=True)]  # padded storage -> each series' own length


@register_source("npz", kind="series", description="series arrays in an .npz (X_train/y_train/X_test/y_test or X/y)")
def load_npz(
    path: str,
    *,
    seed: int = 0,
    test_fraction: float | None = None,
    normalize: str = "none",
    **options: Any,
) -> DatasetBundle:
    """Load labelled series from a NumPy ``.npz`` file.

    The file holds either ``X_train, y_train, X_test, y_test``, or ``X, y`` split here into train and test
    (stratified, seeded, ``test_fraction`` of every class to test). ``X`` is (N, T, F), or (N, T) for
    univariate series. Series of unequal length are stored zero-padded with ``lengths_train`` /
    ``lengths_test`` (or ``lengths``) giving each true length. Labels are integer ids or strings.

    Args:
        path: the ``.npz`` file (read without pickle: plain numeric and string arrays only).
        seed: seed of the train/test split of ``X, y`` files.
        test_fraction: share of each class held out for testing when the file has only ``X, y`` (default 0.2).
        normalize: ``"none"`` (default), ``"series"`` or ``"channel"``.

    Returns:
        a series bundle: samples ``{"x": (T, F) float32, "y": int64}``.

    Example:
        >>> bundle = load_npz("data.npz", test_fraction=0.25, seed=1)  # doctest: +SKIP
    """
    reject_unknown_options("npz", options, ["test_fraction", "normalize"])
    where = f"npz:{path}"
    data = open_npz(path, where)
    files = set(data.files)
    with data:
        if {"X_train", "y_train", "X_test", "y_test"} <= files:
            if test_fraction is not None:
                raise ConfigError(f"{where} has its own X_test/y_test; drop test_fraction")
            train = (_npz_series(data, "X_train", "lengths_train", where), npz_array(data, "y_train", where))
            test = (_npz_series(data, "X_test", "lengths_test", where), npz_array(data, "y_test", where))
        elif {"X", "y"} <= files:
            x, y = _npz_series(data, "X", "lengths", where), npz_array(data, "y", where)
            check_same_count(len(x), len(y), f"{where} X/y")
            check_non_empty(len(y), f"{where} X/y")
            check_finite(x, f"{where} X")  # before splitting, so the message gives positions in the file
            train_idx, test_idx = stratified_split(y, 0.2 if test_fraction is None else test_fraction, seed)
            pick = (lambda idx: x[idx]) if isinstance(x, np.ndarray) else (lambda idx: [x[i] for i in idx])
            train, test = (pick(train_idx), y[train_idx]), (pick(test_idx), y[test_idx])
        else:
            raise DataError(f"{where} holds {sorted(files)}; expected X_train, y_train, X_test, y_test (or X, y)")
    return build_series_bundle(where, train, test, normalize=normalize)
