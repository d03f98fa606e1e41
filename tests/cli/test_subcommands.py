"""cnnlstm export / predict --onnx / summary / tune: one tiny success and one-line exit-2 errors each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnnlstm.cli import main

TOY = str(Path(__file__).resolve().parents[1] / "engine" / "toy.yaml")
# A registered family on the toy data, so export and the cost report see the full model contract.
LSTM_FCN = ["model.name=lstm_fcn", "model.hidden_size=4", "model.filters=[4,4,4]", "trainer.max_epochs=1"]


def _error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["fit", "--recipe", TOY, "--out", str(out), "--set", *LSTM_FCN]) == 0
    return out


def test_export_then_predict_with_onnx_matches_eager(run: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--format", "onnx", "torchscript", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "model.onnx" in printed and "model.pt" in printed and "parity" in printed.lower()
    series = tmp_path / "new.npz"
    np.savez(series, X=np.random.default_rng(0).normal(size=(3, 12, 2)).astype(np.float32))
    assert main(["predict", "--run", str(run), str(series), "--csv", str(tmp_path / "eager.csv")]) == 0
    assert main(["predict", "--run", str(run), "--onnx", str(tmp_path / "model.onnx"), str(series),
                 "--csv", str(tmp_path / "onnx.csv")]) == 0
    eager = np.loadtxt(tmp_path / "eager.csv", delimiter=",", skiprows=1, usecols=range(2, 6))
    onnx = np.loadtxt(tmp_path / "onnx.csv", delimiter=",", skiprows=1, usecols=range(2, 6))
    np.testing.assert_allclose(onnx, eager, atol=1e-5)
    assert "not a loadable ONNX model" in _error(["predict", "--run", str(run), "--onnx", str(series), str(series)],
                                                  capsys)
    assert "does not exist" in _error(["export", "--run", str(tmp_path / "nowhere")], capsys)


def test_fit_reports_the_generalisation_gap(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["gap/loss"] == pytest.approx(metrics["val/loss"] - metrics["best/train/loss"], abs=1e-6)


def test_summary_prints_the_cost_table(capsys) -> None:
    capsys.readouterr()
    assert main(["summary", "--recipe", TOY, "--set", *LSTM_FCN, "--seq-len", "8", "16"]) == 0
    out = capsys.readouterr().out
    assert "FLOP" in out.upper() and "16" in out
    assert "64x64" in _error(["summary", "--recipe", TOY, "--frame-size", "64by64"], capsys)
    assert "unknown recipe" in _error(["summary", "--recipe", "nope"], capsys)


@pytest.mark.slow
def test_tune_runs_one_trial_and_rejects_bad_input(tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["tune", "--recipe", TOY, "--trials", "1", "--epochs", "1", "--out", str(tmp_path / "t"),
                 "--no-test", "--set", "trainer.enable_progress_bar=false"]) == 0
    assert (tmp_path / "t" / "best.yaml").is_file()
    assert "unknown recipe" in _error(["tune", "--recipe", "nope", "--trials", "1"], capsys)


def test_bench_is_not_a_library_command(capsys) -> None:
    """Benchmarks run from a checkout (``python -m benchmarks``); the installed command has none."""
    assert main(["bench", "accuracy"]) == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err
