"""OnnxPredictor runs an exported model like the eager one, from the .onnx file alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlstm.errors import ConfigError, ShapeError, WeightsError
from cnnlstm.export import OnnxPredictor


def test_predictor_equals_eager_on_a_padded_batch(onnx_export: Callable) -> None:
    model, report = onnx_export("lstm_fcn")
    predictor = OnnxPredictor(report.path)
    assert predictor.input_names == ("x", "lengths")
    assert predictor.output_kind == "logits"
    assert predictor.model_config["name"] == "lstm_fcn"
    x, lengths = torch.randn(5, 21, 2), torch.tensor([21, 4, 9, 1, 16])
    with torch.no_grad():
        expected = model(x, lengths)
    torch.testing.assert_close(predictor(x=x, lengths=lengths), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(predictor.run(x=x.numpy(), lengths=lengths.numpy()), expected.numpy(), atol=1e-5)


def test_missing_lengths_mean_nothing_is_padded_and_float64_is_accepted(onnx_export: Callable) -> None:
    model, report = onnx_export("deep_conv_lstm")
    predictor = OnnxPredictor(report.path)
    x = np.random.default_rng(0).normal(size=(3, 14, 2))  # float64, as numpy makes it
    with torch.no_grad():
        expected = model(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(predictor.run(x=x), expected, rtol=0, atol=1e-5)
    probs = predictor.predict_proba(x=x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(expected), 1).numpy(), atol=1e-6)


def test_predictor_errors_say_what_to_change(onnx_export: Callable, tmp_path: Path) -> None:
    _, report = onnx_export("crnn")
    predictor = OnnxPredictor(report.path)
    with pytest.raises(ConfigError, match="takes"):
        predictor(images=torch.rand(1, 1, 32, 40))
    with pytest.raises(ShapeError, match="needs input 'x'"):
        predictor()
    with pytest.raises(ConfigError, match="classifiers"):
        predictor.predict_proba(x=torch.rand(1, 1, 32, 40))
    with pytest.raises(WeightsError, match="no ONNX model"):
        OnnxPredictor(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a loadable"):
        OnnxPredictor(tmp_path / "junk.onnx")
