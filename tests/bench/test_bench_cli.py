"""Smoke tests of ``python -m benchmarks`` and the pieces its numbers rest on (padding, summaries, loop reference)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import build_parser, main
from benchmarks.minirocket import to_aeon_array
from benchmarks.published import best_published
from benchmarks.runs import summarize
from benchmarks.speed_frames import per_frame_loop
from benchmarks.speed_lstm_fcn import PlainLSTMFCN
from benchmarks.timing import interleaved
from cnnlstm import create_model
from cnnlstm.engine.rundir import read_config


@pytest.mark.slow
def test_accuracy_cli_one_seed_one_epoch_writes_table_and_json(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    status = main(["accuracy", "--data", "ucr:ItalyPowerDemand", "--seeds", "1", "--no-minirocket",
                   "--set", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                   "--out", str(out), "--runs", str(runs)])
    assert status == 0
    record = json.loads((out / "accuracy.json").read_text())
    entry = record["datasets"]["ItalyPowerDemand"]
    assert (entry["train"], entry["test"]) == (67, 1029)
    for method in ("ours", "ours_shuffle"):
        (run,) = entry[method]["runs"]
        assert run["seed"] == 0
        # the test accuracy of this method's own run (fit's record), over the 1029 test series
        run_dir = runs / "accuracy" / "ItalyPowerDemand" / ("ours" if method == "ours" else "shuffle") / "seed0"
        # the recipe's model section (member 0 of its ensemble) took the overrides: one epoch, shuffle or not
        member = json.loads((run_dir / "members" / "0" / "metrics.json").read_text())
        assert member["epochs"] == 1
        assert read_config(run_dir / "members" / "0")["model"].get("shuffle", False) == (method == "ours_shuffle")
        assert run["test_acc"] == json.loads((run_dir / "metrics.json").read_text())["test/acc"]
        assert run["test_acc"] * 1029 == pytest.approx(round(run["test_acc"] * 1029), abs=1e-3)
        assert entry[method]["mean"] == pytest.approx(run["test_acc"], abs=1e-4)
    assert entry["best_published"] == 0.970
    assert record["machine"]["command"].startswith("python -m benchmarks accuracy")
    table = capsys.readouterr().out
    assert "ItalyPowerDemand (67/1029)" in table and "MiniRocket" in table
    assert (out / "accuracy.md").read_text().startswith("Machine: ")
    assert (runs / "accuracy" / "ItalyPowerDemand" / "ours" / "seed0" / "metrics.json").is_file()


def test_unknown_dataset_is_one_line_exit_2(tmp_path, capsys):
    status = main(["accuracy", "--data", "ucr:GunPointt", "--seeds", "1", "--no-minirocket", "--variants", "default",
                   "--out", str(tmp_path), "--runs", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m benchmarks: error:")


def test_to_aeon_array_pads_at_the_end_channels_first():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)  # (T=3, F=2)
    b = np.ones((1, 2), dtype=np.float32)
    out = to_aeon_array([a, b], 4)
    assert out.shape == (2, 2, 4)
    np.testing.assert_array_equal(out[0], [[0, 2, 4, 0], [1, 3, 5, 0]])
    np.testing.assert_array_equal(out[1], [[1, 0, 0, 0], [1, 0, 0, 0]])


def test_summarize_matches_statistics():
    runs = [{"test_acc": v, "fit_seconds": s} for v, s in ((0.9, 3.0), (0.95, 1.0), (1.0, 2.0))]
    summary = summarize(runs)
    assert summary["mean"] == pytest.approx(0.95)
    assert summary["std"] == pytest.approx(statistics.stdev([0.9, 0.95, 1.0]), abs=1e-4)
    assert summary["fit_seconds_median"] == 2.0
    assert summarize(runs[:1])["std"] == 0.0


def test_interleaved_runs_paths_in_turn():
    calls = []
    result = interleaved({"a": lambda: calls.append("a") or 3.0, "b": lambda: calls.append("b") or 1.0}, 2)
    assert calls == ["a", "b", "a", "b"]
    assert result["a"]["median"] == 3.0 and result["b"]["rates"] == [1.0, 1.0]


def test_best_published_leaves_out_test_chosen_results():
    assert best_published("JapaneseVowels") == 0.993  # not the LSTM-FCN 0.99† chosen on test
    assert best_published("NoSuchSet") is None


def test_per_frame_loop_equals_the_folded_model():
    torch.manual_seed(0)
    model = create_model("frame_lstm", num_classes=3, encoder_kwargs={"widths": (4, 8)}, hidden_size=5).eval()
    x = torch.rand(2, 3, 3, 32, 32)  # (B, T, C, H, W)
    torch.testing.assert_close(per_frame_loop(model, x), model(x))


def test_plain_lstm_fcn_matches_the_reference_architecture():
    plain = PlainLSTMFCN(6, 4)
    ours = create_model("lstm_fcn", num_classes=4, in_channels=6)
    convs = [m for m in plain.fcn if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(128, 8), (256, 5), (128, 3)]
    assert plain.lstm.hidden_size == ours.lstm.hidden_size == 128
    # same architecture up to the conv biases cnnlstm drops (BatchNorm follows each conv)
    bias = sum(c.bias.numel() for c in convs)
    n_plain, n_ours = (sum(p.numel() for p in m.parameters()) for m in (plain, ours))
    assert n_plain - bias == n_ours


def test_same_settings_ignores_grown_schema_keys_only():
    from benchmarks.runs import _same_settings

    old = {"optim": {"lr": 0.003}, "seed": 1}
    assert _same_settings(old, {"optim": {"lr": 0.003, "swa": None}, "seed": 1})  # a key added later
    assert not _same_settings(old, {"optim": {"lr": 0.001}, "seed": 1})
    assert not _same_settings(old, {"optim": {"lr": 0.003}, "seed": 2})


def test_collect_without_finished_runs_reports_not_measured(tmp_path):
    from benchmarks.accuracy import accuracy_markdown, run_accuracy

    record = run_accuracy(["ucr:ItalyPowerDemand"], [0, 1], out=tmp_path, minirocket=False, train=False,
                          log=lambda line: None)
    entry = record["datasets"]["ItalyPowerDemand"]
    assert entry["ours"]["runs"] == [] and entry["ours"]["mean"] is None
    assert record["means"] == {}  # no mean over datasets from missing seeds
    assert "not measured" in accuracy_markdown(record)
    assert not any(tmp_path.iterdir())  # nothing was trained


def test_default_folders_are_the_repository_s_not_the_working_directory(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[2]  # tests/bench/ -> the checkout
    monkeypatch.chdir(tmp_path)
    for suite in ("charts", "all"):
        args = build_parser().parse_args([suite])
        assert Path(args.out) == repo / "benchmarks" / "results" and Path(args.img) == repo / "docs" / "img"
        assert Path(args.runs) == repo / "runs" / "bench"
    assert (repo / "benchmarks" / "results" / "accuracy.json").is_file()  # the records docs/benchmarks.md quotes


def test_python_m_benchmarks_from_another_folder_lists_every_suite(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "benchmarks", "-h"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python -m benchmarks")
    for suite in ("accuracy", "digits", "speed", "crnn", "clevr", "forecast", "captions", "gpu", "charts", "all"):
        assert f"    {suite} " in result.stdout, suite


def test_bad_seed_count_and_broken_records_are_one_line_exit_2(tmp_path, capsys):
    status = main(["accuracy", "--seeds", "0", "--out", str(tmp_path / "b"), "--runs", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and "--seeds must be >= 1" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    for text, fragment in (("{broken", "is not valid JSON"), ('{"a": 1}', "not a complete accuracy benchmark"),
                           ("[1, 2]", "holds a JSON list")):
        (tmp_path / "accuracy.json").write_text(text)
        status = main(["charts", "--out", str(tmp_path), "--img", str(tmp_path / "img")])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and f"{tmp_path / 'accuracy.json'}" in line and fragment in line


def test_img_under_a_file_is_refused_before_any_chart(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    status = main(["charts", "--out", str(tmp_path), "--img", str(tmp_path / "a_file" / "img")])
    err = capsys.readouterr().err
    assert status == 2 and "--img" in err and "is a file, not a folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
