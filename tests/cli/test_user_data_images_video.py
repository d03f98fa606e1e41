"""images:DIR and video clips in frames:DIR through the CLI: fit, test, predict and export on files written here.

``predict`` must read a file exactly as the test split read it (same frame sampling, size and mean/std), so the
accuracy of its predictions over the test folder equals the run's ``test/acc``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlstm.cli import main

pytestmark = pytest.mark.slow

FAST = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.batch_size=8"]


def _square(path: Path, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> None:
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)  # dark noise
    top, left = rng.integers(2, size - 14, size=2)
    image[top : top + 12, left : left + 12] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _image_folders(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in (("red", (230, 30, 30)), ("blue", (30, 30, 230))):
        for i in range(per_class):
            _square(root / name / ("nested" if i % 3 == 0 else "") / f"{i:03d}.png", colour, rng)
    return root


def _videos(root: Path, per_class: int, seed: int) -> Path:
    av = pytest.importorskip("av")
    rng = np.random.default_rng(seed)
    for name, step in (("brighter", 20), ("darker", -20)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for c in range(per_class):
            start = int(rng.integers(90, 130))
            with av.open(str(root / name / f"clip{c}.mp4"), mode="w") as out:
                stream = out.add_stream("mpeg4", rate=10)
                stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
                for k in range(8):
                    frame = np.full((32, 32, 3), np.clip(start + step * k, 0, 255), dtype=np.uint8)
                    for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                        out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
    return root


def _predict_accuracy(rows: list[dict[str, str]]) -> float:
    return float(np.mean([Path(r["input"]).parent.name == r["label"] or Path(r["input"]).parts[-3] == r["label"]
                          for r in rows]))


def _check_run(run: Path, test_dir: Path, inputs: list[str], tmp_path: Path, capsys) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["test", "--run", str(run)]) == 0
    assert f"test/acc={metrics['test/acc']:.4f}" in capsys.readouterr().out
    eager, onnx = tmp_path / f"{run.name}_eager.csv", tmp_path / f"{run.name}_onnx.csv"
    assert main(["predict", "--run", str(run), *inputs, "--csv", str(eager)]) == 0
    rows = list(csv.DictReader(eager.open()))
    assert len(rows) == metrics["test_samples"]
    assert _predict_accuracy(rows) == pytest.approx(metrics["test/acc"], abs=1e-6)  # read as the test split was
    assert main(["export", "--run", str(run), "--format", "onnx"]) == 0
    assert main(["predict", "--run", str(run), *inputs, "--csv", str(onnx), "--onnx",
                 str(run / "export" / "model.onnx")]) == 0
    assert [r["label"] for r in csv.DictReader(onnx.open())] == [r["label"] for r in rows]


def test_images_folder_fits_tests_predicts_and_exports(tmp_path: Path, capsys) -> None:
    train = _image_folders(tmp_path / "train", 12, seed=0)
    test = _image_folders(tmp_path / "test", 4, seed=1)
    run = tmp_path / "images_run"
    # No --recipe: images:DIR defaults to the generic `images` recipe.
    assert main(["fit", "--data", f"images:{train}", "--out", str(run), "--set", *FAST,
                 f"data.options={{size: 32, test_dir: '{test}'}}"]) == 0
    info = json.loads((run / "data_info.json").read_text())
    assert info["name"].startswith("images:") and info["num_frames"] == 1
    assert info["normalization"]["mean"] == [0.5, 0.5, 0.5]  # the packaged encoder's own, applied for the user
    # predict takes a folder of images (each one classified) and single image files alike
    folder_inputs = [str(test / "red"), str(test / "blue")]
    nested = sorted(str(p) for p in test.rglob("*.png") if p.parent.name == "nested")
    _check_run(run, test, folder_inputs + nested, tmp_path, capsys)


def test_video_clips_fit_test_predict_and_export(tmp_path: Path, capsys) -> None:
    train = _videos(tmp_path / "train", 6, seed=0)
    test = _videos(tmp_path / "test", 3, seed=1)
    run = tmp_path / "video_run"
    assert main(["fit", "--recipe", "clips", "--data", f"frames:{train}", "--out", str(run), "--set", *FAST,
                 "model.grid_size=4", f"data.options={{num_frames: 4, size: 32, test_dir: '{test}'}}"]) == 0
    assert json.loads((run / "data_info.json").read_text())["num_frames"] == 4
    videos = sorted(str(p) for p in test.rglob("*.mp4"))
    _check_run(run, test, videos, tmp_path, capsys)
    # the test folder itself (class folders of videos): every clip under it, predicted as when named one by one
    whole = tmp_path / "whole.csv"
    assert main(["predict", "--run", str(run), str(test), "--csv", str(whole)]) == 0
    one_by_one = {r["input"]: r["label"] for r in csv.DictReader((tmp_path / "video_run_eager.csv").open())}
    assert {r["input"]: r["label"] for r in csv.DictReader(whole.open())} == one_by_one
