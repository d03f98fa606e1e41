"""``builtin:digits``: scikit-learn's real 8x8 handwritten digits as single images, for pretraining a digit CNN."""

from __future__ import annotations

import numpy as np
import torch

from cnnlstm.data._registry import DatasetBundle, register_dataset
from cnnlstm.data.builtin._common import Field, FieldDataset, check_int, split_rngs, strict_options
from cnnlstm.data.builtin._digit_source import check_test_fraction, digit_images, digit_partition
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo

__all__ = ["digits"]

DIGIT_NAMES = [str(d) for d in range(10)]


def _subset(idx: np.ndarray, labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """A seeded, stratified subset of ``n`` indices (all of them when ``n`` is None)."""
    if n is None or n >= len(idx):
        return np.array(idx)  # a copy: the cached partition is read-only
    # Round-robin over shuffled per-digit queues keeps the classes as balanced as n allows.
    queues = [rng.permutation(idx[labels[idx] == d]) for d in range(10)]
    order = np.argsort(np.concatenate([np.arange(len(q)) for q in queues]), kind="stable")
    return np.sort(np.concatenate(queues)[order][:n])


@register_dataset("digits", kind="images", description="scikit-learn's real 8x8 handwritten digits (1,797 images)")
@strict_options
def digits(
    *, seed: int = 0, n_train: int | None = None, n_test: int | None = None, split_seed: int = 0,
    test_fraction: float = 0.25,
) -> DatasetBundle:
    """Real handwritten digits, one image per sample, split by source image.

    The train/test partition comes from :func:`~cnnlstm.data.builtin._digit_source.digit_partition` and
    depends only on ``split_seed`` and ``test_fraction``: ``builtin:digit_sequences`` and
    ``builtin:moving_digits`` use the same one, so a CNN pretrained here never saw their test images.
    ``dataset.meta["source_index"]`` gives each sample's index in ``sklearn.datasets.load_digits()``.

    Args:
        seed: picks the subsets when ``n_train``/``n_test`` ask for fewer images than the partition holds.
        n_train: number of training images (default: all ~1,347 of the partition).
        n_test: number of test images (default: all ~450).
        split_seed: seed of the image partition shared by the digit datasets.
        test_fraction: share of each digit's images held out for test.

    Shape:
        - sample ``x``: (1, 8, 8) float32 in [0, 1]; ``y``: int64 scalar digit 0..9.

    Example:
        >>> bundle = digits()
        >>> bundle.train[0]["x"].shape
        torch.Size([1, 8, 8])
    """
    test_fraction = check_test_fraction(test_fraction, "digits")
    n_train = None if n_train is None else check_int("n_train", n_train, 1, dataset="digits")
    n_test = None if n_test is None else check_int("n_test", n_test, 1, dataset="digits")
    images, labels = digit_images()
    train_rng, test_rng = split_rngs(seed, "digits")
    train_idx, test_idx = digit_partition(split_seed, test_fraction)
    train_idx = _subset(train_idx, labels.numpy(), n_train, train_rng)
    test_idx = _subset(test_idx, labels.numpy(), n_test, test_rng)

    def make(idx: np.ndarray) -> FieldDataset:
        index = torch.from_numpy(idx).long()
        return FieldDataset({"x": Field(images, index=index), "y": Field(labels, index=index)},
                            meta={"source_index": index})

    return DatasetBundle(
        name="builtin:digits",
        kind="images",
        train=make(train_idx),
        test=make(test_idx),
        info=DataInfo(
            model_kwargs={"num_classes": 10, "in_channels": 1, "image_size": (8, 8)},
            class_names=DIGIT_NAMES,
            targets=labels[torch.from_numpy(train_idx).long()],
        ),
        collate_fn=pad_collate,
    )
