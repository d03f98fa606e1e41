"""Every bad input through the ``cnnlstm`` command gets one specific line on stderr and exit status 2.

Data faults are given to ``fit`` (the data is checked before any training starts, so these are fast), to
``test --data`` and to ``predict`` on a finished run. Each case checks the exit status, that no traceback was
printed, and that the message names what is wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import TINY_FIT, assert_usage_error, run_cli, tiny_series


def fit_npz(tmp_path: Path, **arrays: np.ndarray) -> list[str]:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return ["fit", "--recipe", "basic_motions", "--data", f"npz:{path}", *TINY_FIT, "--out", str(tmp_path / "run")]


X, Y = tiny_series(12, 0)
XT, YT = tiny_series(6, 1)


def _with(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    out = array.copy()
    out[index] = value
    return out


FIT_CASES = {
    "wrong rank": (dict(X_train=X[..., None], y_train=Y, X_test=XT[..., None], y_test=YT),
                   ["(N, T, F)", "(12, 8, 2, 1)"]),
    "channel count differs": (dict(X_train=X, y_train=Y, X_test=XT[..., :1], y_test=YT), ["channel counts", "[1, 2]"]),
    "nan": (dict(X_train=_with(X, (1, 2, 0), np.nan), y_train=Y, X_test=XT, y_test=YT),
            ["NaN/inf", "sample 1, step 2, channel 0"]),
    "inf": (dict(X_train=X, y_train=Y, X_test=_with(XT, (3, 0, 1), -np.inf), y_test=YT), ["NaN/inf", "(test)"]),
    "empty training set": (dict(X_train=X[:0], y_train=Y[:0], X_test=XT, y_test=YT), ["(train) has no samples"]),
    "single class": (dict(X_train=X, y_train=np.zeros_like(Y), X_test=XT, y_test=np.zeros_like(YT)),
                     ["only class 0", "at least 2 classes"]),
    "test label unseen in training": (dict(X_train=X, y_train=Y, X_test=XT, y_test=YT + 5),
                                      ["test labels 5, 6 never occur in training"]),
    "zero-length sequences": (dict(X_train=X[:, :0], y_train=Y, X_test=XT[:, :0], y_test=YT), ["zero length"]),
    "one zero length among padded series": (dict(X_train=X, y_train=Y, X_test=XT, y_test=YT,
                                                 lengths_train=np.r_[0, [8] * 11], lengths_test=[8] * 6),
                                            ["1 series have zero length", "samples 0"]),
    "object arrays": (dict(X_train=np.array([np.zeros(3), np.zeros(4)], dtype=object), y_train=Y[:2], X_test=XT,
                           y_test=YT), ["Python objects"]),
    "fractional labels": (dict(X_train=X, y_train=Y + 0.5, X_test=XT, y_test=YT), ["non-integer floats"]),
    "label count differs": (dict(X_train=X, y_train=Y[:5], X_test=XT, y_test=YT), ["12 samples but 5 labels"]),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_fit_refuses_bad_npz_data(tmp_path: Path, case: str) -> None:
    arrays, fragments = FIT_CASES[case]
    assert_usage_error(run_cli(fit_npz(tmp_path, **arrays)), *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists(), "training started on data that was refused"


TS_HEADER = b"@problemName T\n@classLabel true a b\n@data\n"


@pytest.mark.parametrize(("body", "fragment"), [
    (b"1,2,3:a\n\xff\xfe,2,1:b\n", "not UTF-8 text (invalid byte at line 5)"),
    (b"1,2,3:a\n4,5,6:b\n7,8", "cut off"),
    (b"", "no series after @data"),
    (b"1,2,3:a\n4,5,6:c\n", "not declared"),
])
def test_fit_refuses_broken_ts_files(tmp_path: Path, body: bytes, fragment: str) -> None:
    (tmp_path / "x_TRAIN.ts").write_bytes(TS_HEADER + body)
    (tmp_path / "x_TEST.ts").write_bytes(TS_HEADER + b"1,2,3:a\n4,5,6:b\n")
    argv = ["fit", "--recipe", "basic_motions", "--data", f"ts:{tmp_path / 'x_TRAIN.ts'}", *TINY_FIT]
    assert_usage_error(run_cli([*argv, "--out", str(tmp_path / "run")]), fragment)


def test_recipe_and_override_faults(tmp_path: Path) -> None:
    assert_usage_error(run_cli(["fit", "--recipe", "basic_motion"]), "unknown recipe", "basic_motions")
    assert_usage_error(run_cli(["fit", "--recipe", str(tmp_path / "missing.yaml")]), "does not exist")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    assert_usage_error(run_cli(["fit", "--recipe", str(tmp_path / "bad.yaml")]), "malformed YAML", "line")
    assert_usage_error(run_cli(["fit", "--recipe", "basic_motions", "--set", "trainer.max_epoch=1"]),
                       "trainer.max_epochs")
    assert_usage_error(run_cli(["fit", "--recipe", "basic_motions", "--set", "optim.lr=fast"]), "optim.lr")
    assert_usage_error(run_cli(["fit", "--recipe", "basic_motions", "--data", "zzz:x"]), "unknown dataset source")
    assert_usage_error(run_cli(["fit", "--recipe", "basic_motions", "--set", "model.name=lstm_fnc"]), "lstm_fcn")


def test_test_command_faults(tiny_run: Path, tmp_path: Path) -> None:
    assert_usage_error(run_cli(["test", "--run", str(tmp_path / "nope")]), "does not exist")
    assert_usage_error(run_cli(["test", "--run", str(tmp_path)]), "no config.yaml")
    path = tmp_path / "three_channels.npz"
    np.savez(path, X_train=X[..., [0, 1, 0]], y_train=Y, X_test=XT[..., [0, 1, 0]], y_test=YT)
    assert_usage_error(run_cli(["test", "--run", str(tiny_run), "--data", f"npz:{path}"]), "F=2", "(4, 8, 3)")
    path = tmp_path / "three_classes.npz"
    np.savez(path, X_train=X, y_train=np.arange(12) % 3, X_test=XT, y_test=np.arange(6) % 3)
    assert_usage_error(run_cli(["test", "--run", str(tiny_run), "--data", f"npz:{path}"]), "3 classes", "predicts 2")


def _predict(run: Path, tmp_path: Path, **arrays: np.ndarray):
    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays)
    return run_cli(["predict", "--run", str(run), str(path)])


def test_predict_good_input_answers(tiny_run: Path, tmp_path: Path) -> None:
    result = _predict(tiny_run, tmp_path, X=XT)
    assert result.code == 0 and len(result.out.splitlines()) == len(XT)


@pytest.mark.parametrize(("arrays", "fragments"), [
    (dict(X=XT[..., :1]), ["F=2", "got (6, 8, 1)"]),
    (dict(X=XT[..., None]), ["(N, T, F) or (N, T)"]),
    (dict(X=_with(XT, (0, 0, 0), np.nan)), ["NaN or inf"]),
    (dict(X=XT, lengths=np.r_[0, [8] * 5]), ["lengths"]),
], ids=["channels", "rank", "nan", "zero length"])
def test_predict_refuses_bad_inputs(tiny_run: Path, tmp_path: Path, arrays: dict, fragments: list[str]) -> None:
    assert_usage_error(_predict(tiny_run, tmp_path, **arrays), *fragments)


def test_predict_refuses_zero_length_series(tiny_run: Path, tmp_path: Path) -> None:
    """(N, 0, F) inputs: the LSTM's own RuntimeError used to escape the CLI as a traceback."""
    assert_usage_error(_predict(tiny_run, tmp_path, X=XT[:, :0]), "zero length")


