"""ucr: source: the sets bundled with aeon load offline, in cnnlstm's layout, with aeon's own values."""

import socket
import urllib.error

import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset, pad_collate
from cnnlstm.errors import DataError, UnknownNameError


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def gunpoint():
    return load_dataset("ucr:GunPoint")


@pytest.fixture(scope="module")
def vowels():
    return load_dataset("ucr:JapaneseVowels")


def test_gunpoint_matches_aeon_transposed(gunpoint):
    from aeon.datasets import load_gunpoint

    x_ref, y_ref = load_gunpoint(split="train")  # (50, 1, 150), labels "1"/"2"
    assert (len(gunpoint.train), len(gunpoint.test)) == (50, 150)
    assert gunpoint.kind == "series"
    assert gunpoint.info.model_kwargs == {"num_classes": 2, "in_channels": 1}
    assert gunpoint.info.class_names == ["1", "2"]
    sample = gunpoint.train[7]
    assert sample["x"].shape == (150, 1) and sample["x"].dtype == torch.float32
    assert sample["y"].dtype == torch.int64
    np.testing.assert_allclose(sample["x"].numpy(), x_ref[7].T, rtol=1e-6)
    expected = [gunpoint.info.class_names.index(label) for label in y_ref]
    assert gunpoint.info.targets == expected
    assert [int(gunpoint.train[i]["y"]) for i in range(50)] == expected


def test_japanese_vowels_keeps_every_length(vowels):
    from aeon.datasets import load_japanese_vowels

    x_ref, _ = load_japanese_vowels(split="test")  # list of (12, T_i)
    assert (len(vowels.train), len(vowels.test)) == (270, 370)
    assert vowels.info.model_kwargs == {"num_classes": 9, "in_channels": 12}
    lengths = [vowels.train[i]["x"].shape[0] for i in range(270)] + [vowels.test[i]["x"].shape[0] for i in range(370)]
    assert (min(lengths), max(lengths)) == (7, 29)
    assert [vowels.test[i]["x"].shape for i in range(370)] == [(s.shape[1], 12) for s in x_ref]
    np.testing.assert_allclose(vowels.test[5]["x"].numpy(), x_ref[5].T, rtol=1e-6)


def test_ragged_batch_is_padded_with_lengths(vowels):
    samples = [vowels.train[i] for i in range(4)]
    batch = vowels.collate_fn(samples)
    assert vowels.collate_fn is pad_collate
    true = [s["x"].shape[0] for s in samples]
    assert batch["lengths"].tolist() == true
    assert batch["x"].shape == (4, max(true), 12)
    for row, s in zip(batch["x"], samples, strict=True):
        torch.testing.assert_close(row[: s["x"].shape[0]], s["x"])
        assert not row[s["x"].shape[0] :].any()


def test_series_normalization_zscores_each_series():
    bundle = load_dataset("ucr:BasicMotions", normalize="series")
    x = bundle.test[3]["x"].double()
    torch.testing.assert_close(x.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(6, dtype=torch.float64), atol=1e-4, rtol=0)


def test_channel_normalization_uses_training_statistics_only():
    raw = load_dataset("ucr:BasicMotions")
    norm = load_dataset("ucr:BasicMotions", normalize="channel")
    train = torch.stack([raw.train[i]["x"] for i in range(len(raw.train))]).double()  # (40, 100, 6)
    mean, std = train.mean((0, 1)), train.std((0, 1), unbiased=False)
    assert norm.info.normalization["mean"] == pytest.approx(mean.tolist())
    expected = (raw.test[0]["x"].double() - mean) / std  # test data, training statistics
    torch.testing.assert_close(norm.test[0]["x"].double(), expected, atol=1e-5, rtol=1e-5)


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownNameError, match="GunPoint"):
        load_dataset("ucr:GunPiont")


def test_failed_download_says_offline_and_internet(monkeypatch):
    import aeon.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(aeon.datasets, "load_classification", offline)
    with pytest.raises(DataError, match="not found offline.*needs internet"):
        load_dataset("ucr:Adiac")


def test_unknown_option_is_rejected():
    with pytest.raises(UnknownNameError, match="normalize"):
        load_dataset("ucr:GunPoint", normalise="series")
