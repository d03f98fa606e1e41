"""trainer.logger: csv, tensorboard and mlflow at once; each log read back by its own reader equals metrics.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cnnlstm.engine import fit
from cnnlstm.engine.trainer import make_loggers
from cnnlstm.errors import ConfigError

TOY = str(Path(__file__).with_name("toy.yaml"))


def _last(values: list[tuple[int, float]]) -> float:
    return max(values)[1]  # the value of the highest step


@pytest.mark.slow
def test_three_loggers_hold_the_runs_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard", reason="pip install 'cnnlstm[report]' to test the TensorBoard logger")
    pytest.importorskip("mlflow", reason="pip install 'cnnlstm[report]' to test the MLflow logger")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    result = fit(TOY, out=out, verbose=False, overrides=["trainer.logger=[csv,tensorboard,mlflow]"])
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    keys = ["test/acc", "test/loss", "test/f1"]
    assert result.metrics["test/acc"] == metrics["test/acc"]

    with open(out / "logs" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    for key in keys:
        assert float(next(r[key] for r in rows if r.get(key))) == pytest.approx(metrics[key], rel=1e-6)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "tensorboard")).Reload()
    for key in keys:
        assert _last([(e.step, e.value) for e in events.Scalars(key)]) == pytest.approx(metrics[key], rel=1e-6)
    val_loss = [e.value for e in events.Scalars("val/loss")]  # one point per epoch, as in history.json
    assert val_loss == pytest.approx([h["val/loss"] for h in history], rel=1e-6)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cnnlstm").experiment_id])
    assert run.info.run_name == "run"
    for key in keys:
        assert run.data.metrics[key] == pytest.approx(metrics[key], rel=1e-6)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val/loss")] == pytest.approx(
        [h["val/loss"] for h in history], rel=1e-6)


def test_unknown_logger_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'tensorboard'"):
        make_loggers(["csv", "tensorbord"], tmp_path)
    assert [type(x).__name__ for x in make_loggers(None, tmp_path)] == ["AppendingCSVLogger"]
