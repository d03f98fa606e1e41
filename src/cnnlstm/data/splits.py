"""Seeded, stratified splits: validation carved from training, and test splits for sources without one.

One implementation serves both uses, so a validation split and an ``npz``/``frames`` test split follow the
same rule: each class gives ``round(fraction * n_class)`` of its samples (half rounds up) to the second
part, chosen by a generator seeded with ``seed``, and always keeps at least one for the first part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from cnnlstm.errors import ConfigError, DataError

__all__ = ["stratified_split", "grouped_split", "split_train_val"]


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split fraction must be between 0 and 1 (exclusive), got {fraction}")


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices in two, keeping each class's share; ``fraction`` goes to the second part.

    Args:
        labels: class of every sample (N,), any hashable values (ids or names).
        fraction: share of each class that goes to the second part, in (0, 1).
        seed: seed of the generator that picks the samples; the same seed gives the same split.

    Returns:
        ``(idx_a, idx_b)``: sorted int64 index arrays, disjoint, covering ``range(N)``.

    Raises:
        ConfigError: ``fraction`` is not in (0, 1).
        DataError: a class is too small to give any samples without losing all of them, or the second part
            would be empty.

    Example:
        >>> a, b = stratified_split([0, 0, 0, 0, 1, 1, 1, 1], 0.25, seed=0)
        >>> len(a), len(b)
        (6, 2)
    """
    _check_fraction(fraction)
    labels = np.asarray(labels)
    if len(labels) < 2:  # nothing to split: say so, not which fraction would have worked
        raise DataError(f"too few samples: {len(labels)} cannot be split in two (training and held-out parts); "
                        "add samples")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = np.floor(fraction * counts + 0.5).astype(np.int64)  # round half up, per class
    too_small = take >= counts
    if too_small.any():
        names = ", ".join(f"{c!r} ({n} sample{'s' * (n != 1)})"
                          for c, n in zip(classes[too_small].tolist(), counts[too_small].tolist(), strict=True))
        limit = 1.0 - 0.5 / counts[too_small].min()
        raise DataError(
            f"too few samples: a split fraction of {fraction} would leave no training samples for class {names}; "
            f"lower the fraction below {limit:.3g} or add samples"
        )
    if take.sum() == 0:
        need = 0.5 / counts.max()
        raise DataError(
            f"a split fraction of {fraction} selects no samples from {len(labels)} (each class gives "
            f"round(fraction * its size)); raise the fraction to at least {math.ceil(need * 1000) / 1000:.3g}"
        )
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(inverse == k))[:n] for k, n in enumerate(take)]
    mask = np.zeros(len(labels), dtype=bool)
    mask[np.concatenate(picked)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def grouped_split(groups: Sequence | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices in two so that no group has samples on both sides; ``fraction`` of the groups go
    to the second part.

    For samples that are not independent: several questions about one scene, several windows of one stream.
    Carving them one by one would let the second part (validation) score what training has already seen.

    Args:
        groups: group of every sample (N,), any hashable values.
        fraction: share of the groups that goes to the second part, in (0, 1); ``round(fraction * G)``, at least
            one group and at most ``G - 1``.
        seed: seed of the generator that picks the groups.

    Returns:
        ``(idx_a, idx_b)``: sorted int64 index arrays, disjoint, covering ``range(N)``.

    Raises:
        ConfigError: ``fraction`` is not in (0, 1).
        DataError: fewer than two groups.

    Example:
        >>> a, b = grouped_split([0, 0, 1, 1, 2, 2, 3, 3], 0.25, seed=0)
        >>> len(a), len(b)
        (6, 2)
    """
    _check_fraction(fraction)
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(inverse.max()) + 1 if len(inverse) else 0
    if n_groups < 2:
        raise DataError(f"a grouped split needs at least 2 groups, got {n_groups}; add samples from more groups")
    take = min(max(int(np.floor(fraction * n_groups + 0.5)), 1), n_groups - 1)
    chosen = np.random.default_rng(seed).permutation(n_groups)[:take]
    mask = np.isin(inverse, chosen)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def split_train_val(
    dataset: Dataset,
    fraction: float,
    seed: int,
    stratify: Sequence[int] | None = None,
    groups: Sequence | None = None,
) -> tuple[Subset, Subset]:
    """Carve a validation split out of a training split (stratified and seeded, or by group).

    When the dataset has a ``without_augmentation()`` method (e.g. frame clips sampled at random offsets),
    the validation subset is taken from the dataset it returns, so validation scores are not noisy.

    Args:
        dataset: the training split (a map-style dataset).
        fraction: share of every class that goes to validation, in (0, 1).
        seed: seed of the split; the same seed gives the same split.
        stratify: class of every sample (``bundle.info.targets``); None splits without stratifying.
        groups: group of every sample (``bundle.info.groups``, e.g. the scene a question is about): whole
            groups go to validation (:func:`grouped_split`) and ``stratify`` is not used.

    Returns:
        ``(train_subset, val_subset)``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(10))
        >>> train, val = split_train_val(ds, 0.2, seed=0, stratify=[0] * 5 + [1] * 5)
        >>> len(train), len(val)
        (8, 2)
    """
    n = len(dataset)  # type: ignore[arg-type]
    labels = np.zeros(n, dtype=np.int64) if stratify is None else np.asarray(stratify)
    if len(labels) != n:
        raise DataError(f"stratify has {len(labels)} labels but the dataset has {n} samples; pass info.targets")
    if groups is not None:
        if len(groups) != n:
            raise DataError(f"groups has {len(groups)} entries but the dataset has {n} samples")
        train_idx, val_idx = grouped_split(groups, fraction, seed)
    else:
        train_idx, val_idx = stratified_split(labels, fraction, seed)
    eval_view = getattr(dataset, "without_augmentation", None)
    val_source = eval_view() if callable(eval_view) else dataset
    return Subset(dataset, train_idx.tolist()), Subset(val_source, val_idx.tolist())
