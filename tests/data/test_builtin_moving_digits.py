"""builtin:moving_digits: frames are the digits pasted along bouncing (or straight) trajectories."""

import math

import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.data.builtin._digit_source import digit_partition
from cnnlstm.data.builtin.moving_digits import _digit_patches
from cnnlstm.errors import ConfigError

SMALL = {"n_train": 12, "n_test": 6}


def _triangle(p: np.ndarray, room: float) -> np.ndarray:
    """Closed-form position of a point bouncing in [0, room]: a triangle wave of the free path."""
    return room - np.abs(np.mod(p, 2 * room) - room)


def test_forecast_shapes_and_determinism() -> None:
    a = load_dataset("builtin:moving_digits", seed=1, **SMALL)
    b = load_dataset("builtin:moving_digits", seed=1, **SMALL)
    c = load_dataset("builtin:moving_digits", seed=2, **SMALL)
    assert a.kind == "forecast" and a.info.model_kwargs == {"in_channels": 1, "horizon": 5, "image_size": (32, 32)}
    s = a.train[0]
    assert s["x"].shape == (10, 1, 32, 32) and s["y"].shape == (5, 1, 32, 32) and s["x"].dtype == torch.float32
    assert 0 <= float(s["x"].min()) and float(s["x"].max()) <= 1
    assert all(torch.equal(a.train[i]["x"], b.train[i]["x"]) for i in range(12))
    assert not torch.equal(a.train[0]["x"], c.train[0]["x"])
    batch = a.collate_fn([a.train[i] for i in range(2)])
    assert batch["x"].shape == (2, 10, 1, 32, 32) and batch["y"].shape == (2, 5, 1, 32, 32)


def test_forecast_frames_follow_the_bounce_physics() -> None:
    bundle = load_dataset("builtin:moving_digits", seed=0, n_train=40, n_test=4, input_frames=6, horizon=6)
    room = 32 - 12
    meta = bundle.train.meta
    t = np.arange(12)[None, :, None, None]
    free = meta["start"].numpy()[:, None] + t * meta["velocity"].numpy()[:, None]  # (N, T, D, 2)
    expected = np.rint(_triangle(free, room))
    assert np.abs(expected - meta["positions"].numpy()).max() <= 1  # rounding at exact .5 may differ
    assert (expected == meta["positions"].numpy()).mean() > 0.99
    assert ((meta["positions"] >= 0) & (meta["positions"] <= room)).all()
    # Each frame is the max of the digit patches pasted at those positions (an independent slicing render).
    patches = _digit_patches(12).float() / 255
    for i in range(5):
        sample = bundle.train[i]
        clip = torch.cat([sample["x"], sample["y"]])[:, 0]  # (T, H, W)
        for step in range(12):
            ref = torch.zeros(32, 32)
            for d in range(2):
                x0, y0 = meta["positions"][i, step, d].tolist()
                patch = patches[meta["source_index"][i, d]]
                ref[y0 : y0 + 12, x0 : x0 + 12] = torch.maximum(ref[y0 : y0 + 12, x0 : x0 + 12], patch)
            torch.testing.assert_close(clip[step], ref, atol=1e-6, rtol=0)


def test_digits_come_from_the_shared_partition() -> None:
    bundle = load_dataset("builtin:moving_digits", n_train=300, n_test=100)
    train_idx, test_idx = digit_partition()
    assert set(bundle.train.meta["source_index"].flatten().tolist()) <= set(train_idx.tolist())
    assert set(bundle.test.meta["source_index"].flatten().tolist()) <= set(test_idx.tolist())


@pytest.mark.parametrize("directions", [4, 8])
def test_classify_label_is_the_direction_of_the_centre_of_mass(directions: int) -> None:
    bundle = load_dataset("builtin:moving_digits", task="classify", directions=directions, n_train=48, n_test=8)
    assert bundle.kind == "frames" and bundle.info.model_kwargs["num_classes"] == directions
    assert torch.bincount(bundle.info.targets).tolist() == [48 // directions] * directions
    grid = torch.arange(32, dtype=torch.float32)
    for i in range(len(bundle.train)):
        x, y = bundle.train[i]["x"][:, 0], int(bundle.train[i]["y"])  # (T, H, W)
        assert x.shape == (10, 32, 32)
        mass = x.sum((1, 2))  # the digit never leaves the canvas, so its mass is constant
        assert torch.allclose(mass, mass[0].expand_as(mass), rtol=1e-5)
        cx, cy = (x.sum(1) * grid).sum(1) / mass, (x.sum(2) * grid).sum(1) / mass
        angle = math.atan2(float(cy[-1] - cy[0]), float(cx[-1] - cx[0]))  # y grows downwards
        assert round(angle / (2 * math.pi / directions)) % directions == y


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="horizon"):
        load_dataset("builtin:moving_digits", task="classify", horizon=3)
    with pytest.raises(ConfigError, match="task"):
        load_dataset("builtin:moving_digits", task="segment")
    with pytest.raises(ConfigError, match="leaves"):
        load_dataset("builtin:moving_digits", task="classify", speed=5.0)
