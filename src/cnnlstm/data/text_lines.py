"""``text:DIR``: text-line images of any width with their text, for CRNN + CTC.

Layout: ``DIR/train.csv`` and optional ``DIR/test.csv``, header ``image,text`` (extra columns ignored), image
paths relative to ``DIR``. Each line keeps its aspect ratio: it is resized to the model's height (32 by
default) and its width follows. Batches are right-padded to their widest line and carry each line's true width
in ``lengths``, from which CRNN masks the padding and CTC takes its input lengths.

The character set comes from the training split only. A test character never seen in training cannot be
predicted; it stays in the test text (so the line counts as wrong and its characters as errors) and is
reported once, with a count, as a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnlstm.data._options import reject_unknown_options
from cnnlstm.data._registry import DatasetBundle, register_source
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.manifest import open_image, read_manifest, split_images, write_manifest
from cnnlstm.data.splits import stratified_split
from cnnlstm.errors import ConfigError, DataError

__all__ = ["TextLineDataset", "load_text_lines", "read_text_line", "pad_width_collate", "write_text_layout", "BLANK"]

BLANK = "<blank>"
_MIN_WIDTH = 4  # CRNN's width stride: narrower lines would have no output column


def read_text_line(path: str | Path, height: int, channels: int = 1, where: str | None = None) -> Tensor:
    """A text-line image resized to ``height``, keeping its aspect ratio, as uint8.

    Args:
        path: the image file.
        height: target height in pixels.
        channels: 1 (grayscale) or 3 (RGB).
        where: what an error names (default: the path).

    Shape:
        - returns: ``(C, height, W)`` uint8 with ``W = max(4, round(w * height / h))``.

    Example:
        >>> read_text_line("lines/0001.png", 32).shape  # doctest: +SKIP
        torch.Size([1, 32, 117])
    """
    from PIL import Image

    path = Path(path)
    image = open_image(path, "L" if channels == 1 else "RGB", where or str(path))
    w, h = image.size
    width = max(_MIN_WIDTH, round(w * height / h))
    if (width, height) != (w, h):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch refuses to share PIL's read-only buffer
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(array))


def pad_width_collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch text lines of unequal widths: right-pad ``x`` with zeros, ``lengths`` = true widths.

    The other keys go through :func:`~cnnlstm.data.collate.pad_collate` (targets get ``target_lengths``).

    Shape:
        - sample ``x``: ``(C, H, W_i)``; batch ``x``: ``(B, C, H, max W_i)``; ``lengths``: ``(B,)`` int64.

    Example:
        >>> batch = pad_width_collate([{"x": torch.zeros(1, 32, 40)}, {"x": torch.zeros(1, 32, 64)}])
        >>> batch["x"].shape, batch["lengths"].tolist()
        (torch.Size([2, 1, 32, 64]), [40, 64])
    """
    rest = pad_collate([{k: v for k, v in s.items() if k != "x"} for s in samples]) if len(samples[0]) > 1 else {}
    images = [s["x"] for s in samples]
    widths = [int(x.shape[-1]) for x in images]
    batch = images[0].new_zeros(len(images), *images[0].shape[:-1], max(widths))  # (B, C, H, W)
    for i, x in enumerate(images):
        if x.shape[:-1] != images[0].shape[:-1]:
            raise DataError(f"text lines differ in channels or height: {tuple(images[0].shape)} vs {tuple(x.shape)}")
        batch[i, ..., : widths[i]] = x
    return {"x": batch, "lengths": torch.tensor(widths, dtype=torch.long), **rest}


class TextLineDataset(Dataset):
    """Text lines held in memory as uint8, each with its label ids and its text.

    Args:
        images: ``(C, H, W_i)`` uint8 lines of one height.
        texts: the text of each line.
        charset: ``[BLANK, *characters]``; character ``charset[k]`` has target id ``k``.

    Shape:
        - item ``x``: ``(C, H, W_i)`` float32 in [0, 1]; ``targets``: ``(L',)`` int64 in 1..K-1 (characters the
          charset lacks are left out of the targets, never of ``text``); ``text``: the line's text.

    Example:
        >>> ds = TextLineDataset([torch.zeros(1, 32, 40, dtype=torch.uint8)], ["ab"], [BLANK, "a", "b"])
        >>> ds[0]["targets"].tolist(), ds[0]["text"]
        ([1, 2], 'ab')
    """

    def __init__(self, images: list[Tensor], texts: list[str], charset: Sequence[str]) -> None:
        self.images, self.texts, self.charset = list(images), list(texts), list(charset)
        lookup = {c: k for k, c in enumerate(self.charset) if k > 0}
        self._targets = [torch.tensor([lookup[c] for c in t if c in lookup], dtype=torch.long) for t in self.texts]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.images[i].float().div_(255.0), "targets": self._targets[i], "text": self.texts[i]}


def _read_split(csv_path: Path, root: Path, height: int, channels: int) -> tuple[list[Tensor], list[str]]:
    images, texts = [], []
    # spaces around a text are part of it (a CSV cell keeps them), so values are kept as written
    for row in read_manifest(csv_path, ("image", "text"), strip=False, unit="line"):
        where = f"{csv_path} line {row.line}"
        images.append(read_text_line(root / row.values["image"].strip(), height, channels, where=where))
        texts.append(row.values["text"])
    return images, texts


