"""Drawing flat coloured shapes and placing them without overlap, for the generated scene datasets.

Geometry convention: an object with integer centre ``(cx, cy)`` and half-size ``h`` occupies the pixel box
``[cx - h, cx + h) x [cy - h, cy + h)``, so its continuous centre is ``(cx, cy)`` exactly and every shape is
symmetric about it. ``x`` grows to the right and ``y`` downwards (image coordinates).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from cnnlstm.errors import ConfigError

__all__ = ["PALETTE", "SHAPES", "shape_mask", "draw_shape", "place_objects"]

#: The six colours of Sort-of-CLEVR (Santoro et al. 2017), RGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "orange": (255, 156, 0),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
}
SHAPES = ("square", "circle", "triangle")


@functools.lru_cache(maxsize=32)
def shape_mask(shape: str, half: int) -> np.ndarray:
    """Boolean mask of ``shape`` in its ``2*half`` box, judged at pixel centres.

    Args:
        shape: ``"square"``, ``"circle"`` (radius ``half``) or ``"triangle"`` (apex up, base ``2*half``).
        half: half the side of the box.

    Shape:
        - returns (2*half, 2*half) bool, read-only (cached).

    Example:
        >>> shape_mask("circle", 3).astype(int)[0].tolist()
        [0, 1, 1, 1, 1, 0]
    """
    centres = np.arange(2 * half) + 0.5 - half  # pixel centres relative to the box centre
    dy, dx = np.meshgrid(centres, centres, indexing="ij")
    if shape == "square":
        mask = np.ones((2 * half, 2 * half), dtype=bool)
    elif shape == "circle":
        mask = dx**2 + dy**2 <= half**2
    elif shape == "triangle":
        mask = np.abs(dx) <= (dy + half) / 2  # width grows from 0 at the top edge to 2*half at the bottom
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")
    mask.flags.writeable = False
    return mask


def draw_shape(
    canvas: np.ndarray, shape: str, cx: int, cy: int, half: int, colour: tuple[int, int, int]
) -> None:
    """Paint ``shape`` centred at ``(cx, cy)`` onto ``canvas`` in place.

    Shape:
        - canvas: (H, W, 3) uint8; the box must lie inside it.

    Example:
        >>> canvas = np.zeros((8, 8, 3), np.uint8)
        >>> draw_shape(canvas, "square", 4, 4, 2, PALETTE["red"])
        >>> int(canvas[..., 0].astype(bool).sum())
        16
    """
    box = canvas[cy - half : cy + half, cx - half : cx + half]  # (2h, 2h, 3) view
    box[shape_mask(shape, half)] = colour


def place_objects(
    rng: np.random.Generator, n: int, size: int, half: int, *, gap: int = 1,
    accept: Callable[[np.ndarray], bool] | None = None, max_tries: int = 1000,
) -> np.ndarray:
    """Integer centres of ``n`` objects whose boxes fit the image and are at least ``gap`` pixels apart.

    Scenes are drawn by rejection: object by object, then the whole scene must pass ``accept``.

    Args:
        rng: the generator to draw from.
        n: number of objects.
        size: image side in pixels.
        half: half-size of each object's box.
        gap: minimum empty pixels between two boxes (Chebyshev distance of centres >= 2*half + gap).
        accept: an extra condition on the (n, 2) centres, e.g. no ties for "closest".
        max_tries: scenes to try before giving up.

    Shape:
        - returns (n, 2) int64 centres ``(x, y)``.

    Example:
        >>> place_objects(np.random.default_rng(0), 3, 32, 4).shape
        (3, 2)
    """
    spacing = 2 * half + gap
    for _ in range(max_tries):
        centres = np.empty((n, 2), dtype=np.int64)
        k = 0
        for _ in range(50 * n):
            c = rng.integers(half, size - half + 1, size=2)
            if k == 0 or np.abs(centres[:k] - c).max(axis=1).min() >= spacing:
                centres[k] = c
                k += 1
                if k == n:
                    break
        if k == n and (accept is None or accept(centres)):
            return centres
    raise ConfigError(f"cannot place {n} objects of size {2 * half} in a {size}x{size} image; "
                      "use a larger image_size or a smaller object_size")
