"""``builtin:captcha``: text images drawn by the ``captcha`` package, labelled with their string, for CRNN + CTC."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnlstm.data._registry import DatasetBundle, register_dataset, register_writer
from cnnlstm.data.builtin._common import check_int, derive_seed, resolve_lengths, split_rngs, strict_options
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.text_lines import write_text_layout
from cnnlstm.errors import ConfigError

__all__ = ["captcha", "CaptchaDataset", "seeded_captcha_randomness"]

BLANK = "<blank>"
_PATCH_LOCK = threading.Lock()


class _SeededSecrets(random.Random):
    """The part of the ``secrets`` API the captcha package calls, drawn from a seeded generator."""

    def randbelow(self, n: int) -> int:
        return self.randrange(n)

    def randbits(self, k: int) -> int:
        return self.getrandbits(k)


@contextlib.contextmanager
def seeded_captcha_randomness(seed: int) -> Iterator[None]:
    """Make the ``captcha`` package draw from ``random.Random(seed)`` inside the block.

    captcha >= 0.5 draws every random choice from the ``secrets`` module, which cannot be seeded; older
    releases use ``random``. Both module globals of ``captcha.image`` are swapped for one seeded generator
    (under a lock, so threads never see each other's generator) and restored on exit.

    Args:
        seed: seed of the generator.

    Example:
        >>> from captcha.image import ImageCaptcha
        >>> with seeded_captcha_randomness(0):
        ...     image = ImageCaptcha(width=100, height=32).generate_image("42")
    """
    import captcha.image as module

    rng = _SeededSecrets(seed)
    names = [n for n in ("secrets", "random") if hasattr(module, n)]
    with _PATCH_LOCK:
        saved = {n: getattr(module, n) for n in names}
        try:
            for n in names:
                setattr(module, n, rng)
            yield
        finally:
            for n, original in saved.items():
                setattr(module, n, original)


class CaptchaDataset(Dataset):
    """Captcha images rendered on demand, each from its own seed, and cached after the first render.

    Rendering costs ~1.5 ms per image, so images are drawn when first asked for instead of up front. Item
    ``i`` is always the same image (its seed depends only on the dataset seed, the split and ``i``). The
    cache lives in shared memory, so images rendered in DataLoader worker processes are kept for later epochs.

    Args:
        texts: the string of each sample.
        charset: the characters; character ``charset[k]`` has target id ``k + 1`` (0 is the CTC blank).
        seed: dataset seed.
        split: ``"train"`` or ``"test"``; part of every image's seed.
        height: image height.
        width: image width.
        cache: keep rendered images (``N * H * W`` bytes).

    Shape:
        - item ``x``: (1, H, W) float32 grayscale in [0, 1]; ``targets``: (L,) int64 in 1..len(charset).

    Example:
        >>> ds = CaptchaDataset(["12", "345"], "0123456789", seed=0, split="train")
        >>> ds[1]["x"].shape, ds[1]["targets"].tolist()
        (torch.Size([1, 32, 100]), [4, 5, 6])
    """

    def __init__(
        self, texts: list[str], charset: str, *, seed: int, split: str, height: int = 32, width: int = 100,
        cache: bool = True,
    ) -> None:
        self.texts = list(texts)
        self.charset = charset
        self.seed, self.split, self.height, self.width = seed, split, height, width
        lookup = {c: k + 1 for k, c in enumerate(charset)}
        self._targets = [torch.tensor([lookup[c] for c in t], dtype=torch.long) for t in self.texts]
        self._generator = None  # built lazily: it holds fonts, and each worker process makes its own
        self._cache = self._filled = None
        if cache:
            self._cache = torch.zeros(len(texts), height, width, dtype=torch.uint8).share_memory_()
            self._filled = torch.zeros(len(texts), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.texts)

    def image_seed(self, i: int) -> int:
        """The seed image ``i`` is rendered from."""
        return derive_seed(self.seed, "captcha", self.split, i)

    def render(self, i: int) -> Tensor:
        """Render image ``i`` (no cache).

        Shape:
            - returns (H, W) uint8 grayscale.
        """
        if self._generator is None:
            from captcha.image import ImageCaptcha

            # The package's default font sizes suit its 60 px default height; scale them to ours.
            sizes = tuple(round(self.height * f) for f in (0.75, 0.875, 1.0))
            self._generator = ImageCaptcha(width=self.width, height=self.height, font_sizes=sizes)
        with seeded_captcha_randomness(self.image_seed(i)):
            image = self._generator.generate_image(self.texts[i])
        return torch.from_numpy(np.asarray(image.convert("L")).copy())  # (H, W) uint8

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} samples")
        i = i % len(self)
        if self._cache is None:
            pixels = self.render(i)
        else:
            if not self._filled[i]:
                self._cache[i] = self.render(i)
                self._filled[i] = True
            pixels = self._cache[i]
        x = pixels.float().div_(255.0).unsqueeze(0)  # (1, H, W)
        return {"x": x, "targets": self._targets[i]}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_generator"] = None  # fonts do not pickle; workers rebuild the generator
        return state


@register_dataset("captcha", kind="text_image", description="captcha-package text images labelled with their string")
@strict_options
def captcha(
    *, seed: int = 0, n_train: int = 10000, n_test: int = 2000, charset: str = "0123456789",
    length: int | None = None, min_length: int | None = None, max_length: int | None = None, height: int = 32,
    width: int = 100, cache: bool = True,
) -> DatasetBundle:
    """Distorted, noisy text images from ``captcha.image.ImageCaptcha`` (ships its font; offline).

    Strings are drawn uniformly from ``charset`` with a length in ``[min_length, max_length]``; each image is
    rendered from a seed of its own (dataset seed, split, index), lazily, at ~600 images/s on one core, and
    cached. Train and test draw strings and images from disjoint seed streams (a string may occur in both,
    drawn differently). ``dataset.texts`` holds the strings.

    Args:
        seed: seed of strings and renderings.
        n_train: number of training images.
        n_test: number of test images.
        charset: the characters used (unique, no spaces); ``info.extras["charset"]`` is ``["<blank>", *charset]``.
        length: characters per image (default 4). Excludes min/max_length.
        min_length: shortest string, for variable-length labels (batches get ``target_lengths``).
        max_length: longest string.
        height: image height in pixels.
        width: image width in pixels.
        cache: keep rendered images in (shared) memory after the first epoch.

    Shape:
        - sample ``x``: (1, H, W) float32 grayscale in [0, 1]; ``targets``: (L,) int64 in 1..len(charset).

    Example:
        >>> bundle = captcha(n_train=4, n_test=2)
        >>> sample = bundle.train[0]
        >>> sample["x"].shape, len(sample["targets"])
        (torch.Size([1, 32, 100]), 4)
    """
    name = "captcha"
    n_train = check_int("n_train", n_train, 1, dataset=name)
    n_test = check_int("n_test", n_test, 1, dataset=name)
    height = check_int("height", height, 16, dataset=name)
    width = check_int("width", width, 16, dataset=name)
    if not isinstance(charset, str) or not charset or len(set(charset)) != len(charset) or any(
        c.isspace() for c in charset
    ):
        raise ConfigError(f"builtin:{name} option charset must be a non-empty string of unique, non-space "
                          f"characters, got {charset!r}")
    min_len, max_len = resolve_lengths(length, min_length, max_length, default=4, low=1, high=32, dataset=name)
    chars = np.array(list(charset))

    def make(n: int, rng: np.random.Generator, split: str) -> CaptchaDataset:
        lengths = rng.integers(min_len, max_len + 1, size=n)
        texts = ["".join(chars[rng.integers(len(chars), size=k)]) for k in lengths]
        return CaptchaDataset(texts, charset, seed=seed, split=split, height=height, width=width, cache=cache)

    train_rng, test_rng = split_rngs(seed, name)
    return DatasetBundle(
        name=f"builtin:{name}",
        kind="text_image",
        train=make(n_train, train_rng, "train"),
        test=make(n_test, test_rng, "test"),
        info=DataInfo(
            model_kwargs={"num_classes": len(charset) + 1, "in_channels": 1, "image_size": (height, width)},
            extras={"charset": [BLANK, *charset], "max_target_length": max_len},
        ),
        collate_fn=pad_collate,
    )


def _write_text_folder(bundle: DatasetBundle, folder: Path) -> None:
    # `cnnlstm datasets write builtin:captcha DIR`: text:DIR then reads the same images and strings in order.
    write_text_layout(bundle, folder)


register_writer("captcha")(_write_text_folder)
