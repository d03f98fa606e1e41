"""builtin:digit_sequences: the label needs the order of the digits; no test image leaks into training."""

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from cnnlstm.data import load_dataset
from cnnlstm.errors import ConfigError

SK = load_digits()


def test_deterministic_from_the_seed() -> None:
    a = load_dataset("builtin:digit_sequences", seed=5, n_train=30, n_test=10)
    b = load_dataset("builtin:digit_sequences", seed=5, n_train=30, n_test=10)
    c = load_dataset("builtin:digit_sequences", seed=6, n_train=30, n_test=10)
    for i in range(30):
        assert torch.equal(a.train[i]["x"], b.train[i]["x"]) and int(a.train[i]["y"]) == int(b.train[i]["y"])
    assert not torch.equal(a.train.meta["source_index"], c.train.meta["source_index"])
    assert not torch.equal(a.train.meta["values"][:10], a.test.meta["values"])  # disjoint streams


def test_frames_are_real_digits_and_the_label_is_the_position_of_the_largest() -> None:
    bundle = load_dataset("builtin:digit_sequences", n_train=200, n_test=50)
    assert bundle.kind == "frames" and bundle.info.model_kwargs["num_classes"] == 4
    for split in (bundle.train, bundle.test):
        for i in range(len(split)):
            sample = split[i]
            src = split.meta["source_index"][i].numpy()
            assert sample["x"].shape == (4, 1, 8, 8) and sample["x"].dtype == torch.float32
            np.testing.assert_allclose(sample["x"][:, 0].numpy(), SK.images[src] / 16.0, atol=1e-7)
            digits = SK.target[src]  # the true digit values, from sklearn's own labels
            assert len(set(digits.tolist())) == 4
            assert int(sample["y"]) == int(np.argmax(digits))  # ordered values determine the label exactly
    assert torch.bincount(bundle.info.targets).tolist() == [50] * 4


def test_no_test_digit_image_appears_in_training_sequences() -> None:
    seqs = load_dataset("builtin:digit_sequences", seed=3, n_train=3000, n_test=100)
    pretrain = load_dataset("builtin:digits", seed=9)  # a different run seed on purpose
    used_in_train = set(seqs.train.meta["source_index"].flatten().tolist())
    used_in_test = set(seqs.test.meta["source_index"].flatten().tolist())
    assert not used_in_train & set(pretrain.test.meta["source_index"].tolist())
    assert not used_in_test & set(pretrain.train.meta["source_index"].tolist())


def _vote_accuracy(train_keys: list, train_y: list, test_keys: list, test_y: list) -> float:
    """Accuracy on test of the majority label per key seen in train (Bayes-optimal for discrete keys)."""
    votes: dict = defaultdict(Counter)
    for key, y in zip(train_keys, train_y, strict=True):
        votes[key][y] += 1
    hits = [bool(votes[k]) and votes[k].most_common(1)[0][0] == y for k, y in zip(test_keys, test_y, strict=True)]
    return float(np.mean(hits))


def test_a_perfect_frame_classifier_with_mean_pooling_is_at_chance() -> None:
    # Mean-pooling one-hot true digit values gives the digit histogram: the most a permutation-invariant
    # model can know. The majority label per histogram (fitted on train) must stay near chance on test.
    bundle = load_dataset("builtin:digit_sequences", seed=0, n_train=4000, n_test=2000)
    train_v, test_v = bundle.train.meta["values"].tolist(), bundle.test.meta["values"].tolist()
    train_y, test_y = bundle.info.targets.tolist(), bundle.test.fields["y"].data.tolist()
    bag_acc = _vote_accuracy([tuple(sorted(v)) for v in train_v], train_y, [tuple(sorted(v)) for v in test_v], test_y)
    assert bag_acc < 0.25 + 0.04
    # The same estimator finds order information when it has it: the first value alone beats chance clearly.
    first_acc = _vote_accuracy([v[0] for v in train_v], train_y, [v[0] for v in test_v], test_y)
    assert first_acc > 0.35


def test_variable_lengths_are_padded_by_collate() -> None:
    bundle = load_dataset("builtin:digit_sequences", n_train=40, n_test=8, min_length=2, max_length=6)
    assert bundle.info.model_kwargs["num_classes"] == 6
    lengths = bundle.train.meta["lengths"]
    assert lengths.min() >= 2 and lengths.max() <= 6 and len(set(lengths.tolist())) > 1
    batch = bundle.collate_fn([bundle.train[i] for i in range(8)])
    assert batch["x"].shape == (8, int(lengths[:8].max()), 1, 8, 8)
    assert batch["lengths"].tolist() == lengths[:8].tolist()
    for i in range(8):
        n = int(lengths[i])
        assert int(batch["y"][i]) < n
        assert torch.equal(batch["x"][i, :n], bundle.train[i]["x"]) and not batch["x"][i, n:].any()


def test_bad_lengths_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="length"):
        load_dataset("builtin:digit_sequences", length=11)
    with pytest.raises(ConfigError, match="either length"):
        load_dataset("builtin:digit_sequences", length=4, max_length=5)
