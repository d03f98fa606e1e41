"""CSV manifests (``image,text`` and the like): read strictly, with errors that name the file and the line.

A manifest is UTF-8 (a byte-order mark is allowed), has a header row naming its columns (extra columns are
ignored) and one row per sample; image paths are relative to the manifest's folder. Every fault a user can make
(not UTF-8, empty, a missing or duplicate column, a blank value, a missing or unreadable image) is a
:class:`~cnnlstm.errors.DataError` naming the file and the line, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from cnnlstm.errors import DataError

__all__ = ["ManifestRow", "read_manifest", "open_image"]

ManifestRow = tuple[int, dict[str, str]]  # (line number in the file, {column: value})


def read_manifest(path: str | Path, columns: Sequence[str]) -> list[ManifestRow]:
    """Rows of a CSV manifest that must have ``columns``, each value non-blank.

    Args:
        path: the CSV file.
        columns: the columns every row needs (e.g. ``("image", "text")``).

    Returns:
        ``[(line, {column: value})]`` for each data row, in file order; only ``columns`` are kept.

    Raises:
        DataError: the file is missing, not UTF-8, empty, lacks a column or names one twice, has no rows, or a
            row lacks a value (the message names the file and the line).

    Example:
        >>> rows = read_manifest("data/train.csv", ("image", "text"))  # doctest: +SKIP
        >>> rows[0]
        (2, {'image': 'lines/0001.png', 'text': 'hello'})
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path} line {line} is not UTF-8 (byte {err.start}); save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    want = ", ".join(columns)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path} is empty; it needs a header row ({want}) and one row per sample")
        header = [h.strip() for h in header]
        twice = sorted({h for h in header if header.count(h) > 1})
        if twice:
            raise DataError(f"{path} line 1: the header names column {', '.join(twice)} more than once; "
                            "give each column one name")
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path} line 1: no column {', '.join(missing)} in the header ({', '.join(header)}); "
                            f"the header needs {want}")
        where = {c: header.index(c) for c in columns}
        rows: list[ManifestRow] = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank lines carry nothing
            line = reader.line_num
            row = {}
            for column, k in where.items():
                value = values[k] if k < len(values) else ""
                if not value.strip():
                    raise DataError(f"{path} line {line}: {column} is blank; every row needs {want}")
                row[column] = value
            rows.append((line, row))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: not valid CSV ({err})") from None
    if not rows:
        raise DataError(f"{path} has a header but no rows; add one row per sample")
    return rows


def open_image(path: Path, mode: str, where: str) -> object:
    """Open an image file fully decoded in PIL ``mode`` (``"L"`` or ``"RGB"``).

    Args:
        path: the image file.
        mode: PIL mode to convert to.
        where: what to name in an error (``"train.csv line 4"``).

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
