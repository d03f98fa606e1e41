"""Export a registered model to TorchScript (``torch.jit.trace``) and check parity on inputs of other sizes.

Tracing, not scripting: the models' eager code (keyword inputs, helpful error messages, optional arguments)
is not TorchScript, and should not have to be. The layers' own trace paths (as for ONNX) make the trace
shape-generic: masks instead of packing, and a scripted ConvLSTM loop that survives tracing. The model's
registry name and kwargs, its input names and output kind travel in the archive's ``extra_files``
(``cnnlstm.json``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from cnnlstm.errors import WeightsError
from cnnlstm.export.onnx_export import ExportReport, model_metadata, prepare_export
from cnnlstm.export.parity import check_parity, write_parity
from cnnlstm.export.tracing import tracing_quietly

__all__ = ["export_torchscript", "load_torchscript"]

EXTRA_FILE = "cnnlstm.json"


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    *,
    example_inputs: dict[str, Tensor] | None = None,
    dynamic_time: bool = True,
) -> ExportReport:
    """Trace ``model`` to a TorchScript archive and check it against eager on inputs of other sizes.

    The traced module takes the inputs positionally in ``report.input_names`` order. The caller's model is
    not modified.

    Args:
        model: a registered model (exported in eval mode).
        path: the ``.pt`` file to write; ``parity.json`` goes beside it.
        example_inputs: keyword inputs to trace with (default ``model.example_input(2)``).
        dynamic_time: check parity on another length too (a model in
            :data:`~cnnlstm.export.spec.STATIC_TIME` is checked on its traced length only).

    Returns:
        The :class:`~cnnlstm.export.onnx_export.ExportReport`.

    Example:
        >>> from cnnlstm import create_model
        >>> m = create_model("deep_conv_lstm", num_classes=3, in_channels=2, hidden_size=8)
        >>> export_torchscript(m, "/tmp/cnnlstm-doctest/dcl.pt").parity.passed  # doctest: +SKIP
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        example, spec, wrapper, args = prepare_export(model, example_inputs, dynamic_time)
        with tracing_quietly(), torch.no_grad():
            # check_trace re-runs the trace on the same inputs only; the parity check below is the stronger test.
            traced = torch.jit.trace(wrapper, args, check_trace=False)
        extra = {EXTRA_FILE: json.dumps(model_metadata(model, spec))}
        with tracing_quietly():
            torch.jit.save(traced, str(path), _extra_files=extra)
        loaded, _ = load_torchscript(path)

        def run(inputs: dict[str, Tensor]) -> Tensor:
            with torch.no_grad():
                return loaded(*(inputs[k] for k in spec.input_names))

        parity = check_parity(model, run, example, spec, "torchscript")
    finally:
        model.train(was_training)
    return ExportReport(
        path=path, format="torchscript", input_names=spec.input_names, output_names=spec.output_names,
        dynamic_axes=spec.dynamic_axes, parity=parity, parity_path=write_parity(path, parity), notes=spec.notes,
    )


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load an archive written by :func:`export_torchscript` with its cnnlstm metadata.

    An archive is TorchScript code: load only archives you exported. A file that is not an archive (a
    pickle, a truncated download) is refused before anything in it runs.

    Args:
        path: the ``.pt`` archive.

    Raises:
        WeightsError: the file is missing, not a TorchScript archive, or its metadata is not JSON.

    Returns:
        ``(module, metadata)``; ``json.loads(metadata["cnnlstm_input_names"])`` gives the input order.

    Example:
        >>> module, meta = load_torchscript("model.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no TorchScript archive at {path}; check the path")
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as exc:  # not an archive (a pickle, a truncated file, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path} is not a TorchScript archive written by export_torchscript ({first})") from None
    try:
        metadata = json.loads(extra[EXTRA_FILE] or "{}")
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: its {EXTRA_FILE} metadata is not JSON; re-export the model") from None
    return module.eval(), metadata
