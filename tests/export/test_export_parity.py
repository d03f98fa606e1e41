"""Every registered model exports to ONNX and TorchScript, and the exported graphs match eager.

The automatic parity check (other batch size, other length, ragged lengths) must pass and be written to
``parity.json``; on top of it, padded ONNX batches are compared with each sequence run alone and unpadded in
eager mode, an independent reference that does not go through the exporter's own check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from export_toys import build, example

import cnnlstm
from cnnlstm.export import export_onnx, export_torchscript, load_torchscript
from cnnlstm.export.parity import ParityReport, check_parity, write_parity
from cnnlstm.export.spec import export_spec

MODELS = cnnlstm.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_matches_eager_on_unseen_sizes(name: str, onnx_export: Callable) -> None:
    _, report = onnx_export(name)
    assert report.parity.passed, report.parity.summary()
    assert report.parity.max_abs_diff <= 1e-4
    traced = report.parity.example_shapes
    for shapes in report.parity.checked_shapes:  # the checks really used other sizes than the trace
        assert shapes != traced
    assert report.parity_path == report.path.parent / "parity.json"
    entry = json.loads(report.parity_path.read_text())[f"{name}.onnx"]
    assert entry["passed"] is True and entry["format"] == "onnx"
    assert entry["max_abs_diff"] == pytest.approx(report.parity.max_abs_diff)


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_export_matches_eager_on_unseen_sizes(name: str, tmp_path: Path) -> None:
    model = build(name)
    path = tmp_path / f"{name}.pt"
    report = export_torchscript(model, path, example_inputs=example(model))
    assert report.parity.passed, report.parity.summary()
    module, meta = load_torchscript(path)
    assert json.loads(meta["cnnlstm_model"])["name"] == name
    assert json.loads((tmp_path / "parity.json").read_text())[f"{name}.pt"]["passed"] is True


def test_exports_in_one_folder_share_one_parity_json(tmp_path: Path) -> None:
    report = ParityReport("onnx", 1e-7, 1e-4, True, {"x": [2, 12, 2]}, [{"x": [3, 17, 2]}])
    write_parity(tmp_path / "m.onnx", report)
    write_parity(tmp_path / "m.pt", ParityReport("torchscript", float("inf"), 1e-4, False, {}, []))
    entries = json.loads((tmp_path / "parity.json").read_text())
    assert entries["m.onnx"] == report.to_dict()
    assert entries["m.pt"]["passed"] is False and entries["m.pt"]["max_abs_diff"] is None  # inf is not JSON


@pytest.mark.parametrize("name", [n for n in MODELS if cnnlstm.models.get_model_class(n).supports_lengths])
def test_onnx_padded_batch_equals_each_sequence_alone(name: str, onnx_export: Callable) -> None:
    model, report = onnx_export(name)
    assert "lengths" in report.input_names
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    inputs = model.example_input(batch_size=3)
    key = "sequence" if "sequence" in inputs else "x"
    axis = 3 if inputs[key].dim() == 4 else 1  # CRNN's text lines: the width is the sequence
    T = inputs[key].shape[axis]
    last = inputs[key].narrow(axis, T - 1, 1)
    inputs[key] = torch.cat([inputs[key], last.repeat_interleave(4, dim=axis)], dim=axis)  # T + 4 steps
    inputs["lengths"] = torch.tensor([T + 4, 2 if axis == 1 else 9, T - 1])
    padded = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    for i, length in enumerate(inputs["lengths"].tolist()):
        alone = {k: v[i : i + 1] for k, v in inputs.items() if k != "lengths"}
        alone[key] = alone[key].narrow(axis, 0, length)
        with torch.no_grad():
            expected = model(**alone).numpy()
        got = padded[i : i + 1, : expected.shape[1]] if model.output_kind == "sequence_logits" else padded[i : i + 1]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_crnn_exports_a_dynamic_width(onnx_export: Callable) -> None:
    model, report = onnx_export("crnn")
    assert report.dynamic_axes["x"] == {0: "batch", 3: "time"}
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 1, 32, 64)
    out = session.run(None, {"x": x.numpy(), "lengths": np.array([64])})[0]  # the graph takes pixel widths
    assert out.shape == (1, 16, 5)  # W // 4 columns
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=0, atol=1e-5)


def test_captioner_keeps_a_static_caption_length_and_says_why(onnx_export: Callable) -> None:
    _, report = onnx_export("captioner")
    assert 1 not in report.dynamic_axes["captions"]
    assert any("unrolls" in note for note in report.notes)
    assert report.parity.passed


def test_parity_check_fails_when_the_exported_model_differs() -> None:
    model = build("lstm_fcn")
    inputs = model.example_input(batch_size=2)
    spec = export_spec(model, inputs)

    def off_by_a_little(batch: dict) -> torch.Tensor:
        return model(**batch) + 1e-3

    report = check_parity(model, off_by_a_little, inputs, spec, "onnx")
    assert not report.passed and report.max_abs_diff == pytest.approx(1e-3, rel=1e-3)

    def frozen_length(batch: dict) -> torch.Tensor:  # what an unrolled time loop would give
        return model(x=batch["x"][:, :12], lengths=batch["lengths"].clamp(max=12))

    assert not check_parity(model, frozen_length, inputs, spec, "onnx").passed


def test_export_leaves_the_callers_model_alone(tmp_path: Path) -> None:
    model = build("frame_lstm").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_torchscript(model, tmp_path / "m.pt")
    assert model.training
    assert type(model.rnn).__name__ == "SequenceLSTM"
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_bad_arguments_raise_config_errors(tmp_path: Path) -> None:
    model = build("lstm_fcn")
    with pytest.raises(cnnlstm.ConfigError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=11)
    flat = {"x": torch.randn(2, 5, 2), "lengths": torch.tensor([5, 5])}
    with pytest.raises(cnnlstm.ConfigError, match="ragged"):
        export_onnx(model, tmp_path / "m.onnx", example_inputs=flat)


@pytest.mark.parametrize("mode", ["grid", "conv_lstm", "attention"])
def test_frame_lstm_grid_modes_export_with_parity(mode: str, tmp_path: Path) -> None:
    model = build("frame_lstm", frame_features=mode, feature_stage=0, grid_size=4, pooling="mean",
                  frame_difference=True)
    inputs = example(model)
    report = export_onnx(model, tmp_path / "m.onnx", example_inputs=inputs)
    assert report.parity.passed, report.parity.summary()
    # Independent of the exporter's own check: a padded batch in ONNX equals each clip alone in eager mode.
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 5, 3, 32, 32)
    lengths = torch.tensor([5, 2, 4])
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 0.0
    onnx_out = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})[0]
    with torch.no_grad():
        for b, n in enumerate(lengths.tolist()):
            np.testing.assert_allclose(onnx_out[b], model(x[b : b + 1, :n])[0].numpy(), atol=1e-4, rtol=0)
    ts = export_torchscript(model, tmp_path / "m.pt", example_inputs=inputs)
    assert ts.parity.passed, ts.parity.summary()


def test_multi_input_conditioned_on_the_question_exports_with_parity(tmp_path: Path) -> None:
    # Question-picked input masks, a modulated first stage and film's locate-then-relate: every question-dependent
    # path of the vqa recipe's members in one graph.
    model = build("multi_input", fusion="film", fusion_kwargs={"pool": "max_mean", "relate": True},
                  condition_stages=1, condition_input=2, image_size=16)
    for name, p in model.named_parameters():  # the zero-initialised question paths must carry weight here
        if name.startswith(("input_film", "stage_film")):
            torch.nn.init.normal_(p, std=0.3)
    inputs = example(model)
    report = export_onnx(model, tmp_path / "m.onnx", example_inputs=inputs)
    assert report.parity.passed, report.parity.summary()
    ts = export_torchscript(model, tmp_path / "m.pt", example_inputs=inputs)
    assert ts.parity.passed, ts.parity.summary()
