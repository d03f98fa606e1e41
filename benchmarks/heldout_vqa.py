"""Write a held-out image + question set in the vqa:DIR layout, unlike builtin:sort_of_clevr, for the `vqa` recipe.

Scenes are 64x64 on a black background with 4 objects (triangles, squares, circles) in 4 of 5 colours that
Sort-of-CLEVR does not use; five questions per scene from five families (shape of a colour, is a colour on the
left, on the top, is there a colour+shape, how many of a shape). The `vqa` recipe was not tuned on it.

Usage:
    python -m benchmarks.heldout_vqa DIR [--train 800] [--test 200] [--seed 1]
    cnnlstm fit --recipe vqa --data vqa:DIR
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlstm.data.builtin._shapes import SHAPES, draw_shape, place_objects

__all__ = ["write_heldout"]

COLOURS = {"purple": (128, 0, 160), "cyan": (0, 220, 220), "pink": (255, 120, 200), "brown": (140, 80, 20),
           "white": (255, 255, 255)}
SIZE, HALF, OBJECTS = 64, 6, 4


def _questions(rng: np.random.Generator, colours: list[str], shapes: list[str], centres: np.ndarray) -> list:
    k = int(rng.integers(OBJECTS))
    c, s = colours[k], shapes[k]
    other_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    other_colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    present = any(cc == other_colour and ss == other_shape for cc, ss in zip(colours, shapes, strict=True))
    return [
        (f"What is the shape of the {c} object?", s),
        (f"Is the {c} object on the left?", "yes" if centres[k, 0] < SIZE / 2 else "no"),
        (f"Is the {colours[(k + 1) % OBJECTS]} object on the top?",
         "yes" if centres[(k + 1) % OBJECTS, 1] < SIZE / 2 else "no"),
        (f"Is there a {other_colour} {other_shape}?", "yes" if present else "no"),
        (f"How many {other_shape}s are there?", str(sum(ss == other_shape for ss in shapes))),
    ]


def write_heldout(folder: Path, n_train: int, n_test: int, seed: int) -> None:
    """Write ``n_train`` + ``n_test`` scenes (five questions each) to ``folder`` (train.csv, test.csv, img/)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    for split, n, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        rows = []
        for i in range(offset, offset + n):
            # Centres off the midlines by a margin, so left/top answers are well defined.
            centres = place_objects(rng, OBJECTS, SIZE, HALF, gap=2,
                                    accept=lambda c: bool((np.abs(c - SIZE / 2) >= 2).all()))
            colours = list(rng.choice(list(COLOURS), size=OBJECTS, replace=False))
            shapes = [SHAPES[int(j)] for j in rng.integers(len(SHAPES), size=OBJECTS)]
            image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
            for (cx, cy), colour, shape in zip(centres, colours, shapes, strict=True):
                draw_shape(image, shape, int(cx), int(cy), HALF, COLOURS[colour])
            name = f"img/{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            rows += [[name, q, a] for q, a in _questions(rng, colours, shapes, centres)]
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "question", "answer"])
            writer.writerows(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    write_heldout(args.folder, args.train, args.test, args.seed)
