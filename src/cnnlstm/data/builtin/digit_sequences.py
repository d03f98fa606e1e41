"""``builtin:digit_sequences``: sequences of real digit images whose label only the order of the digits reveals."""

from __future__ import annotations

import numpy as np
import torch

from cnnlstm.data._registry import DatasetBundle, register_dataset
from cnnlstm.data.builtin._common import (
    Field,
    FieldDataset,
    check_int,
    resolve_lengths,
    split_rngs,
    strict_options,
)
from cnnlstm.data.builtin._digit_source import check_test_fraction, digit_images, digit_partition
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo

__all__ = ["digit_sequences"]


def _generate(
    n: int, min_len: int, max_len: int, pool: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Draw ``n`` sequences of distinct digit values with the largest at a balanced, uniform position."""
    lengths = rng.integers(min_len, max_len + 1, size=n)
    # Exactly balanced classes within each length: cycle through the positions, then shuffle.
    y = np.empty(n, dtype=np.int64)
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        y[rows] = rng.permutation(np.arange(len(rows)) % length)
    values = np.full((n, max_len), -1, dtype=np.int64)
    for i in range(n):
        order = rng.permutation(10)[: lengths[i]]  # distinct digits in a uniformly random order
        top = int(np.argmax(order))
        order[[top, y[i]]] = order[[y[i], top]]  # move the largest to position y; the rest stay uniform
        values[i, : lengths[i]] = order
    # Each digit value becomes a random real image of that digit from this split's part of the partition.
    source = np.zeros((n, max_len), dtype=np.int64)
    for digit in range(10):
        slots = values == digit
        candidates = pool[labels[pool] == digit]
        source[slots] = candidates[rng.integers(len(candidates), size=int(slots.sum()))]
    return {
        "values": torch.from_numpy(values),  # (n, max_len), -1 after the end
        "source_index": torch.from_numpy(source),  # (n, max_len), 0 after the end
        "lengths": torch.from_numpy(lengths).long(),  # (n,)
        "y": torch.from_numpy(y),  # (n,)
    }


@register_dataset(
    "digit_sequences", kind="frames",
    description="sequences of real digit images labelled by the position of the largest digit (needs order)",
)
@strict_options
def digit_sequences(
    *, seed: int = 0, n_train: int = 2000, n_test: int = 500, length: int | None = None,
    min_length: int | None = None, max_length: int | None = None, split_seed: int = 0, test_fraction: float = 0.25,
) -> DatasetBundle:
    """Sequences of T distinct real digits; the label is the position (0..T-1) of the largest digit.

    Rule and why a bag of frames cannot solve it: each sequence holds T *distinct* digit values, and its
    label is where the largest one sits. Given the set of digits (and their images), every position of the
    largest is equally likely and the other digits are in uniformly random order, so the label is
    independent of any permutation-invariant function of the frames: mean or max pooling of per-frame
    features, even of a perfect digit classifier, is at chance (1/T). The ordered digit values determine the
    label exactly (``argmax``), so a model that reads the frames in order (CNN -> LSTM) can reach 100 %.

    Images come from the partition of ``builtin:digits`` (same ``split_seed``/``test_fraction``): no test
    digit image appears in a training sequence, and a CNN pretrained on ``builtin:digits`` never saw a test
    image. ``dataset.meta`` holds ``values`` (digit values, -1 after the end), ``source_index`` (indices into
    ``sklearn.datasets.load_digits()``) and ``lengths``.

    Args:
        seed: seed of the sequences (train and test use disjoint streams).
        n_train: number of training sequences.
        n_test: number of test sequences.
        length: frames per sequence (default 4; 2..10, as digits are distinct). Excludes min/max_length.
        min_length: shortest sequence, for variable-length data (batches then get ``lengths``).
        max_length: longest sequence; the number of classes.
        split_seed: seed of the image partition shared with ``builtin:digits``.
        test_fraction: share of each digit's images reserved for test sequences.

    Shape:
        - sample ``x``: (T, 1, 8, 8) float32 in [0, 1]; ``y``: int64 scalar in 0..T-1.

    Example:
        >>> bundle = digit_sequences(n_train=8, n_test=4)
        >>> bundle.train[0]["x"].shape, bundle.info.model_kwargs["num_classes"]
        (torch.Size([4, 1, 8, 8]), 4)
    """
    name = "digit_sequences"
    n_train = check_int("n_train", n_train, 1, dataset=name)
    n_test = check_int("n_test", n_test, 1, dataset=name)
    min_len, max_len = resolve_lengths(length, min_length, max_length, default=4, low=2, high=10, dataset=name)
    test_fraction = check_test_fraction(test_fraction, name)
    images, labels = digit_images()
    train_pool, test_pool = digit_partition(split_seed, test_fraction)
    train_rng, test_rng = split_rngs(seed, name)

    def make(n: int, pool: np.ndarray, rng: np.random.Generator) -> FieldDataset:
        g = _generate(n, min_len, max_len, pool, labels.numpy(), rng)
        ragged = g["lengths"] if min_len != max_len else None
        fields = {"x": Field(images, index=g["source_index"], lengths=ragged), "y": Field(g["y"])}
        return FieldDataset(fields, meta={k: g[k] for k in ("values", "source_index", "lengths")})

    train = make(n_train, train_pool, train_rng)
    return DatasetBundle(
        name=f"builtin:{name}",
        kind="frames",
        train=train,
        test=make(n_test, test_pool, test_rng),
        info=DataInfo(
            model_kwargs={"num_classes": max_len, "in_channels": 1, "image_size": (8, 8)},
            class_names=[f"largest_at_{p}" for p in range(max_len)],
            targets=train.fields["y"].data,
            extras={"rule": "label = position (0-based) of the largest of T distinct digits"},
        ),
        collate_fn=pad_collate,
    )
