"""A resumed run continues Lightning's CSV log instead of deleting it."""

import csv

from lightning.pytorch.loggers import CSVLogger

from cnnlstm.engine.trainer import AppendingCSVLogger


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _log(logger_cls, tmp_path, rows):
    logger = logger_cls(save_dir=str(tmp_path), name="logs", version="")
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()
    return tmp_path / "logs" / "metrics.csv"


def test_second_writer_appends_to_the_first_runs_rows(tmp_path):
    _log(AppendingCSVLogger, tmp_path, [(0, {"train/loss": 1.0}), (1, {"train/loss": 0.5})])
    path = _log(AppendingCSVLogger, tmp_path, [(2, {"train/loss": 0.25, "val/loss": 0.3})])
    rows = _rows(path)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["train/loss"] == "1.0" and rows[2]["val/loss"] == "0.3"


def test_lightning_own_logger_would_have_lost_them(tmp_path):
    # The reason for AppendingCSVLogger: Lightning's writer deletes an existing metrics.csv.
    _log(CSVLogger, tmp_path, [(0, {"train/loss": 1.0})])
    path = _log(CSVLogger, tmp_path, [(1, {"train/loss": 0.5})])
    assert [r["step"] for r in _rows(path)] == ["1"]
