"""forecast:PATH: sequences from .npy/.npz (N-first or Moving MNIST's T-first) or frame folders, exact round trip."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlstm.cli import main
from cnnlstm.data import load_dataset, write_dataset
from cnnlstm.data.builtin.moving_digits import FORECAST_FILE

SMALL_DIGITS = dict(n_train=6, n_test=3, canvas_size=16, digit_size=8, input_frames=4, horizon=2, speed=1.0)


def _clips(n: int = 10, steps: int = 6, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, steps, size, size), dtype=np.uint8)


def _all(dataset, key: str) -> torch.Tensor:
    return torch.stack([dataset[i][key] for i in range(len(dataset))])


def test_context_and_horizon_cut_each_sequence(tmp_path: Path) -> None:
    clips = _clips(n=5)
    np.save(tmp_path / "train.npy", clips)
    np.save(tmp_path / "test.npy", clips[:2])
    bundle = load_dataset(f"forecast:{tmp_path / 'train.npy'}", context=3, horizon=2, test="test.npy")
    assert bundle.kind == "forecast" and len(bundle.train) == 5 and len(bundle.test) == 2
    assert bundle.info.model_kwargs == {"in_channels": 1, "horizon": 2, "image_size": (8, 8)}
    sample = bundle.train[4]
    np.testing.assert_array_equal(sample["x"].numpy(), clips[4, :3, None] / np.float32(255))
    np.testing.assert_array_equal(sample["y"].numpy(), clips[4, 3:5, None] / np.float32(255))
    defaults = load_dataset(f"forecast:{tmp_path / 'train.npy'}", test="test.npy")  # T=6: horizon 2, context 4
    assert defaults.train[0]["x"].shape == (4, 1, 8, 8) and defaults.train[0]["y"].shape == (2, 1, 8, 8)


def test_moving_mnist_layout_floats_and_channels_read_alike(tmp_path: Path) -> None:
    clips = _clips(n=10)
    np.save(tmp_path / "tnhw.npy", clips.transpose(1, 0, 2, 3))  # Moving MNIST's (T, N, H, W)
    np.savez(tmp_path / "floats.npz", train=(clips / 255.0)[:, :, None])  # (N, T, C, H, W) floats
    a = load_dataset(f"forecast:{tmp_path / 'tnhw.npy'}", layout="TNHW", seed=3)
    b = load_dataset(f"forecast:{tmp_path / 'floats.npz'}", seed=3)
    torch.testing.assert_close(_all(a.test, "y"), _all(b.test, "y"), rtol=0, atol=1e-6)
    assert len(a.test) == 2 and len(a.train) == 8


def test_the_test_split_takes_whole_sequences_seeded(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", _clips(n=10))
    one, two, other = (load_dataset(f"forecast:{tmp_path / 's.npy'}", seed=s) for s in (0, 0, 1))

    def keys(ds) -> set[bytes]:
        return {ds[i]["x"].mul(255).round().to(torch.uint8).numpy().tobytes() for i in range(len(ds))}

    assert keys(one.test) == keys(two.test) != keys(other.test)
    assert len(one.test) == 2 and not keys(one.test) & keys(one.train)
    assert len(keys(one.test) | keys(one.train)) == 10


def test_a_folder_of_sequence_folders_reads_as_the_array(tmp_path: Path) -> None:
    clips = _clips(n=4, steps=5)
    for n, clip in enumerate(clips):
        for t, frame in enumerate(clip):
            (tmp_path / "seqs" / f"seq{n}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(tmp_path / "seqs" / f"seq{n}" / f"frame_{t}.png")  # frame_10 sorts last
    np.save(tmp_path / "same.npy", clips)
    a = load_dataset(f"forecast:{tmp_path / 'seqs'}", context=3, horizon=2, test_fraction=0.25)
    b = load_dataset(f"forecast:{tmp_path / 'same.npy'}", context=3, horizon=2, test_fraction=0.25)
    torch.testing.assert_close(_all(a.train, "x"), _all(b.train, "x"), rtol=0, atol=0)
    torch.testing.assert_close(_all(a.test, "y"), _all(b.test, "y"), rtol=0, atol=0)


def test_moving_digits_written_as_npz_reads_back_sample_for_sample(tmp_path: Path) -> None:
    path = write_dataset("builtin:moving_digits", tmp_path / "digits", seed=2, **SMALL_DIGITS) / FORECAST_FILE
    builtin = load_dataset("builtin:moving_digits", seed=2, **SMALL_DIGITS)
    ours = load_dataset(f"forecast:{path}", context=4)
    for mine, theirs in ((ours.train, builtin.train), (ours.test, builtin.test)):
        for key in ("x", "y"):
            torch.testing.assert_close(_all(mine, key), _all(theirs, key), rtol=0, atol=0)
    with pytest.raises(Exception, match="already exists"):
        write_dataset("builtin:moving_digits", path.parent, **SMALL_DIGITS)


# --- bad input: exit 2, one line naming the file -----------------------------------------------------------


def _fit_error(spec: str, tmp_path: Path, capsys, *options: str) -> str:
    capsys.readouterr()
    argv = ["fit", "--recipe", "forecast", "--data", spec, "--out", str(tmp_path / "run"), "--set", *options]
    assert main(argv if options else argv[:-1]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((4, 6, 8), np.uint8), r"shape \(4, 6, 8\); expected \(N, T, H, W\) or \(N, T, C, H, W\)"),
        (np.zeros((4, 6, 8, 8), np.int16), r"dtype int16; store uint8 pixels"),
        (np.full((4, 6, 8, 8), np.nan, np.float32), r"NaN or inf \(first in sequence 0\)"),
        (np.full((4, 6, 8, 8), 2.0, np.float32), r"floats span \[2, 2\]; scale frames to \[0, 1\]"),
    ],
    ids=["rank", "dtype", "nan", "range"],
)
def test_bad_arrays_are_one_line_naming_the_file(array: np.ndarray, fragment: str, tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "bad.npy", array)
    before = hashlib.sha256((tmp_path / "bad.npy").read_bytes()).hexdigest()
    err = _fit_error(f"forecast:{tmp_path / 'bad.npy'}", tmp_path, capsys)
    assert "bad.npy" in err and re.search(fragment, err), err
    assert hashlib.sha256((tmp_path / "bad.npy").read_bytes()).hexdigest() == before


def test_context_plus_horizon_longer_than_the_sequences(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "s.npy", _clips(n=4, steps=6))
    err = _fit_error(f"forecast:{tmp_path / 's.npy'}", tmp_path, capsys, "data.options.context=5",
                     "data.options.horizon=2")
    assert "context + horizon = 5 + 2 frames, but the sequences have 6" in err


def test_wrong_layout_rank_is_named(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "s.npy", _clips(n=4)[:, :, None])
    err = _fit_error(f"forecast:{tmp_path / 's.npy'}", tmp_path, capsys, "data.options.layout=TNHW")
    assert "expected 4-D TNHW" in err