def test_predict_refuses_a_lengths_array_of_the_wrong_size(tiny_run: Path, tmp_path: Path) -> None:
    """3 lengths for 6 series: ``zip(strict=True)`` used to escape as a raw ValueError."""
    assert_usage_error(_predict(tiny_run, tmp_path, X=XT, lengths=np.array([8, 8, 8])), "lengths")


def test_predict_refuses_lengths_beyond_the_padded_size(tiny_run: Path, tmp_path: Path) -> None:
    """A length of 100 for series padded to 8 is a corrupt file, not a valid request (it was silently used)."""
    assert_usage_error(_predict(tiny_run, tmp_path, X=XT, lengths=np.r_[100, [8] * 5]), "lengths")


def test_predict_refuses_files_it_cannot_read(tiny_run: Path, tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1,2\n")
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(tmp_path / "x.csv")]), ".npz or .ts")
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(tmp_path / "missing.npz")]), "does not exist")
    (tmp_path / "x.ts").write_bytes(TS_HEADER + b"\xff\xfe:a\n")
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(tmp_path / "x.ts")]), "UTF-8")


def test_predict_refuses_an_npz_that_is_not_a_zip(tiny_run: Path, tmp_path: Path) -> None:
    """A corrupt .npz: numpy raises zipfile.BadZipFile, which used to escape the CLI as a traceback."""
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(tmp_path / "x.npz")]), "not a readable")


