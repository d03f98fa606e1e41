"""Export a registered model to ONNX with dynamic batch and time axes, then check parity with onnxruntime.

Exporter choice (torch 2.14). ``torch.onnx.export(dynamo=True)``, the default, needs the ``onnxscript``
package, which cnnlstm does not depend on, and lowers ``nn.LSTM`` through ``torch.export``, where
data-dependent lengths and Python time loops need hand-written dynamic-shape specs per model. The
TorchScript-based exporter (``dynamo=False``) maps ``nn.LSTM`` to ONNX's fused ``LSTM`` op with a dynamic
sequence axis and exports scripted loops as ``Loop``; with the layers' own trace paths (masks instead of
packing, a scripted ConvLSTM loop; see :mod:`cnnlstm.export.tracing`) and :mod:`cnnlstm.export.onnx_symbolics`, every
registered model exports with dynamic axes and matches eager within 1e-4. So this module uses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError
from cnnlstm.export.onnx_symbolics import dynamic_shape_symbolics
from cnnlstm.export.parity import ParityReport, check_parity, write_parity
from cnnlstm.export.spec import ExportSpec, export_spec
from cnnlstm.export.tracing import ExportWrapper, exportable_copy, tracing_quietly

__all__ = ["ExportReport", "export_onnx", "model_metadata", "prepare_export"]

OPSETS = (17, 18)


@dataclass
class ExportReport:
    """What an export wrote and how well it matches the eager model.

    Attributes:
        path: the exported file.
        format: ``"onnx"`` or ``"torchscript"``.
        input_names: graph inputs in order.
        output_names: graph outputs.
        dynamic_axes: ``{name: {axis: label}}``.
        parity: the automatic parity check (also in ``parity.json`` beside ``path``).
        parity_path: where the parity JSON was written.
        opset: ONNX opset (``None`` for TorchScript).
        notes: caveats (e.g. an axis that stays static, and why).
    """

    path: Path
    format: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    parity: ParityReport
    parity_path: Path
    opset: int | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the CLI: what was written and the parity verdict."""
        lines = [f"wrote {self.path} ({self.format}, inputs {', '.join(self.input_names)})", self.parity.summary()]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def model_metadata(model: nn.Module, spec: ExportSpec) -> dict[str, str]:
    """String metadata stored in the exported file so a predictor needs nothing else.

    Example:
        >>> model_metadata(model, spec)["cnnlstm_input_names"]  # doctest: +SKIP
        '["x", "lengths"]'
    """
    config: dict[str, Any] = {"name": getattr(model, "model_name", type(model).__name__)}
    config["kwargs"] = getattr(model, "model_kwargs", {})
    return {
        "cnnlstm_model": json.dumps(config, default=str),
        "cnnlstm_input_names": json.dumps(list(spec.input_names)),
        "cnnlstm_output_kind": str(model.output_kind),
    }


def _example(model: nn.Module, example_inputs: dict[str, Tensor] | None) -> dict[str, Tensor]:
    example = model.example_input(batch_size=2) if example_inputs is None else dict(example_inputs)
    unknown = set(example) - set(model.input_names)
    if unknown:
        raise ConfigError(f"example_inputs has keys {sorted(unknown)}; the model takes {model.input_names}")
    if "lengths" in example and len(set(example["lengths"].tolist())) < 2:
        # A ragged example makes tracing take (and keep) the padding-aware path, e.g. TimeDistributed's gather.
        raise ConfigError("example_inputs['lengths'] must be ragged (unequal), so the padded path is exported")
    return example


def prepare_export(
    model: nn.Module, example_inputs: dict[str, Tensor] | None, dynamic_time: bool
) -> tuple[dict[str, Tensor], ExportSpec, ExportWrapper, tuple[Tensor, ...]]:
    """What both exporters trace: the example inputs, the export spec, a pack-free wrapper and its arguments.

    Args:
        model: the eager model (in eval mode).
        example_inputs: keyword inputs to trace with, or ``None`` for ``model.example_input()``.
        dynamic_time: whether the time axis stays dynamic in the exported graph.
    """
    example = _example(model, example_inputs)
    spec = export_spec(model, example, dynamic_time)
    wrapper = ExportWrapper(exportable_copy(model), spec.input_names)
    return example, spec, wrapper, tuple(example[k] for k in spec.input_names)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example_inputs: dict[str, Tensor] | None = None,
    opset: int = 17,
    dynamic_time: bool = True,
) -> ExportReport:
    """Export ``model`` to ONNX and check it against eager with onnxruntime on inputs of other sizes.

    The graph takes ``model.input_names`` (with ``lengths`` as an int64 input for models that have it; masks
    realise the padding, no ``PackedSequence``) and returns ``output``. Batch is dynamic; time (CRNN: width)
    too, unless ``dynamic_time=False`` or the model cannot (see :data:`~cnnlstm.export.spec.STATIC_TIME`).
    The caller's model is not modified.

    Args:
        model: a registered model (its weights are exported in eval mode).
        path: the ``.onnx`` file to write; ``parity.json`` goes beside it.
        example_inputs: keyword inputs to trace with (default ``model.example_input(2)``); ``lengths``, if
            present, must be ragged.
        opset: ONNX opset, 17 or 18.
        dynamic_time: dynamic time axes.

    Returns:
        The :class:`ExportReport`; check ``report.parity.passed``.

    Example:
        >>> from cnnlstm import create_model
        >>> m = create_model("lstm_fcn", num_classes=3, in_channels=2, hidden_size=8)
        >>> export_onnx(m, "/tmp/cnnlstm-doctest/lstm_fcn.onnx").parity.passed  # doctest: +SKIP
        True
    """
    import onnx
    import onnxruntime as ort

    if opset not in OPSETS:
        raise ConfigError(f"export_onnx supports opset {OPSETS[0]} or {OPSETS[1]}, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        example, spec, wrapper, args = prepare_export(model, example_inputs, dynamic_time)
        with tracing_quietly(), dynamic_shape_symbolics(opset), torch.no_grad():
            torch.onnx.export(
                wrapper, args, str(path), dynamo=False, opset_version=opset, input_names=list(spec.input_names),
                output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes, do_constant_folding=True,
            )
        proto = onnx.load(str(path))
        for key, value in model_metadata(model, spec).items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(inputs: dict[str, Tensor]) -> Any:
            return session.run(None, {k: inputs[k].numpy() for k in spec.input_names})[0]

        parity = check_parity(model, run, example, spec, "onnx")
    finally:
        model.train(was_training)
    return ExportReport(
        path=path, format="onnx", input_names=spec.input_names, output_names=spec.output_names,
        dynamic_axes=spec.dynamic_axes, parity=parity, parity_path=write_parity(path, parity), opset=opset,
        notes=spec.notes,
    )
