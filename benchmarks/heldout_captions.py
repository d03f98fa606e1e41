"""Write a held-out image + caption set in the captions:DIR layout, unlike builtin:shape_captions.

Scenes are 64x64 on a grey background (the builtin's are black) with one to three shapes (square, circle,
triangle) in five colours the builtin does not use, and other wording: "a cyan circle to the left of a pink
square", "over", "under", "to the right of". Every pair of objects is clearly side by side or clearly stacked,
so each relation is well defined; every order of the objects is a valid caption, and each image gets one row
per order (``n!`` rows: several rows for one image are several references, as the layout says). The generic
``captions`` recipe is then run on it with only ``--data`` changed.

Usage:
    python -m benchmarks.heldout_captions DIR [--train 1000] [--test 200] [--seed 3]
    cnnlstm fit --recipe captions --data captions:DIR
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlstm.data.builtin._shapes import SHAPES, draw_shape, place_objects
from cnnlstm.data.builtin.shape_captions import clear_axes
from cnnlstm.data.manifest import write_manifest

__all__ = ["COLOURS", "caption", "write_heldout_captions"]

COLOURS = {"purple": (128, 0, 160), "cyan": (0, 220, 220), "pink": (255, 120, 200), "brown": (140, 80, 20),
           "white": (255, 255, 255)}
BACKGROUND, SIZE, HALF = 70, 64, 6


def _relation(a: np.ndarray, b: np.ndarray) -> str:
    """Where ``a`` is relative to ``b`` (image coordinates, y down), along the axis on which they differ most."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    if abs(dx) > abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "over" if dy > 0 else "under"


def caption(order: tuple[int, ...], centres: np.ndarray, colours: list[str], shapes: list[str]) -> str:
    """The objects in ``order``, each followed by where it is relative to the next.

    Example:
        >>> caption((0, 1), np.array([[10, 10], [40, 12]]), ["cyan", "pink"], ["circle", "square"])
        'a cyan circle to the left of a pink square'
    """
    words: list[str] = []
    for k, obj in enumerate(order):
        if k:
            words.append(_relation(centres[order[k - 1]], centres[obj]))
        words += ["a", colours[obj], shapes[obj]]
    return " ".join(words)


def write_heldout_captions(folder: Path, n_train: int, n_test: int, seed: int) -> None:
    """Write ``n_train`` + ``n_test`` scenes to ``folder`` (``train.csv``, ``test.csv``, ``img/``)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    for split, n, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        rows = []
        for i in range(offset, offset + n):
            count = int(rng.integers(1, 4))
            centres = place_objects(rng, count, SIZE, HALF, gap=3, accept=clear_axes)
            kinds = rng.choice(len(COLOURS) * len(SHAPES), size=count, replace=False)  # no two alike
            colours = [list(COLOURS)[int(k) // len(SHAPES)] for k in kinds]
            shapes = [SHAPES[int(k) % len(SHAPES)] for k in kinds]
            image = np.full((SIZE, SIZE, 3), BACKGROUND, dtype=np.uint8)
            for (cx, cy), colour, shape in zip(centres, colours, shapes, strict=True):
                draw_shape(image, shape, int(cx), int(cy), HALF, COLOURS[colour])
            name = f"img/{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            rows += [[name, caption(order, centres, colours, shapes)]
                     for order in itertools.permutations(range(count))]
        write_manifest(folder / f"{split}.csv", ["image", "caption"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    write_heldout_captions(args.folder, args.train, args.test, args.seed)