# -- frames: a folder of clips whose frames have mixed sizes and modes ------------------------------------------
MODES = ("RGB", "L", "RGBA", "P")


def _clip(folder: Path, rng: np.random.Generator, bright: float, sizes: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True)
    for t, (w, h) in enumerate(sizes):
        pixels = (rng.random((h, w, 3)) * 255 * bright).astype(np.uint8)
        Image.fromarray(pixels).convert(MODES[t % len(MODES)]).save(folder / f"frame_{t}.png")


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Fit frame_lstm on clips whose frames differ in size (8..13 px) and mode (RGB, L, RGBA, P)."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for label, bright in (("dark", 0.3), ("light", 1.0)):
        for k in range(4):
            _clip(root / "clips" / label / f"clip{k}", rng, bright, [(8 + k, 8 + 2 * t) for t in range(3)])
    recipe = root / "frames.yaml"
    recipe.write_text(
        f'name: frames_tiny\ndata: {{spec: "frames:{root / "clips"}", batch_size: 2, val_fraction: 0.25,\n'
        "  options: {num_frames: 3, size: 8, test_fraction: 0.25}}\n"
        "model: {name: frame_lstm, hidden_size: 4, encoder_kwargs: {widths: [4, 8]}}\n"
        "trainer: {max_epochs: 1, accelerator: cpu, enable_progress_bar: false}\n")
    result = run_cli(["fit", "--recipe", str(recipe), "--out", str(root / "run")])
    assert result.code == 0, result.err[-2000:]
    return root, recipe


def test_frames_of_mixed_sizes_and_modes_train_and_predict(frames_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = frames_run
    clip = tmp_path / "clip"
    clip.mkdir()
    Image.new("RGB", (20, 9), (200, 10, 10)).save(clip / "0.png")
    Image.new("L", (5, 5), 30).save(clip / "1.png")
    Image.new("RGBA", (9, 9)).save(clip / "2.png")
    result = run_cli(["predict", "--run", str(root / "run"), str(clip)])
    assert result.code == 0, result.err[-1000:]
    assert result.out.split("\t")[1].split()[0] in ("dark", "light")


def test_frames_faults(frames_run: tuple[Path, Path], tmp_path: Path) -> None:
    root, recipe = frames_run
    (tmp_path / "empty").mkdir()
    assert_usage_error(run_cli(["predict", "--run", str(root / "run"), str(tmp_path / "empty")]), "no frame images")
    clip = tmp_path / "clip"
    clip.mkdir()
    Image.new("RGB", (8, 8)).save(clip / "0.png")
    (clip / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert_usage_error(run_cli(["predict", "--run", str(root / "run"), str(clip)]), "1.png", "replace or remove it")
    frame = root / "clips" / "light" / "clip1" / "frame_1.png"
    saved = frame.read_bytes()
    frame.write_bytes(saved[:30])  # a truncated PNG inside the training folder
    try:
        result = run_cli(["fit", "--recipe", str(recipe), "--out", str(tmp_path / "run")])
    finally:
        frame.write_bytes(saved)
    assert_usage_error(result, "frame_1.png", "replace or remove it")
