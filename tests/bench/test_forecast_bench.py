"""The ``forecast`` bench suite: the ConvLSTM forecaster and the copy-last baseline on the same test clips."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import main
from benchmarks.forecast import copy_last, score_forecasts
from cnnlstm.data import load_dataset

#: a tiny moving-digits run: 3 input frames, 2 to predict, 16x16 canvas, one epoch of a 4-channel ConvLSTM
DATA = {"n_train": 8, "n_test": 6, "input_frames": 3, "horizon": 2, "canvas_size": 16, "digit_size": 6}
TINY = ["trainer.max_epochs=1", "model.hidden_size=4", "model.patch_size=4", "data.batch_size=4",
        *(f"data.options.{k}={v}" for k, v in DATA.items())]


def test_forecast_suite_scores_model_and_copy_last_on_the_test_clips(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    status = main(["forecast", "--forecast-seeds", "1", "--forecast-accelerator", "cpu", "--forecast-set", *TINY,
                   "--out", str(out), "--runs", str(runs)])
    assert status == 0
    record = json.loads((out / "forecast.json").read_text())
    (one,) = record["runs"]
    assert one["seed"] == 0 and one["epochs"] == 1 and record["params"] == one["params"] > 0

    # Independent hand computation on the test split the run saw (recipe seed 0): repeat the last input frame.
    test = load_dataset("builtin:moving_digits", seed=0, **DATA).test
    x = torch.stack([test[i]["x"] for i in range(len(test))]).float()  # (N, T, C, H, W)
    y = torch.stack([test[i]["y"] for i in range(len(test))]).float()  # (N, K, C, H, W)
    err = (x[:, -1:] - y) ** 2  # (N, K, C, H, W)
    assert record["copy_last"]["mse"]["mean"] == pytest.approx(err.mean().item(), rel=1e-5)
    assert record["copy_last"]["mae"]["mean"] == pytest.approx((x[:, -1:] - y).abs().mean().item(), rel=1e-5)
    assert record["copy_last"]["mse_by_step"] == pytest.approx(err.mean(dim=(0, 2, 3, 4)).tolist(), rel=1e-5)
    # the engine's own figures for the same weights and clips agree with the suite's
    assert one["engine_test_baseline_mse"] == pytest.approx(one["baseline_mse"], rel=1e-5)
    assert one["engine_test_mse"] == pytest.approx(one["test_mse"], rel=1e-5)
    assert len(record["convlstm"]["mse_by_step"]) == DATA["horizon"]
    assert record["target_met"] == (one["test_mse"] < one["baseline_mse"] and one["test_ssim"] > one["baseline_ssim"])
    table = capsys.readouterr().out
    assert "| copy last frame |" in table and "MSE at step ahead" in table
    assert (out / "forecast.md").read_text().startswith("Machine: ")


def test_a_perfect_forecast_scores_zero_error_and_ssim_one():
    clips = [{"x": torch.rand(3, 1, 12, 12), "y": torch.rand(2, 1, 12, 12)} for _ in range(3)]

    def collate(batch):
        return {"x": torch.stack([c["x"] for c in batch]), "y": torch.stack([c["y"] for c in batch])}

    def oracle(x):  # looks the targets up by clip, batch of 2 then 1
        return torch.stack([next(c["y"] for c in clips if torch.equal(c["x"], xi)) for xi in x])

    scores = score_forecasts(oracle, clips, collate, batch_size=2)
    assert scores["mse"] == pytest.approx(0.0, abs=1e-12) and scores["mae"] == pytest.approx(0.0, abs=1e-12)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert scores["mse_by_step"] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_copy_last_repeats_the_final_frame():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 1, 2, 2)  # (B, T, C, H, W)
    out = copy_last(x, 4)
    assert out.shape == (2, 4, 1, 2, 2)
    for k in range(4):
        assert torch.equal(out[:, k], x[:, 2])