def _unseen_warning(where: str, texts: list[str], charset: Sequence[str]) -> None:
    known = set(charset[1:])
    unseen = [c for t in texts for c in t if c not in known]
    if unseen:
        lines = sum(any(c not in known for c in t) for t in texts)
        shown = "".join(sorted(set(unseen)))[:20]
        warnings.warn(
            f"{where}: {lines} test line(s) hold {len(unseen)} character(s) never seen in training ({shown!r}); "
            "the model cannot predict them, so those lines count as wrong", UserWarning, stacklevel=3)


@register_source("text", kind="text_image", description="text-line images of any width: DIR/train.csv (image,text)")
def load_text_lines(
    path: str, *, seed: int = 0, height: int = 32, in_channels: int = 1, test_fraction: float | None = None,
    charset: str | None = None, **options: Any,
) -> DatasetBundle:
    """Load ``text:DIR``: ``DIR/train.csv`` (+ ``DIR/test.csv``), header ``image,text``.

    Args:
        path: the folder holding ``train.csv`` (image paths are relative to it).
        seed: seed of the train/test split when there is no ``test.csv``.
        height: lines are resized to this height, keeping their aspect ratio (the model's ``image_height``).
        in_channels: 1 (grayscale, default) or 3 (RGB).
        test_fraction: share of the lines held out for testing when there is no ``test.csv`` (default 0.2).
        charset: the characters to read, in id order (default: those of the training text, sorted).

    Returns:
        a ``text_image`` bundle; ``info.extras["charset"]`` is ``["<blank>", *characters]``.

    Example:
        >>> bundle = load_text_lines("data/lines")  # doctest: +SKIP
        >>> bundle.train[0]["x"].shape  # doctest: +SKIP
        torch.Size([1, 32, 117])
    """
    reject_unknown_options("text", options, ["height", "in_channels", "test_fraction", "charset"])
    where = f"text:{path}"
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{where}: {root} is not a folder; text:DIR needs DIR/train.csv (image,text)")
    if in_channels not in (1, 3):
        raise ConfigError(f"{where}: in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    if isinstance(height, bool) or not isinstance(height, int) or height < 16 or height % 16:
        raise ConfigError(f"{where}: height must be a multiple of 16 (CRNN pools it by 16), got {height!r}")
    images, texts = _read_split(root / "train.csv", root, height, in_channels)
    test_csv = root / "test.csv"
    if test_csv.is_file():
        if test_fraction is not None:
            raise ConfigError(f"{where}: {test_csv} exists, so test_fraction does not apply; drop it")
        test_images, test_texts = _read_split(test_csv, root, height, in_channels)
    else:
        keep, held = stratified_split(np.zeros(len(texts)), 0.2 if test_fraction is None else test_fraction, seed)
        test_images, test_texts = [images[i] for i in held], [texts[i] for i in held]
        images, texts = [images[i] for i in keep], [texts[i] for i in keep]
    if charset is None:
        chars = sorted({c for t in texts for c in t})
    else:
        if not isinstance(charset, str) or not charset or len(set(charset)) != len(charset):
            raise ConfigError(f"{where}: charset must be a string of unique characters, got {charset!r}")
        chars = list(charset)
        missing = sorted({c for t in texts for c in t} - set(chars))
        if missing:
            raise DataError(f"{where}: training text holds characters outside charset: {''.join(missing)!r}")
    table = [BLANK, *chars]
    _unseen_warning(where, test_texts, table)
    return DatasetBundle(
        name=where,
        kind="text_image",
        train=TextLineDataset(images, texts, table),
        test=TextLineDataset(test_images, test_texts, table),
        info=DataInfo(
            model_kwargs={"num_classes": len(table), "in_channels": in_channels, "image_height": height},
            extras={"charset": table, "image_height": height, "max_target_length": max(len(t) for t in texts)},
        ),
        collate_fn=pad_width_collate,
    )


def write_text_layout(bundle: DatasetBundle, directory: str | Path) -> Path:
    """Write a text-image bundle in the ``text:DIR`` layout: PNGs under ``train/``, ``test/`` and two CSVs.

    Pixels are written as 8-bit grayscale or RGB PNGs (lossless), so reading the folder back with
    ``text:DIR`` gives the bundle's samples exactly, in the same order (for uint8-valued images).

    Args:
        bundle: a ``text_image`` bundle whose samples hold ``x`` (C, H, W) in [0, 1] and ``targets``.
        directory: a folder that does not exist yet or is empty (nothing is overwritten).

    Returns:
        the folder.

    Example:
        >>> from cnnlstm.data.builtin.captcha import captcha
        >>> write_text_layout(captcha(n_train=8, n_test=4), "captcha_lines")  # doctest: +SKIP
    """
    out = Path(directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose a new folder")
    charset = bundle.info.extras["charset"]
    for split, dataset in (("train", bundle.train), ("test", bundle.test)):
        rows = []
        for i, name in enumerate(split_images(dataset, "x", out, split)):
            sample = dataset[i]
            text = sample.get("text") or "".join(charset[k] for k in sample["targets"].tolist())
            rows.append([name, text])
        write_manifest(out / f"{split}.csv", ["image", "text"], rows)
    return out

