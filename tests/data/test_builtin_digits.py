"""builtin:digits: real sklearn digits, one seeded stratified partition shared by every digit dataset."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from cnnlstm.data import load_dataset
from cnnlstm.data.builtin._digit_source import digit_partition
from cnnlstm.errors import ConfigError, UnknownNameError

SK = load_digits()


def test_samples_are_the_sklearn_images_and_labels() -> None:
    bundle = load_dataset("builtin:digits")
    assert bundle.kind == "images"
    assert bundle.info.model_kwargs == {"num_classes": 10, "in_channels": 1, "image_size": (8, 8)}
    for split in (bundle.train, bundle.test):
        src = split.meta["source_index"].numpy()
        for i in (0, 7, len(split) - 1):
            sample = split[i]
            assert sample["x"].shape == (1, 8, 8) and sample["x"].dtype == torch.float32
            assert sample["y"].dtype == torch.int64
            np.testing.assert_allclose(sample["x"][0].numpy(), SK.images[src[i]] / 16.0, rtol=0, atol=1e-7)
            assert int(sample["y"]) == SK.target[src[i]]
    np.testing.assert_array_equal(bundle.info.targets.numpy(), SK.target[bundle.train.meta["source_index"]])
    batch = bundle.collate_fn([bundle.train[i] for i in range(3)])
    assert batch["x"].shape == (3, 1, 8, 8) and "lengths" not in batch


def test_partition_is_disjoint_complete_stratified_and_independent_of_the_run_seed() -> None:
    a = load_dataset("builtin:digits", seed=0)
    b = load_dataset("builtin:digits", seed=123)
    train, test = set(a.train.meta["source_index"].tolist()), set(a.test.meta["source_index"].tolist())
    assert not train & test and len(train | test) == 1797
    assert train == set(b.train.meta["source_index"].tolist())  # the run seed never moves images across
    for digit in range(10):
        share = np.isin(np.flatnonzero(SK.target == digit), list(test)).mean()
        assert abs(share - 0.25) < 0.01
    other_train, _ = digit_partition(split_seed=1)
    assert set(other_train.tolist()) != train  # split_seed does choose the partition


def test_subsets_are_seeded_and_balanced() -> None:
    a = load_dataset("builtin:digits", seed=1, n_train=50, n_test=20)
    b = load_dataset("builtin:digits", seed=1, n_train=50, n_test=20)
    c = load_dataset("builtin:digits", seed=2, n_train=50, n_test=20)
    assert len(a.train) == 50 and len(a.test) == 20
    assert torch.equal(a.train.meta["source_index"], b.train.meta["source_index"])
    assert not torch.equal(a.train.meta["source_index"], c.train.meta["source_index"])
    assert torch.bincount(a.info.targets, minlength=10).tolist() == [5] * 10
    full_test = set(load_dataset("builtin:digits").test.meta["source_index"].tolist())
    assert set(a.test.meta["source_index"].tolist()) <= full_test


def test_bad_options_name_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="n_train"):
        load_dataset("builtin:digits", n_trian=5)
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("builtin:digits", test_fraction=1.5)
