"""scikit-learn's 1,797 real 8x8 handwritten digits and the one train/test partition of them.

``digits``, ``digit_sequences`` and ``moving_digits`` all draw their images from :func:`digit_partition`.
The partition depends only on ``split_seed`` and ``test_fraction`` (never on the run ``seed``), so a digit CNN
pretrained on ``builtin:digits`` has never seen an image that appears in any test sequence built with the
same ``split_seed``, whatever seeds the two runs use.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from cnnlstm.data.builtin._common import derive_seed
from cnnlstm.errors import ConfigError

__all__ = ["NUM_DIGIT_IMAGES", "digit_images", "digit_partition", "check_test_fraction"]

NUM_DIGIT_IMAGES = 1797


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits  # imported here: sklearn costs ~1 s and only these sets need it

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8), 0..16 -> [0, 1]
    labels = torch.from_numpy(bunch.target).long()  # (1797,)
    return images, labels


def digit_images() -> tuple[Tensor, Tensor]:
    """All 1,797 digit images and their labels (loaded once, shipped with scikit-learn, no download).

    Shape:
        - images: (1797, 1, 8, 8) float32 in [0, 1].
        - labels: (1797,) int64 in 0..9.

    Example:
        >>> images, labels = digit_images()
        >>> images.shape
        torch.Size([1797, 1, 8, 8])
    """
    images, labels = _load()
    return images, labels


def check_test_fraction(value: float, dataset: str) -> float:
    """Validate ``test_fraction`` (a float strictly between 0 and 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
        raise ConfigError(f"builtin:{dataset} option test_fraction must be a float in (0, 1), got {value!r}")
    return float(value)


@functools.lru_cache(maxsize=8)
def _partition(split_seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    _, labels = _load()
    labels_np = labels.numpy()
    rng = np.random.default_rng(derive_seed(split_seed, "digit_partition"))
    test = []
    for digit in range(10):  # stratified: every digit keeps the same share in both parts
        idx = np.flatnonzero(labels_np == digit)
        test.append(rng.permutation(idx)[: round(len(idx) * test_fraction)])
    is_test = np.zeros(len(labels_np), dtype=bool)
    is_test[np.concatenate(test)] = True
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    train_idx.flags.writeable = test_idx.flags.writeable = False  # cached: callers must not modify
    return train_idx, test_idx


def digit_partition(split_seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Sorted source-image indices of the train and test digits (stratified by digit, seeded).

    Args:
        split_seed: seed of the partition; keep it equal across digit datasets to share the partition.
        test_fraction: share of each digit's images held out for test.

    Returns:
        ``(train_idx, test_idx)``: disjoint read-only int64 arrays that together cover all 1,797 images.

    Example:
        >>> train_idx, test_idx = digit_partition()
        >>> len(train_idx) + len(test_idx)
        1797
    """
    return _partition(int(split_seed), float(test_fraction))
