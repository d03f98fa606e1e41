"""Stratified, seeded splits: per-class counts follow round(fraction * n); every class keeps a training sample."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset, TensorDataset

from cnnlstm.data import split_train_val, stratified_split
from cnnlstm.errors import ConfigError, DataError


def test_counts_per_class_and_partition():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 3)
    a, b = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[b]).tolist() == [2, 1, 1]  # round(2.0), round(1.0), round(0.6)
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(18))
    assert list(a) == sorted(a) and list(b) == sorted(b)


def test_seeded_and_deterministic():
    labels = ["x"] * 20 + ["y"] * 20
    first = stratified_split(labels, 0.25, seed=7)
    again = stratified_split(labels, 0.25, seed=7)
    other = stratified_split(labels, 0.25, seed=8)
    assert all(np.array_equal(p, q) for p, q in zip(first, again, strict=True))
    assert not np.array_equal(first[1], other[1])


def test_too_small_class_says_to_lower_the_fraction():
    with pytest.raises(DataError, match=r"class 1 \(1 sample\); lower the fraction below 0.5"):
        stratified_split([0, 0, 0, 0, 1], 0.5, seed=0)
    a, b = stratified_split([0, 0, 0, 0, 1], 0.4, seed=0)  # the singleton stays in training
    assert 4 in a and len(b) == 2


def test_empty_second_part_and_bad_fraction():
    with pytest.raises(DataError, match="selects no samples"):
        stratified_split([0, 0, 1, 1], 0.1, seed=0)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        stratified_split([0, 1], 1.0, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**16),
)
def test_property_either_error_or_exact_stratified_partition(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    try:
        a, b = stratified_split(labels, fraction, seed)
    except DataError:
        expected = [int(np.floor(fraction * n + 0.5)) for n in counts]
        assert any(e >= n for e, n in zip(expected, counts, strict=True)) or sum(expected) == 0
        return
    assert np.intersect1d(a, b).size == 0 and len(a) + len(b) == len(labels)
    assert np.bincount(labels[b], minlength=len(counts)).tolist() == [int(np.floor(fraction * n + 0.5)) for n in counts]
    assert (np.bincount(labels[a], minlength=len(counts)) >= 1).all()


class Augmented(Dataset):
    """A dataset whose samples change under augmentation; the validation view turns it off."""

    def __init__(self, augment=True):
        self.augment = augment

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i + (100 if self.augment else 0)

    def without_augmentation(self):
        return Augmented(augment=False)


def test_split_train_val_subsets_and_eval_view():
    train, val = split_train_val(Augmented(), 0.2, seed=0, stratify=[0] * 5 + [1] * 5)
    assert len(train) == 8 and len(val) == 2
    assert all(x >= 100 for x in train) and all(x < 100 for x in val)
    assert {v // 5 for v in val} == {0, 1}  # one per class


def test_split_train_val_unstratified_and_checks():
    ds = TensorDataset(torch.arange(10))
    train, val = split_train_val(ds, 0.3, seed=1)
    assert len(val) == 3 and set(train.indices).isdisjoint(val.indices)
    with pytest.raises(DataError, match="stratify has 3 labels but the dataset has 10"):
        split_train_val(ds, 0.3, seed=1, stratify=[0, 1, 0])
