"""CSV manifests of images: ``DIR/train.csv`` (+ ``DIR/test.csv``) with a header and image paths relative to DIR.

The ``vqa:``, ``captions:`` and ``text:`` sources (and ``forecast:`` for its frame images) read their files
through here, so a bad file gets the same message whichever source reads it: the file and the row (the line
number, the header being row 1; ``text:`` calls it a line) and what to change.
Files are read as UTF-8 (a byte-order mark is accepted); columns the source does not use are ignored. Images
are read once per distinct path, in the order the rows first name them, and kept as uint8 tensors.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnlstm.data.splits import grouped_split
from cnnlstm.data.validate import read_utf8
from cnnlstm.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ManifestRow", "read_manifest", "write_manifest", "read_splits", "ImageTable", "load_image_table",
           "read_image_array", "open_image", "image_size_option",
           "write_png", "split_images"]


@dataclass(frozen=True)
class ManifestRow:
    """One data row of a manifest: its line number (header = 1) and ``{column: value}`` of the columns asked for."""

    line: int
    values: dict[str, str]


def read_manifest(path: str | Path, required: Sequence[str], optional: Sequence[str] = (), *, strip: bool = True,
                  unit: str = "row") -> list[ManifestRow]:
    """Read a UTF-8 CSV with a header; every ``required`` column must be present and non-blank in every row.

    Args:
        path: the CSV file.
        required: columns that must exist and hold a value in each row.
        optional: columns read when present (blank allowed); any other column is ignored.
        strip: strip spaces around values (False keeps them, for text where they count, such as a text line).
        unit: what messages call a position in the file (``"row"`` or ``"line"``; the header is number 1).

    Returns:
        one :class:`ManifestRow` per data row, in file order.

    Raises:
        DataError: the file is missing, not UTF-8, not valid CSV, empty or header-only, has duplicate or missing
            columns, or a row has a blank required value (or lacks its field).

    Example:
        >>> rows = read_manifest("data/vqa/train.csv", ["image", "question", "answer"])  # doctest: +SKIP
        >>> rows[0].line, rows[0].values["answer"]  # doctest: +SKIP
        (2, 'yes')
    """
    path = Path(path)
    text = read_utf8(path, lambda line, byte: f"{path} {unit} {line} is not UTF-8 text (byte {byte:#04x}); "
                                              "save the file as UTF-8", bom=True)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        lines = list(reader)
    except csv.Error as err:
        raise DataError(f"{path} {unit} {reader.line_num}: not valid CSV ({err})") from None
    want = ",".join(required)
    header_at = next((i for i, row in enumerate(lines) if any(cell.strip() for cell in row)), None)
    if header_at is None:
        raise DataError(f"{path} is empty; it needs a header row ({want}) and one row per sample")
    header = [cell.strip() for cell in lines[header_at]]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(f"{path} {unit} {header_at + 1}: the header names column {', '.join(twice)} more than once; "
                        "rename or drop one of them")
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{path} {unit} {header_at + 1}: no column {', '.join(missing)} in the header "
                        f"({','.join(header)}); the header must name {want}")
    wanted = {c: header.index(c) for c in (*required, *optional) if c in header}
    rows = []
    for i, cells in enumerate(lines[header_at + 1:], start=header_at + 2):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines (a trailing newline) are not samples
        # a short row leaves its last columns blank: an error only where a required value is missing
        values = {c: (cells[k].strip() if strip else cells[k]) if k < len(cells) else "" for c, k in wanted.items()}
        blank = [c for c in required if not values[c].strip()]
        if blank:
            short = f" (the row has {len(cells)} fields, the header {len(header)})" if len(cells) < len(header) else ""
            raise DataError(f"{path} {unit} {i}: {blank[0]} is blank{short}; give every row a {blank[0]} or remove "
                            "the row")
        rows.append(ManifestRow(i, values))
    if not rows:
        raise DataError(f"{path} has a header but no rows; add one row per sample")
    return rows


def write_manifest(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write a UTF-8 CSV manifest (the layout :func:`read_manifest` reads) with ``\\n`` line ends.

    Example:
        >>> write_manifest(Path("DIR/train.csv"), ["image", "caption"], [["a.png", "a red square"]])  # doctest: +SKIP
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def read_splits(root: str | Path, required: Sequence[str], optional: Sequence[str] = (), *, seed: int,
                test_fraction: float, source: str) -> tuple[list[ManifestRow], list[ManifestRow], Path, Path]:
    """The train and test rows of ``root/train.csv`` and ``root/test.csv``; without ``test.csv``, a seeded
    share of the training images (whole images: every row naming one goes the same way) becomes the test split.

    Args:
        root: the dataset folder.
        required: columns every row must fill (the first one holds the image path).
        optional: columns read when present.
        seed: seed of the carved test split.
        test_fraction: share of the images carved out when there is no ``test.csv``.
        source: the source prefix, for messages.

    Returns:
        ``(train_rows, test_rows, train_csv, test_csv)``; both CSV paths are ``train.csv`` when carved.

    Example:
        >>> train, test, _, _ = read_splits("data/vqa", ["image", "question", "answer"], seed=0,
        ...                                 test_fraction=0.2, source="vqa")  # doctest: +SKIP
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{source}:{root}: no such folder; it must hold train.csv (and optionally test.csv)")
    train_csv, test_csv = root / "train.csv", root / "test.csv"
    if not train_csv.is_file():
        raise DataError(f"{source}:{root}: no train.csv in the folder; put the training rows in {train_csv}")
    rows = read_manifest(train_csv, required, optional)
    if test_csv.is_file():
        return rows, read_manifest(test_csv, required, optional), train_csv, test_csv
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"{source}: option test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    groups = [row.values[required[0]] for row in rows]
    try:
        train_idx, test_idx = grouped_split(groups, float(test_fraction), seed)
    except DataError:
        raise DataError(f"{train_csv} names fewer than 2 images, too few to carve a test split; add images "
                        "or a test.csv") from None
    return [rows[i] for i in train_idx], [rows[i] for i in test_idx], train_csv, train_csv


