"""export_run: a run directory (config.yaml + best.safetensors) in, model.onnx / model.pt + parity.json out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from export_toys import build

from cnnlstm.engine.rundir import save_weights, weights_path
from cnnlstm.errors import ConfigError
from cnnlstm.export import OnnxPredictor, export_run


def _fake_run(run_dir: Path) -> torch.nn.Module:
    model = build("deep_conv_lstm")
    save_weights(model, weights_path(run_dir))
    config = {"data": {"spec": "npz:x.npz"}, "model": {"name": "deep_conv_lstm"}}  # read_config validates it
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "data_info.json").write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    return model


def test_export_run_writes_models_parity_and_data_info(tmp_path: Path) -> None:
    model = _fake_run(tmp_path)
    reports = export_run(tmp_path, formats=("onnx", "torchscript"))
    out = tmp_path / "export"
    assert [r.path for r in reports] == [out / "model.onnx", out / "model.pt"]
    assert all(r.parity.passed for r in reports)
    assert set(json.loads((out / "parity.json").read_text())) == {"model.onnx", "model.pt"}
    assert json.loads((out / "data_info.json").read_text())["class_names"] == ["a", "b", "c"]
    x = torch.randn(2, 10, 2)
    with torch.no_grad():
        torch.testing.assert_close(OnnxPredictor(out / "model.onnx")(x=x), model(x), rtol=0, atol=1e-5)


def test_export_run_refuses_unknown_formats_and_non_run_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        export_run(tmp_path)
    _fake_run(tmp_path)
    with pytest.raises(ConfigError, match="unknown export format"):
        export_run(tmp_path, formats=("tflite",))
