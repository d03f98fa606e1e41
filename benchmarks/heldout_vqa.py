"""Write a held-out image + question set in the vqa:DIR layout, unlike builtin:sort_of_clevr, for the `vqa` recipe.

Set 1 (the defaults): scenes 64x64 on a black background with 4 objects (triangles, squares, circles) in 4
of 5 colours that Sort-of-CLEVR does not use; five questions per scene from five families (shape of a colour,
is a colour on the left, on the top, is there a colour+shape, how many of a shape).

Set 2 (``--set2``): another palette (six colours neither Sort-of-CLEVR nor set 1 uses), 5 objects on an 80x80
grey background (the recipe resizes to 64x64), other wording, and a sixth, relational family: the shape of the
object nearest to a named one (as Sort-of-CLEVR's "closest" question). ``--types`` adds the optional ``type``
column (the family), so the test metrics report accuracy per family; it changes no image or question.

Set 3 (``--set3``): closest to Sort-of-CLEVR's own layout but in none of its colours: 6 objects in 6 of 7 colours
on a 72x72 white background, and questions whose answers are colours and counts relative to an object as well as
shapes and yes/no: the colour of the object farthest from a named one, how many other objects share a named one's
shape, whether a named one is on the right, in the top half, and whether a colour + shape is present.

Usage:
    python -m benchmarks.heldout_vqa DIR [--train 800] [--test 200] [--seed 1]
    python -m benchmarks.heldout_vqa DIR2 --set2 --seed 7 --types
    python -m benchmarks.heldout_vqa DIR3 --set3 --seed 11 --types --train 700
    cnnlstm fit --recipe vqa --data vqa:DIR
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlstm.data.builtin._shapes import SHAPES, draw_shape, place_objects
from cnnlstm.data.manifest import write_manifest

__all__ = ["SET1", "SET2", "SET3", "SceneSet", "write_heldout"]

@dataclass(frozen=True)
class SceneSet:
    """What one held-out set draws: palette, scene size, object count and size, background, wording."""

    colours: dict[str, tuple[int, int, int]]
    size: int
    half: int
    objects: int
    background: int
    relational: bool
    style: int = 0  # 3: set 3's question families


SET1 = SceneSet(colours={"purple": (128, 0, 160), "cyan": (0, 220, 220), "pink": (255, 120, 200),
                         "brown": (140, 80, 20), "white": (255, 255, 255)},
                size=64, half=6, objects=4, background=0, relational=False)
SET2 = SceneSet(colours={"navy": (0, 0, 128), "olive": (128, 128, 0), "teal": (0, 128, 128),
                         "salmon": (250, 128, 114), "lime": (160, 255, 60), "magenta": (255, 0, 255)},
                size=80, half=7, objects=5, background=60, relational=True)
SET3 = SceneSet(colours={"gold": (230, 180, 0), "crimson": (180, 0, 40), "sky": (80, 170, 255),
                         "forest": (20, 110, 40), "violet": (140, 60, 220), "black": (0, 0, 0),
                         "tan": (200, 160, 110)},
                size=72, half=6, objects=6, background=255, relational=True, style=3)


def _questions(rng: np.random.Generator, spec: SceneSet, colours: list[str], shapes: list[str],
               centres: np.ndarray) -> list[tuple[str, str, str]]:
    n, mid = spec.objects, spec.size / 2
    k = int(rng.integers(n))
    c, s = colours[k], shapes[k]
    other_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    other_colour = list(spec.colours)[int(rng.integers(len(spec.colours)))]
    present = any(cc == other_colour and ss == other_shape for cc, ss in zip(colours, shapes, strict=True))
    j = (k + 1) % n
    count = str(sum(ss == other_shape for ss in shapes))
    if not spec.relational:
        return [
            (f"What is the shape of the {c} object?", s, "shape"),
            (f"Is the {c} object on the left?", "yes" if centres[k, 0] < mid else "no", "left"),
            (f"Is the {colours[j]} object on the top?", "yes" if centres[j, 1] < mid else "no", "top"),
            (f"Is there a {other_colour} {other_shape}?", "yes" if present else "no", "exists"),
            (f"How many {other_shape}s are there?", count, "count"),
        ]
    distance = np.abs(centres - centres[k]).sum(axis=1).astype(float)  # city-block, as the scene's margin
    if spec.style == 3:
        distance[k] = -np.inf
        return [
            (f"what shape is the {c} object", s, "shape"),
            (f"is the {colours[j]} object on the right side", "yes" if centres[j, 0] >= mid else "no", "right"),
            (f"is the {c} object in the top half", "yes" if centres[k, 1] < mid else "no", "top"),
            (f"is there a {other_colour} {other_shape}", "yes" if present else "no", "exists"),
            (f"how many other objects have the shape of the {colours[j]} object",
             str(sum(ss == shapes[j] for ss in shapes) - 1), "same_shape"),
            (f"what colour is the object farthest from the {c} object", colours[int(distance.argmax())],
             "farthest"),
        ]
    distance[k] = np.inf
    return [
        (f"which shape is the {c} thing", s, "shape"),
        (f"is the {c} thing in the left half", "yes" if centres[k, 0] < mid else "no", "left"),
        (f"is the {colours[j]} thing in the bottom half", "yes" if centres[j, 1] >= mid else "no", "bottom"),
        (f"is any {other_shape} {other_colour}", "yes" if present else "no", "exists"),
        (f"count the {other_shape}s", count, "count"),
        (f"which shape is nearest to the {c} thing", shapes[int(distance.argmin())], "nearest"),
    ]


def _unambiguous(centres: np.ndarray, mid: float, farthest: bool = False) -> bool:
    """Centres off the midlines by a margin (left/top well defined) and no tie for any object's nearest (and,
    with ``farthest``, its farthest)."""
    if not (np.abs(centres - mid) >= 2).all():
        return False
    distance = np.abs(centres[:, None] - centres[None]).sum(axis=2).astype(float)  # (n, n)
    np.fill_diagonal(distance, np.inf)
    nearest = np.sort(distance, axis=1)
    if not (nearest[:, 1] - nearest[:, 0] >= 2).all():
        return False
    if not farthest:
        return True
    np.fill_diagonal(distance, -np.inf)
    farthest = np.sort(distance, axis=1)
    return bool((farthest[:, -1] - farthest[:, -2] >= 2).all())


def write_heldout(folder: Path, n_train: int, n_test: int, seed: int, spec: SceneSet = SET1,
                  types: bool = False) -> None:
    """Write ``n_train`` + ``n_test`` scenes (five or six questions each) to ``folder`` (train/test.csv, img/)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    mid = spec.size / 2
    # Set 1 keeps its original acceptance test, so the same seed draws the same scenes as before.
    if spec.relational:
        accept = lambda c: _unambiguous(c, mid, spec.style == 3)  # noqa: E731
    else:
        accept = lambda c: bool((np.abs(c - mid) >= 2).all())  # noqa: E731
    for split, n, offset in (("train", n_train, 0), ("test", n_test, n_train)):
        rows = []
        for i in range(offset, offset + n):
            centres = place_objects(rng, spec.objects, spec.size, spec.half, gap=2, accept=accept)
            colours = list(rng.choice(list(spec.colours), size=spec.objects, replace=False))
            shapes = [SHAPES[int(j)] for j in rng.integers(len(SHAPES), size=spec.objects)]
            image = np.full((spec.size, spec.size, 3), spec.background, dtype=np.uint8)
            for (cx, cy), colour, shape in zip(centres, colours, shapes, strict=True):
                draw_shape(image, shape, int(cx), int(cy), spec.half, spec.colours[colour])
            name = f"img/{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            for q, a, family in _questions(rng, spec, colours, shapes, centres):
                rows.append([name, q, a, family] if types else [name, q, a])
        header = ["image", "question", "answer", "type"] if types else ["image", "question", "answer"]
        write_manifest(folder / f"{split}.csv", header, rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set2", action="store_true", help="the second set: other palette, size, wording")
    parser.add_argument("--set3", action="store_true", help="the third set: white scenes, colour and count answers")
    parser.add_argument("--types", action="store_true", help="add the type column (question family)")
    args = parser.parse_args()
    spec = SET3 if args.set3 else SET2 if args.set2 else SET1
    write_heldout(args.folder, args.train, args.test, args.seed, spec, args.types)
