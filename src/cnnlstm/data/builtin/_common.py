"""What every generated dataset shares: strict options, seeded generators, and an in-memory dict dataset.

Generated sets are small, so they live in memory as tensors. :class:`FieldDataset` serves sample dicts from
them without copying: a field may index into a shared table (a digit sequence is a row of image indices,
a VQA sample a scene index) and may be trimmed to a per-sample length (variable-length sequences).
"""

from __future__ import annotations

import functools
import inspect
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["Field", "FieldDataset", "strict_options", "split_rngs", "derive_seed", "resolve_lengths", "check_int"]


def strict_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Reject unknown keyword options with an :class:`UnknownNameError` that lists the valid ones.

    Without this an unknown option would surface as a bare ``TypeError`` from Python.

    Args:
        fn: a dataset function with keyword-only options.

    Example:
        >>> @strict_options
        ... def toy(*, seed: int = 0, n_train: int = 10): return n_train
        >>> toy(n_trian=5)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UnknownNameError: ...
    """
    valid = [n for n, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]

    @functools.wraps(fn)
    def wrapper(**options: Any) -> Any:
        for name in options:
            if name not in valid:
                raise UnknownNameError(
                    f"builtin:{fn.__name__} has no option {name!r}{did_you_mean(name, valid)}; "
                    f"valid options: {', '.join(valid)}"
                )
        return fn(**options)

    return wrapper


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed derived from ``keys`` (ints, or strings hashed stably with CRC32, not ``hash()``).

    Example:
        >>> derive_seed(0, "digits", 1) == derive_seed(0, "digits", 1)
        True
    """
    ints = [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return int(np.random.SeedSequence(ints).generate_state(1, np.uint64)[0] >> np.uint64(1))


def split_rngs(seed: int, name: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the train and test split of dataset ``name``.

    The two streams are disjoint by construction (different spawn keys), so no draw is shared between splits.

    Example:
        >>> train_rng, test_rng = split_rngs(0, "digit_sequences")
    """
    return (
        np.random.default_rng(derive_seed(seed, name, "train")),
        np.random.default_rng(derive_seed(seed, name, "test")),
    )


def check_int(name: str, value: Any, low: int, high: int | None = None, *, dataset: str) -> int:
    """Return ``value`` as an int, raising :class:`ConfigError` unless ``low <= value <= high``.

    Args:
        name: the option's name, for the message.
        value: what the user gave.
        low: smallest allowed value.
        high: largest allowed value (None: no bound).
        dataset: the dataset name, for the message.

    Example:
        >>> check_int("n_train", 100, 1, dataset="digits")
        100
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"builtin:{dataset} option {name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"builtin:{dataset} option {name} must be {bound}, got {value}")
    return int(value)


def resolve_lengths(
    length: int | None, min_length: int | None, max_length: int | None, *, default: int, low: int, high: int,
    dataset: str,
) -> tuple[int, int]:
    """Turn ``length`` or ``min_length``/``max_length`` into an inclusive ``(min, max)`` range.

    Args:
        length: a fixed length; excludes the other two.
        min_length: shortest length (defaults to ``max_length`` or ``default``).
        max_length: longest length (defaults to ``min_length`` or ``default``).
        default: the fixed length when nothing is given.
        low: smallest allowed length.
        high: largest allowed length.
        dataset: the dataset name, for messages.

    Example:
        >>> resolve_lengths(None, 2, 5, default=4, low=1, high=10, dataset="captcha")
        (2, 5)
    """
    if length is not None:
        if min_length is not None or max_length is not None:
            raise ConfigError(f"builtin:{dataset}: give either length or min_length/max_length, not both")
        n = check_int("length", length, low, high, dataset=dataset)
        return n, n
    if min_length is not None:
        min_length = check_int("min_length", min_length, low, high, dataset=dataset)
    if max_length is not None:
        max_length = check_int("max_length", max_length, low, high, dataset=dataset)
    # A missing bound falls back to the default length, widened to include the bound that was given.
    lo = min_length if min_length is not None else default if max_length is None else min(default, max_length)
    hi = max_length if max_length is not None else max(default, lo)
    if lo > hi:
        raise ConfigError(f"builtin:{dataset}: min_length ({lo}) must not exceed max_length ({hi})")
    return lo, hi


@dataclass
class Field:
    """One key of a sample, stored for all samples at once.

    Args:
        data: ``(N, ...)`` per-sample values, or a lookup table when ``index`` is given. ``uint8`` data is
            served as float32 in [0, 1] (divided by 255), which keeps image sets four times smaller.
        index: ``(N, ...)`` int64 rows of ``data`` that make up sample ``i`` (``data[index[i]]``).
        lengths: ``(N,)`` true length of each sample along its first axis; the sample is cut to it.
    """

    data: Tensor
    index: Tensor | None = None
    lengths: Tensor | None = None


class FieldDataset(Dataset):
    """A map-style dataset whose item ``i`` is ``{key: field_i}`` for a dict of :class:`Field`.

    Args:
        fields: ``{sample key: Field}``; every field describes the same number of samples.
        meta: per-sample ground truth that is not part of the sample (source indices, scene geometry, ...),
            kept for inspection and tests as ``dataset.meta``.

    Shape:
        - item: a dict of tensors, ``uint8`` fields as float32 in [0, 1], ``int64`` fields unchanged.

    Example:
        >>> ds = FieldDataset({"x": Field(torch.zeros(4, 3)), "y": Field(torch.arange(4))})
        >>> sorted(ds[1]), len(ds)
        (['x', 'y'], 4)
    """

    def __init__(self, fields: dict[str, Field], meta: dict[str, Any] | None = None) -> None:
        sizes = {k: len(f.index if f.index is not None else f.data) for k, f in fields.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"fields disagree on the number of samples: {sizes}")
        self.fields = fields
        self.meta = meta or {}
        self._len = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not -self._len <= i < self._len:
            raise IndexError(f"index {i} out of range for a dataset of {self._len} samples")
        out = {}
        for key, f in self.fields.items():
            if f.index is None:
                value = f.data[i]
                if f.lengths is not None:
                    value = value[: int(f.lengths[i])]
            else:
                rows = f.index[i]
                if f.lengths is not None:
                    rows = rows[: int(f.lengths[i])]  # trim before gathering: no work on padding
                value = f.data[rows]
            if value.dtype == torch.uint8:
                value = value.float().div_(255.0)
            out[key] = value
        return out
