"""``builtin:moving_digits``: Moving-MNIST-style clips of real sklearn digits, for forecasting or motion classes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cnnlstm.data._registry import DatasetBundle, register_dataset, register_writer
from cnnlstm.data.builtin._common import Field, FieldDataset, check_int, split_rngs, strict_options
from cnnlstm.data.builtin._digit_source import check_test_fraction, digit_images, digit_partition
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.forecast import write_forecast_layout
from cnnlstm.data.info import DataInfo
from cnnlstm.errors import ConfigError

__all__ = ["moving_digits", "DIRECTION_NAMES", "FORECAST_FILE"]

#: Class names of ``task="classify"`` (image coordinates: y grows downwards), by number of directions.
DIRECTION_NAMES = {
    4: ["right", "down", "left", "up"],
    8: ["right", "down_right", "down", "down_left", "left", "up_left", "up", "up_right"],
}


def _digit_patches(size: int) -> Tensor:
    """All 1,797 digits resized to ``size`` x ``size``, as uint8 (0..255)."""
    images, _ = digit_images()  # (1797, 1, 8, 8) in [0, 1]
    big = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)  # (1797, 1, s, s)
    return big[:, 0].mul(255).round_().clamp_(0, 255).to(torch.uint8)  # (1797, s, s)


def _bounce(start: np.ndarray, velocity: np.ndarray, steps: int, room: float) -> np.ndarray:
    """Positions over ``steps`` frames of points moving at ``velocity`` and reflecting off [0, room].

    Shape:
        - start, velocity: (..., 2); returns (steps, ..., 2) float positions.
    """
    pos, vel = start.astype(np.float64).copy(), velocity.astype(np.float64).copy()
    out = np.empty((steps, *pos.shape))
    for t in range(steps):
        out[t] = pos
        pos += vel
        low, high = pos < 0, pos > room
        pos[low], pos[high] = -pos[low], 2 * room - pos[high]  # mirror back inside, like a wall bounce
        vel[low | high] *= -1
    return out


def _render(patches: np.ndarray, which: np.ndarray, positions: np.ndarray, canvas: int) -> np.ndarray:
    """Paste digits at integer positions, overlapping digits combined with max (as in Moving MNIST).

    Shape:
        - patches: (P, s, s) uint8; which: (N, D) patch indices; positions: (N, T, D, 2) int (x, y) of the
          top-left corner; returns (N, T, canvas, canvas) uint8.
    """
    n, steps, num_digits, _ = positions.shape
    s = patches.shape[-1]
    frames = np.zeros((n, steps, canvas, canvas), dtype=np.uint8)
    rows_n = np.arange(n)[:, None, None]  # (N, 1, 1)
    offs = np.arange(s)
    for t in range(steps):
        for d in range(num_digits):
            ys = positions[:, t, d, 1, None] + offs  # (N, s)
            xs = positions[:, t, d, 0, None] + offs  # (N, s)
            view = frames[:, t][rows_n, ys[:, :, None], xs[:, None, :]]  # (N, s, s)
            frames[:, t][rows_n, ys[:, :, None], xs[:, None, :]] = np.maximum(view, patches[which[:, d]])
    return frames


@register_dataset(
    "moving_digits", kind="forecast",
    description="Moving-MNIST-style clips of real digits bouncing on a canvas (task='classify': motion direction)",
)
@strict_options
def moving_digits(
    *, seed: int = 0, n_train: int = 1000, n_test: int = 200, input_frames: int = 10, horizon: int | None = None,
    canvas_size: int = 32, digit_size: int = 12, num_digits: int | None = None, speed: float = 1.5,
    task: str = "forecast", directions: int = 4, split_seed: int = 0, test_fraction: float = 0.25,
) -> DatasetBundle:
    """Real handwritten digits moving across a blank canvas, as in Moving MNIST (Srivastava et al. 2015).

    ``task="forecast"`` (kind ``"forecast"``): each digit starts at a random place with a random heading and
    constant ``speed``, bouncing off the canvas edges; the model sees ``input_frames`` frames and predicts the
    next ``horizon``. ``task="classify"`` (kind ``"frames"``): all digits move in one of ``directions`` headings
    without touching an edge, and the label is that heading. Mean pooling over time cannot tell a digit
    moving left from one moving right (the average frame is the same streak), so the order of frames matters.

    Digit images come from the partition of ``builtin:digits`` (same ``split_seed``/``test_fraction``).
    ``dataset.meta`` holds ``positions`` (N, T, D, 2) top-left corners (x, y) in pixels, ``source_index``
    (N, D) into ``sklearn.datasets.load_digits()`` and, for forecasting, the unrounded ``start`` and
    ``velocity`` (N, D, 2) at frame 0.

    Args:
        seed: seed of the clips (train and test use disjoint streams).
        n_train: number of training clips.
        n_test: number of test clips.
        input_frames: frames the model sees (T_in).
        horizon: future frames to predict (K, default 5); only for ``task="forecast"``.
        canvas_size: height and width of the canvas.
        digit_size: digits are resized from 8x8 to this size (bilinear).
        num_digits: digits per clip (default 2 for forecasting, 1 for classification).
        speed: pixels per frame (forecasting: along a random heading; classification: per axis).
        task: ``"forecast"`` or ``"classify"``.
        directions: 4 or 8 motion classes for ``task="classify"``.
        split_seed: seed of the image partition shared with ``builtin:digits``.
        test_fraction: share of each digit's images reserved for test clips.

    Shape:
        - forecast sample: ``x`` (T_in, 1, H, W), ``y`` (K, 1, H, W), float32 in [0, 1].
        - classify sample: ``x`` (T_in, 1, H, W), ``y`` int64 scalar in 0..directions-1.

    Example:
        >>> bundle = moving_digits(n_train=4, n_test=2)
        >>> bundle.train[0]["x"].shape, bundle.train[0]["y"].shape
        (torch.Size([10, 1, 32, 32]), torch.Size([5, 1, 32, 32]))
    """
    name = "moving_digits"
    if task not in ("forecast", "classify"):
        raise ConfigError(f"builtin:{name} option task must be 'forecast' or 'classify', got {task!r}")
    classify = task == "classify"
    if classify and horizon is not None:
        raise ConfigError(f"builtin:{name}: horizon applies to task='forecast' only; drop it for task='classify'")
    horizon = check_int("horizon", 5 if horizon is None else horizon, 1, dataset=name)
    n_train = check_int("n_train", n_train, 1, dataset=name)
    n_test = check_int("n_test", n_test, 1, dataset=name)
    input_frames = check_int("input_frames", input_frames, 1, dataset=name)
    canvas_size = check_int("canvas_size", canvas_size, 4, dataset=name)
    digit_size = check_int("digit_size", digit_size, 4, canvas_size - 1, dataset=name)
    num_digits = check_int("num_digits", (1 if classify else 2) if num_digits is None else num_digits, 1, 10,
                           dataset=name)
    if classify and directions not in DIRECTION_NAMES:
        raise ConfigError(f"builtin:{name} option directions must be 4 or 8, got {directions!r}")
    if isinstance(speed, bool) or not isinstance(speed, int | float) or speed <= 0:
        raise ConfigError(f"builtin:{name} option speed must be a positive number of pixels per frame")
    test_fraction = check_test_fraction(test_fraction, name)
    steps = input_frames if classify else input_frames + horizon
    room = canvas_size - digit_size  # the top-left corner moves within [0, room]
    travel = speed * (steps - 1)
    if not classify and speed >= room:
        raise ConfigError(f"builtin:{name}: speed ({speed}) must stay below canvas_size - digit_size ({room}) "
                          "so a digit bounces at most once per frame")
    if classify and travel > room:
        raise ConfigError(f"builtin:{name}: a digit moving {speed} px/frame for {steps} frames leaves a "
                          f"{canvas_size}px canvas; lower speed or input_frames, or raise canvas_size")

    patches = _digit_patches(digit_size).numpy()
    train_pool, test_pool = digit_partition(split_seed, test_fraction)
    train_rng, test_rng = split_rngs(seed, f"{name}:{task}")

    def make(n: int, pool: np.ndarray, rng: np.random.Generator) -> FieldDataset:
        which = pool[rng.integers(len(pool), size=(n, num_digits))]  # (N, D) source images
        meta: dict[str, Tensor] = {"source_index": torch.from_numpy(which)}
        if classify:
            label = rng.permutation(np.arange(n) % directions)  # exactly balanced classes
            angle = 2 * math.pi * label / directions
            step = speed * np.stack([np.round(np.cos(angle)), np.round(np.sin(angle))], -1)  # (N, 2), per axis
            lo = np.maximum(0.0, -step * (steps - 1))[:, None]  # (N, 1, 2): starts that keep the digit inside
            hi = (room - np.maximum(0.0, step * (steps - 1)))[:, None]
            start = lo + rng.random((n, num_digits, 2)) * (hi - lo)  # (N, D, 2)
            positions = start[None] + np.arange(steps)[:, None, None, None] * step[None, :, None]  # (T, N, D, 2)
        else:
            heading = rng.uniform(0, 2 * math.pi, size=(n, num_digits))
            velocity = speed * np.stack([np.cos(heading), np.sin(heading)], -1)  # (N, D, 2)
            start = rng.uniform(0, room, size=(n, num_digits, 2))  # (N, D, 2)
            positions = _bounce(start, velocity, steps, room)  # (T, N, D, 2)
            meta["start"], meta["velocity"] = torch.from_numpy(start), torch.from_numpy(velocity)
        positions = np.rint(positions).astype(np.int64).transpose(1, 0, 2, 3)  # (N, T, D, 2)
        meta["positions"] = torch.from_numpy(positions)
        frames = torch.from_numpy(_render(patches, which, positions, canvas_size)).unsqueeze(2)  # (N, T, 1, H, W)
        if classify:
            fields = {"x": Field(frames), "y": Field(torch.from_numpy(label).long())}
        else:
            fields = {"x": Field(frames[:, :input_frames]), "y": Field(frames[:, input_frames:])}
        return FieldDataset(fields, meta=meta)

    train = make(n_train, train_pool, train_rng)
    image_size = (canvas_size, canvas_size)
    if classify:
        info = DataInfo(
            model_kwargs={"num_classes": directions, "in_channels": 1, "image_size": image_size},
            class_names=DIRECTION_NAMES[directions],
            targets=train.fields["y"].data,
        )
    else:
        info = DataInfo(model_kwargs={"in_channels": 1, "horizon": horizon, "image_size": image_size})
    return DatasetBundle(
        name=f"builtin:{name}",
        kind="frames" if classify else "forecast",
        train=train,
        test=make(n_test, test_pool, test_rng),
        info=info,
        collate_fn=pad_collate,
    )


#: the file ``cnnlstm datasets write builtin:moving_digits DIR`` writes in DIR (the ``forecast:PATH`` layout)
FORECAST_FILE = "sequences.npz"


def _write_forecast_file(bundle: DatasetBundle, folder: Path) -> None:
    # uint8 `train` and `test` arrays (N, input_frames + horizon, H, W); forecast:DIR/sequences.npz with
    # context=input_frames (10 by default, as in the `forecast` recipe) reads the same clips back in order.
    if bundle.kind != "forecast":
        raise ConfigError("builtin:moving_digits is written in the forecast layout; drop task=classify")
    write_forecast_layout(bundle, folder / FORECAST_FILE)


register_writer("moving_digits")(_write_forecast_file)
