"""Export a finished run (``RUN/config.yaml`` + ``RUN/checkpoints/best.safetensors``): what ``cnnlstm export`` calls."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from cnnlstm.errors import ConfigError
from cnnlstm.export.onnx_export import ExportReport, export_onnx
from cnnlstm.export.torchscript_export import export_torchscript

__all__ = ["export_run", "FORMATS"]

FORMATS = ("onnx", "torchscript")
_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    formats: Sequence[str] = ("onnx",),
    opset: int = 17,
    dynamic_time: bool = True,
) -> list[ExportReport]:
    """Export a run's best model to ``out`` (default ``RUN/export``), each format with its parity check.

    Writes ``model.onnx`` and/or ``model.pt``, ``parity.json``, and a copy of the run's ``data_info.json``
    (class names, normalisation), so ``cnnlstm predict --onnx`` can label and normalise like the run did. An
    ensemble run (``trainer.ensemble``) exports as one graph: its members and the averaging of their
    probabilities (the output is the log of the mean probability, so softmax gives the mean back).

    Args:
        run_dir: a directory written by ``cnnlstm fit``.
        out: output folder.
        formats: any of :data:`FORMATS`.
        opset: ONNX opset (17 or 18).
        dynamic_time: dynamic time axes.

    Returns:
        One :class:`~cnnlstm.export.onnx_export.ExportReport` per format; print ``report.summary()``.

    Example:
        >>> for report in export_run("runs/basic_motions", formats=("onnx", "torchscript")):  # doctest: +SKIP
        ...     print(report.summary())
    """
    # Imported here: cnnlstm.engine pulls in Lightning, which export and inference do not otherwise need.
    from cnnlstm.engine.ensemble import load_run_model
    from cnnlstm.engine.outputs import check_output_dir
    from cnnlstm.engine.rundir import read_config

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"unknown export format(s) {unknown}; use one or more of {FORMATS}")
    run_dir = Path(run_dir)
    config = read_config(run_dir)  # a clear error when this is not a run directory
    out = check_output_dir(out if out is not None else run_dir / "export", flag="--out", allowed_in=run_dir / "export")
    model = load_run_model(run_dir, config)  # an ensemble run: its members and their averaging, one graph
    out.mkdir(parents=True, exist_ok=True)
    if (run_dir / "data_info.json").is_file():
        shutil.copyfile(run_dir / "data_info.json", out / "data_info.json")
    reports = []
    for fmt in formats:
        if fmt == "onnx":
            reports.append(export_onnx(model, out / _FILES[fmt], opset=opset, dynamic_time=dynamic_time))
        else:
            reports.append(export_torchscript(model, out / _FILES[fmt], dynamic_time=dynamic_time))
    return reports
