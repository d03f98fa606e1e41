"""Deployment: ONNX and TorchScript export with automatic parity checks, ONNX Runtime inference, streaming.

Example:
    >>> from cnnlstm import create_model
    >>> from cnnlstm.export import export_onnx, OnnxPredictor
    >>> model = create_model("lstm_fcn", num_classes=3, in_channels=2, hidden_size=8)
    >>> report = export_onnx(model, "out/model.onnx")  # doctest: +SKIP
    >>> print(report.summary())  # doctest: +SKIP
    >>> OnnxPredictor("out/model.onnx")(x=torch.randn(4, 30, 2)).shape  # doctest: +SKIP
"""

from cnnlstm.export.onnx_export import ExportReport, export_onnx
from cnnlstm.export.parity import PARITY_TOLERANCE, ParityReport
from cnnlstm.export.predictor import OnnxPredictor
from cnnlstm.export.run import export_run
from cnnlstm.export.streaming import StreamingSession
from cnnlstm.export.torchscript_export import export_torchscript, load_torchscript
from cnnlstm.layers.padded_lstm import masked_lstm, reverse_padded  # re-exported: the pack-free LSTM export uses

__all__ = [
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
    "export_run",
    "ExportReport",
    "ParityReport",
    "PARITY_TOLERANCE",
    "OnnxPredictor",
    "StreamingSession",
    "masked_lstm",
    "reverse_padded",
]