def image_size_option(value: int | Sequence[int] | None, source: str) -> tuple[int, int] | None:
    """``image_size`` as (H, W): one int for square images, two for H and W, None for the first image's size.

    Example:
        >>> image_size_option(32, "vqa")
        (32, 32)
    """
    if value is None:
        return None
    sizes = [value] if isinstance(value, int) else list(value)
    if not 1 <= len(sizes) <= 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        raise ConfigError(f"{source}: option image_size must be a positive int or [H, W], got {value!r}")
    return (sizes[0], sizes[-1])


def open_image(path: Path, mode: str, where: str) -> Image.Image:
    """Open an image file fully decoded in PIL ``mode`` (``"L"`` or ``"RGB"``).

    Args:
        path: the image file.
        mode: PIL mode to convert to.
        where: what names the image in an error (``"DIR/train.csv row 5"``, a folder).

    Raises:
        DataError: the file is missing or not a readable image.

    Example:
        >>> image = open_image(Path("lines/0001.png"), "L", "train.csv line 2")  # doctest: +SKIP
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{where}: image {path} does not exist; check the path (relative to the CSV's folder)")
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{where}: image {path} is not a readable image ({err})") from None


def read_image_array(path: Path, channels: int, size: tuple[int, int] | None, where: str) -> np.ndarray:
    """An image file as a (C, H, W) uint8 array, resized to ``size`` (H, W) unless it already has that size.

    Args:
        path: the image file.
        channels: 1 (grayscale) or 3 (RGB).
        size: (H, W) or None to keep the image's own size.
        where: the manifest row that names the image, for messages (``"DIR/train.csv row 5"``).

    Raises:
        DataError: the file is missing or not a readable image.
    """
    from PIL import Image

    image = open_image(path, "L" if channels == 1 else "RGB", where)
    if size is not None and image.size != (size[1], size[0]):  # resampling an image of the right size blurs it
        image = image.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    array = np.array(image, dtype=np.uint8)  # a writable copy, so torch.from_numpy may share it
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))  # (C, H, W)


@dataclass
class ImageTable:
    """Distinct images of a manifest and, per row, which of them it names.

    Args:
        images: (S, C, H, W) uint8, in the order the rows first name them.
        paths: the S paths as written in the manifest.
        index: (N,) int64 image of each row.
    """

    images: Tensor
    paths: list[str]
    index: Tensor


def load_image_table(rows: Sequence[ManifestRow], root: Path, csv_path: Path, *, column: str = "image",
                     channels: int = 3, size: tuple[int, int] | None = None) -> ImageTable:
    """Read every distinct image the rows name (paths relative to ``root``), all resized to one size.

    Args:
        rows: manifest rows.
        root: the folder image paths are relative to.
        csv_path: the manifest, for messages.
        column: the column holding the image path.
        channels: 1 or 3.
        size: (H, W); None takes the size of the first image.

    Shape:
        - ``images``: (S, C, H, W) uint8; ``index``: (N,).

    Example:
        >>> table = load_image_table(rows, Path("data"), Path("data/train.csv"), size=(32, 32))  # doctest: +SKIP
    """
    slot: dict[str, int] = {}
    arrays: list[np.ndarray] = []
    index = []
    for row in rows:
        name = row.values[column]
        if name not in slot:
            where = f"{csv_path} row {row.line}"
            array = read_image_array(root / name, channels, size, where)
            size = size or (array.shape[1], array.shape[2])
            slot[name] = len(arrays)
            arrays.append(array)
        index.append(slot[name])
    return ImageTable(torch.from_numpy(np.stack(arrays)), list(slot), torch.tensor(index, dtype=torch.long))


def write_png(image: Tensor, path: Path) -> None:
    """Save a (C, H, W) image (uint8, or float in [0, 1]) as a PNG (8-bit, lossless: it reads back exactly).

    Example:
        >>> write_png(torch.zeros(1, 32, 32), Path("black.png"))  # doctest: +SKIP
    """
    from PIL import Image

    array = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).round().to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()  # (H, W, C)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def split_images(dataset: Dataset, key: str, folder: Path, prefix: str) -> list[str]:
    """Write the images of a split as PNGs under ``folder/prefix/``; return each sample's relative path.

    A :class:`FieldDataset` (or a dataset exposing its ``fields``) whose image field indexes a table (one image
    shared by several questions) writes each table image once; any other dataset writes one image per sample.

    Example:
        >>> split_images(bundle.train, "image", Path("clevr"), "train")[:2]  # doctest: +SKIP
        ['train/000000.png', 'train/000000.png']
    """
    (folder / prefix).mkdir(parents=True)
    field = getattr(dataset, "fields", {}).get(key)
    if field is not None and field.index is not None:
        names = [f"{prefix}/{k:06d}.png" for k in range(len(field.data))]
        for name, image in zip(names, field.data, strict=True):
            write_png(image, folder / name)
        return [names[int(k)] for k in field.index]
    names = []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        names.append(f"{prefix}/{i:06d}.png")
        write_png(dataset[i][key], folder / names[-1])
    return names
