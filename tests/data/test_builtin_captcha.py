"""builtin:captcha: seeded, lazily rendered captcha images whose targets spell the drawn string."""

import random
import secrets

import captcha.image
import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.errors import ConfigError


class _Seeded(random.Random):  # written here again on purpose: an independent re-render of the images
    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


def _reference_render(text: str, seed: int, height: int = 32, width: int = 100) -> np.ndarray:
    gen = captcha.image.ImageCaptcha(width=width, height=height, font_sizes=(24, 28, 32))
    captcha.image.secrets = _Seeded(seed)
    try:
        return np.asarray(gen.generate_image(text).convert("L")).astype(np.float32) / 255
    finally:
        captcha.image.secrets = secrets


def test_images_are_the_captcha_of_their_label() -> None:
    bundle = load_dataset("builtin:captcha", seed=3, n_train=6, n_test=3)
    assert bundle.kind == "text_image"
    assert bundle.info.extras["charset"] == ["<blank>", *"0123456789"]
    assert bundle.info.model_kwargs == {"num_classes": 11, "in_channels": 1, "image_size": (32, 100)}
    charset = bundle.info.extras["charset"]
    for split in (bundle.train, bundle.test):
        for i in range(len(split)):
            sample = split[i]
            assert sample["x"].shape == (1, 32, 100) and sample["x"].dtype == torch.float32
            assert sample["targets"].dtype == torch.int64 and len(sample["targets"]) == 4
            text = "".join(charset[k] for k in sample["targets"].tolist())
            assert text == split.texts[i]
            ref = _reference_render(text, split.image_seed(i))
            np.testing.assert_allclose(sample["x"][0].numpy(), ref, atol=1e-6)
            other = _reference_render("x" + text[1:], split.image_seed(i))  # another label, same seed
            assert np.abs(other - ref).max() > 0.2
    assert captcha.image.secrets is secrets  # the package's randomness is restored


def test_deterministic_per_index_in_any_order_and_with_or_without_cache() -> None:
    a = load_dataset("builtin:captcha", seed=1, n_train=5, n_test=2)
    b = load_dataset("builtin:captcha", seed=1, n_train=5, n_test=2, cache=False)
    c = load_dataset("builtin:captcha", seed=2, n_train=5, n_test=2)
    first = [a.train[i]["x"] for i in range(5)]
    assert all(torch.equal(b.train[i]["x"], first[i]) for i in reversed(range(5)))
    assert all(torch.equal(a.train[i]["x"], first[i]) for i in range(5))  # served from the cache
    assert a.train.texts != c.train.texts
    assert a.train.image_seed(0) != a.test.image_seed(0)  # disjoint streams for the two splits


def test_variable_lengths_and_custom_charset_collate_with_target_lengths() -> None:
    bundle = load_dataset("builtin:captcha", n_train=16, n_test=2, charset="ABC", min_length=2, max_length=5)
    assert bundle.info.extras["charset"] == ["<blank>", "A", "B", "C"]
    lengths = [len(t) for t in bundle.train.texts]
    assert min(lengths) >= 2 and max(lengths) <= 5 and len(set(lengths)) > 1
    assert all(set(t) <= set("ABC") for t in bundle.train.texts)
    batch = bundle.collate_fn([bundle.train[i] for i in range(4)])
    assert batch["x"].shape == (4, 1, 32, 100) and "lengths" not in batch
    assert batch["target_lengths"].tolist() == lengths[:4]
    assert batch["targets"].shape == (4, max(lengths[:4]))
    for i, n in enumerate(lengths[:4]):
        assert batch["targets"][i, :n].min() >= 1 and not batch["targets"][i, n:].any()


def test_bad_charset() -> None:
    with pytest.raises(ConfigError, match="charset"):
        load_dataset("builtin:captcha", charset="AAB")
    with pytest.raises(ConfigError, match="charset"):
        load_dataset("builtin:captcha", charset="")
