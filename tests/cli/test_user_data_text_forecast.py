"""text:DIR and forecast:PATH through the CLI on data written to disk: fit, test, predict, export, and the round
trip from the builtin sets (written with their writers) to the in-memory run's exact test metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlstm.cli import main
from cnnlstm.data import write_dataset
from cnnlstm.data.builtin.moving_digits import FORECAST_FILE

pytestmark = pytest.mark.slow

TINY_CRNN = ["trainer.max_epochs=1", "model.hidden_size=8", "model.widths=[4,8,8,8,8,8]", "data.batch_size=8"]
TINY_FORECAST = ["trainer.max_epochs=1", "model.hidden_size=4", "data.batch_size=4"]
CAPTCHA = {"n_train": 24, "n_test": 8}
DIGITS = {"n_train": 12, "n_test": 4, "canvas_size": 16, "digit_size": 8, "input_frames": 4, "horizon": 2,
          "speed": 1.0}


def _flow(options: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in options.items()) + "}"


def _metrics(run: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k.startswith("test/")}


def test_captcha_on_disk_trains_as_the_builtin_and_the_run_tests_predicts_exports(tmp_path: Path, capsys) -> None:
    data = write_dataset("builtin:captcha", tmp_path / "lines", seed=0, **CAPTCHA)
    builtin, ours = tmp_path / "builtin", tmp_path / "ours"
    assert main(["fit", "--recipe", "text_lines", "--data", "builtin:captcha", "--out", str(builtin), "--set",
                 *TINY_CRNN, f"data.options={_flow(CAPTCHA)}"]) == 0
    assert main(["fit", "--recipe", "text_lines", "--data", f"text:{data}", "--out", str(ours), "--set",
                 *TINY_CRNN]) == 0
    assert _metrics(ours) == _metrics(builtin)  # same samples, same order, same charset: the same run

    capsys.readouterr()
    assert main(["test", "--run", str(ours)]) == 0
    assert f"test/cer={_metrics(ours)['test/cer']:.4f}" in capsys.readouterr().out
    # Other data with fewer characters is read with the run's charset (from the run dir), not its own.
    other = write_dataset("builtin:captcha", tmp_path / "other", seed=1, n_train=10, n_test=4, charset="01")
    assert main(["test", "--run", str(ours), "--data", f"text:{other}"]) == 0
    assert "test/cer=" in capsys.readouterr().out
    assert main(["export", "--run", str(ours)]) == 0
    assert "ok" in capsys.readouterr().out.splitlines()[-1]
    # A folder of lines of other widths (predict reads them at the run's height, keeping the aspect ratio).
    (tmp_path / "new").mkdir()
    for i, width in enumerate((100, 60)):
        Image.open(data / "test" / f"{i:06d}.png").resize((width, 32)).save(tmp_path / "new" / f"{i}.png")
    eager, onnx = tmp_path / "eager.csv", tmp_path / "onnx.csv"
    assert main(["predict", "--run", str(ours), str(tmp_path / "new"), "--csv", str(eager)]) == 0
    assert main(["predict", "--run", str(ours), str(tmp_path / "new"), "--csv", str(onnx), "--onnx",
                 str(ours / "export" / "model.onnx")]) == 0
    rows = list(csv.DictReader(eager.open()))
    assert [Path(r["input"]).name for r in rows] == ["0.png", "1.png"]
    assert rows == list(csv.DictReader(onnx.open()))


def test_moving_digits_on_disk_trains_as_the_builtin_and_the_run_predicts_frames(tmp_path: Path, capsys) -> None:
    data = write_dataset("builtin:moving_digits", tmp_path / "digits", seed=0, **DIGITS) / FORECAST_FILE
    builtin, ours = tmp_path / "builtin", tmp_path / "ours"
    assert main(["fit", "--recipe", "forecast", "--data", "builtin:moving_digits", "--out", str(builtin), "--set",
                 *TINY_FORECAST, f"data.options={_flow(DIGITS)}"]) == 0
    assert main(["fit", "--recipe", "forecast", "--data", f"forecast:{data}", "--out", str(ours), "--set",
                 *TINY_FORECAST]) == 0  # 6 frames: the default horizon T // 3 = 2, context 4, as written
    assert _metrics(ours) == _metrics(builtin)

    assert main(["test", "--run", str(ours)]) == 0
    assert main(["export", "--run", str(ours)]) == 0
    capsys.readouterr()
    clips = np.load(data)["test"][:2]  # (2, 6, 16, 16) uint8
    np.save(tmp_path / "new.npy", clips)
    assert main(["predict", "--run", str(ours), str(tmp_path / "new.npy"), "--out", str(tmp_path / "pred")]) == 0
    written = np.load(tmp_path / "pred" / "new_0001.npz")
    np.testing.assert_allclose(written["context"][:, 0], clips[1, 2:] / 255, atol=1e-6)  # the last 4 frames
    assert written["prediction"].shape == (2, 1, 16, 16)
    strip = np.asarray(Image.open(tmp_path / "pred" / "new_0001.png"))
    assert strip.shape == (16, 6 * 16 + 2)  # context | prediction
    # One folder of frame images is one sequence.
    (tmp_path / "seq").mkdir()
    for t, frame in enumerate(clips[0]):
        Image.fromarray(frame).save(tmp_path / "seq" / f"frame_{t:02d}.png")
    assert main(["predict", "--run", str(ours), str(tmp_path / "seq"), "--out", str(tmp_path / "pred2")]) == 0
    from_folder = np.load(tmp_path / "pred2" / "seq.npz")
    np.testing.assert_allclose(from_folder["context"], np.load(tmp_path / "pred" / "new_0000.npz")["context"])
    np.testing.assert_allclose(from_folder["prediction"], np.load(tmp_path / "pred" / "new_0000.npz")["prediction"],
                               atol=1e-6)
    # Nothing is overwritten: the same output folder again is refused before any work.
    capsys.readouterr()
    assert main(["predict", "--run", str(ours), str(tmp_path / "new.npy"), "--out", str(tmp_path / "pred")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
