"""A held-out set for the generic ``images`` recipe, written in the ``images:DIR`` layout (a folder per class), then
fitted with only ``--data`` changed.

No builtin makes it: five shape classes (disc, square, triangle, ring, cross) of random colour, size and position
on a cluttered background (colour noise and random strokes), 96x96 RGB PNGs, with a test folder of its own
(``test_dir``). The recipe runs as shipped: the pretrained EfficientNet-Lite0, frozen, features cached.

Usage:
    python -m benchmarks.heldout_images OUT [--per-class 80] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.heldout_user_data import _fit, _shape_mask

__all__ = ["CLASSES", "write_shape_images", "main"]

CLASSES = ("disc", "square", "triangle", "ring", "cross")


def _mask(name: str, size: int) -> np.ndarray:
    if name in ("disc", "square", "triangle"):
        return _shape_mask(CLASSES.index(name), size)
    yy, xx = np.mgrid[:size, :size] + 0.5
    c = size / 2
    if name == "ring":
        r2 = (xx - c) ** 2 + (yy - c) ** 2
        return (r2 <= c**2) & (r2 >= (0.55 * c) ** 2)
    bar = size // 4  # cross: two bars through the centre
    return (np.abs(xx - c) <= bar / 2 + 0.5) | (np.abs(yy - c) <= bar / 2 + 0.5)


def _clutter(rng: np.random.Generator, canvas: int) -> Image.Image:
    base = rng.integers(0, 256, size=3)
    noise = rng.normal(0, 30, size=(canvas, canvas, 3))
    image = Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):  # strokes: edges that are not the object
        points = [tuple(int(v) for v in rng.integers(0, canvas, size=2)) for _ in range(2)]
        draw.line(points, fill=tuple(int(v) for v in rng.integers(0, 256, size=3)), width=int(rng.integers(1, 4)))
    return image


def write_shape_images(out: Path, per_class: int = 80, per_class_test: int = 40, canvas: int = 96,
                       seed: int = 0) -> Path:
    """``out/train/<class>/*.png`` and ``out/test/<class>/*.png``: one shape per image on clutter."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", per_class_test)):
        for name in CLASSES:
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.asarray(_clutter(rng, canvas)).copy()
                size = int(rng.integers(canvas // 4, canvas // 2))
                x, y = (int(v) for v in rng.integers(0, canvas - size, size=2))
                colour = rng.integers(0, 256, size=3)
                pixels[y : y + size, x : x + size][_mask(name, size)] = colour
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    parser.add_argument("--set", nargs="+", action="extend", default=[], dest="overrides")
    args = parser.parse_args(argv)
    data = args.out / "shapes"
    if not data.exists():
        write_shape_images(data, per_class=args.per_class, seed=args.seed)
    start = time.perf_counter()
    overrides = [f"data.options.test_dir={data / 'test'}", *args.overrides]
    metrics = _fit("images", f"images:{data / 'train'}", args.out / "run_images", overrides)
    print(json.dumps({"cpu_threads": os.cpu_count(), "wall_s": round(time.perf_counter() - start, 1),
                      "images": metrics}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
