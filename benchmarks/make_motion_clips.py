"""Write direction-of-motion clips as frame folders: one shape moves left, right, up or down among static ones.

Each clip is ``OUT/<split>/<direction>/clipNNNN/frame_TT.png``: a smooth random-colour clutter background, 2-5
static distractor shapes (squares, discs, triangles) and one moving shape of random kind, size and colour that
stays on the canvas. Only the order of the frames tells the class: every frame alone is a plausible frame of any
direction, and the pooled features of a frame barely depend on where the moving shape is.

Used for docs/benchmarks.md section 2f (``frames:OUT/train`` with ``data.options.test_dir=OUT/test``)::

    python -m benchmarks.make_motion_clips /tmp/motion                  # 320 train / 200 test, 4-5 px per frame
    python -m benchmarks.make_motion_clips /tmp/slow --speed 1.5 3 --grey --seed 21
    cnnlstm fit --data frames:/tmp/motion/train --set data.options.test_dir=/tmp/motion/test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["DIRECTIONS", "make_split"]

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _shape(draw: ImageDraw.ImageDraw, kind: int, cx: float, cy: float, r: float, color: tuple[int, ...]) -> None:
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == 0:
        draw.rectangle(box, fill=color)
    elif kind == 1:
        draw.ellipse(box, fill=color)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)


def make_split(root: Path, per_class: int, seed: int, *, size: int = 64, frames: int = 8,
               speed: tuple[float, float] = (3.0, 5.0), grey: bool = False) -> None:
    """Write ``per_class`` clips of each direction under ``root/<direction>/``.

    Args:
        root: the split's folder.
        per_class: clips per direction.
        seed: random seed (use different seeds for train and test).
        size: frame height and width.
        frames: frames per clip.
        speed: range of the moving shape's speed, pixels per frame.
        grey: save single-channel frames.
    """
    rng = np.random.default_rng(seed)
    for label, (dx, dy) in DIRECTIONS.items():
        for c in range(per_class):
            coarse = rng.integers(0, 80, (size // 8, size // 8, 3)).astype(np.uint8)
            bg = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR)).astype(np.int16)
            bg = np.clip(bg + rng.integers(-20, 20, bg.shape), 0, 255).astype(np.uint8)
            static = [(rng.integers(0, 3), rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 7),
                       tuple(int(v) for v in rng.integers(60, 256, 3))) for _ in range(rng.integers(2, 6))]
            kind, r = rng.integers(0, 3), rng.integers(4, 8)
            color = tuple(int(v) for v in rng.integers(60, 256, 3))
            step = rng.uniform(*speed)
            travel = step * (frames - 1)
            lo, hi = r + 1, size - r - 1
            sx = rng.uniform(lo + max(0, -dx) * travel, hi - max(0, dx) * travel)  # the whole path stays inside
            sy = rng.uniform(lo + max(0, -dy) * travel, hi - max(0, dy) * travel)
            clip = root / label / f"clip{c:04d}"
            clip.mkdir(parents=True, exist_ok=True)
            for t in range(frames):
                image = Image.fromarray(bg.copy())
                draw = ImageDraw.Draw(image)
                for k, x, y, rr, col in static:
                    _shape(draw, k, x, y, rr, col)
                _shape(draw, kind, sx + dx * step * t, sy + dy * step * t, r, color)
                (image.convert("L") if grey else image).save(clip / f"frame_{t:02d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=80, help="training clips per direction")
    parser.add_argument("--test", type=int, default=50, help="test clips per direction")
    parser.add_argument("--speed", type=float, nargs=2, default=(3.0, 5.0), metavar=("MIN", "MAX"))
    parser.add_argument("--grey", action="store_true")
    parser.add_argument("--seed", type=int, default=1, help="train seed; test uses seed + 1")
    args = parser.parse_args()
    make_split(args.out / "train", args.train, args.seed, speed=tuple(args.speed), grey=args.grey)
    make_split(args.out / "test", args.test, args.seed + 1, speed=tuple(args.speed), grey=args.grey)


if __name__ == "__main__":
    main()
