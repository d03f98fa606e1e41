"""Tiny image + question and image + caption folders written to disk, as a user would lay them out."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


def draw(path: Path, colour: str, left: bool) -> None:
    """A 32x32 white PNG with an 8x8 square of ``colour`` on the left or right half."""
    image = np.full((32, 32, 3), 255, dtype=np.uint8)
    x = 4 if left else 20
    image[12:20, x : x + 8] = COLOURS[colour]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def random_clips(root: Path, labels: tuple[str, ...] = ("a", "b"), clips: int = 3, frames: int = 2,
                 size: int = 16, seed: int = 0) -> Path:
    """``root/<label>/clip<k>/f<i>.png``: a frames:DIR folder of random RGB frames (content-free, for plumbing tests).

    Frames are drawn label by label, clip by clip, frame by frame from one seeded generator.
    """
    rng = np.random.default_rng(seed)
    for label in labels:
        for c in range(clips):
            clip = root / label / f"clip{c}"
            clip.mkdir(parents=True)
            for f in range(frames):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(clip / f"f{f}.png")
    return root


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """A CSV as a spreadsheet would save it (``\\r\\n`` line ends, quoting where needed)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def scenes(n: int, offset: int = 0) -> list[tuple[str, str, bool]]:
    """``(relative path, colour, left)`` of ``n`` scenes cycling through every colour and side."""
    out = []
    for i in range(n):
        colour, left = list(COLOURS)[i % 2], (i // 2) % 2 == 0
        out.append((f"img/{offset + i:03d}.png", colour, left))
    return out


def _scene_rows(root: Path, items: list[tuple[str, str, bool]],
                cells: Callable[[str, bool], list[list[str]]]) -> list[list[str]]:
    """Draw each scene under ``root`` and return its rows: ``[name, *values]`` for each of ``cells(colour, left)``."""
    out = []
    for name, colour, left in items:
        draw(root / name, colour, left)
        out.extend([name, *values] for values in cells(colour, left))
    return out


def _vqa_cells(colour: str, left: bool) -> list[list[str]]:
    return [["What colour is the square?", colour], ["Is the square on the left?", "yes" if left else "no"]]


def _caption_cells(colour: str, left: bool) -> list[list[str]]:
    side = "left" if left else "right"
    return [[f"a {colour} square on the {side}"], [f"a {colour} square at the {side}"]]


def make_vqa(root: Path, n_train: int = 8, n_test: int = 4, test_csv: bool = True) -> Path:
    """``root`` in the vqa:DIR layout: two questions per image (its colour; whether it is on the left)."""
    root.mkdir(parents=True, exist_ok=True)
    train = _scene_rows(root, scenes(n_train), _vqa_cells)
    test = _scene_rows(root, scenes(n_test, offset=n_train), _vqa_cells)
    if test_csv:
        write_csv(root / "train.csv", ["image", "question", "answer"], train)
        write_csv(root / "test.csv", ["image", "question", "answer"], test)
    else:
        write_csv(root / "train.csv", ["image", "question", "answer"], train + test)
    return root


def make_captions(root: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """``root`` in the captions:DIR layout: two reference captions per image."""
    root.mkdir(parents=True, exist_ok=True)
    for split, items in (("train", scenes(n_train)), ("test", scenes(n_test, offset=n_train))):
        write_csv(root / f"{split}.csv", ["image", "caption"], _scene_rows(root, items, _caption_cells))
    return root
