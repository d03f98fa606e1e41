"""Export rewrites: an eval-mode copy of a model whose every path traces into a dynamic, exportable graph.

Two things in cnnlstm's eager models do not survive tracing with dynamic shapes, and both are replaced on a
*copy* (the caller's model is never touched), keeping parameters and results:

- packed LSTMs (``pack_padded_sequence`` does not export): :class:`~cnnlstm.layers.recurrent.SequenceLSTM`
  becomes :class:`PackFreeSequenceLSTM`, and the series models' ``final_hidden`` helper is routed to
  :func:`~cnnlstm.export.masked_rnn.masked_lstm` while tracing (:func:`pack_free_final_hidden`);
- Python time loops of :class:`~cnnlstm.layers.conv_lstm.ConvLSTM` (unrolled by tracing, which fixes ``T``)
  become a scripted loop (:class:`~cnnlstm.export.conv_lstm_scan.ScanConvLSTM`).
"""

from __future__ import annotations

import contextlib
import copy
import sys
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from cnnlstm.export.conv_lstm_scan import ScanConvLSTM
from cnnlstm.export.masked_rnn import masked_lstm
from cnnlstm.layers.conv_lstm import ConvLSTM
from cnnlstm.layers.masking import check_lengths
from cnnlstm.layers.recurrent import SequenceLSTM
from cnnlstm.models import _lstm_state

__all__ = ["PackFreeSequenceLSTM", "exportable_copy", "pack_free_final_hidden", "ExportWrapper", "tracing_quietly"]


class PackFreeSequenceLSTM(SequenceLSTM):
    """``SequenceLSTM`` whose padded path uses :func:`masked_lstm` instead of packing (eval semantics).

    Shape:
        - as :class:`~cnnlstm.layers.recurrent.SequenceLSTM`: x ``(B, T, F)``, lengths ``(B,)``;
          ``forward_sequence`` returns ``(B, T, out_features)`` and ``(B, out_features)``.

    Example:
        >>> lstm = SequenceLSTM(3, 4).eval()
        >>> x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
        >>> expected = lstm(x, lengths)
        >>> lstm.__class__ = PackFreeSequenceLSTM
        >>> torch.allclose(lstm(x, lengths), expected, atol=1e-6)
        True
    """

    def forward_sequence(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lengths = check_lengths(lengths, x.shape[0], x.shape[1], owner="SequenceLSTM")
        if lengths is None:
            return super().forward_sequence(x)
        return masked_lstm(self.lstm, x, lengths)  # (B, T, dirs*H), (B, dirs*H)


def _masked_final_hidden(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    # Same contract as cnnlstm.models._lstm_state.final_hidden, without packing.
    if lengths is None:
        return _ORIGINAL["final_hidden"](lstm, x)
    return masked_lstm(lstm, x, lengths)[1]  # (B, D * H)


def _masked_step_outputs(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    # Same contract as cnnlstm.models._lstm_state.step_outputs, without packing.
    if lengths is None:
        return _ORIGINAL["step_outputs"](lstm, x)
    return masked_lstm(lstm, x, lengths)[0]  # (B, T, D * H)


_ORIGINAL = {"final_hidden": _lstm_state.final_hidden, "step_outputs": _lstm_state.step_outputs}
_PACK_FREE = {"final_hidden": _masked_final_hidden, "step_outputs": _masked_step_outputs}


@contextlib.contextmanager
def pack_free_final_hidden() -> Iterator[None]:
    """While active, every model module that imported ``final_hidden`` or ``step_outputs`` uses a pack-free version.

    They are functions, not modules, so they cannot be swapped on a model copy; their importers' globals are
    rebound instead and restored on exit. (Once they take the pack-free path under ``torch.jit.is_tracing()``
    themselves, this becomes a no-op and can go.)

    Example:
        >>> with pack_free_final_hidden():
        ...     pass
    """
    patched = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("cnnlstm.models."):
            continue
        for helper, original in _ORIGINAL.items():
            if getattr(module, helper, None) is original:
                setattr(module, helper, _PACK_FREE[helper])
                patched.append((module, helper))
    try:
        yield
    finally:
        for module, helper in patched:
            setattr(module, helper, _ORIGINAL[helper])


def exportable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with the export rewrites applied (see the module docstring).

    Args:
        model: any registered model.

    Example:
        >>> from cnnlstm import create_model
        >>> copy_ = exportable_copy(create_model("frame_lstm", num_classes=2, encoder_kwargs={"widths": (4, 8)}))
        >>> type(copy_.rnn).__name__
        'PackFreeSequenceLSTM'
    """
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if type(module) is SequenceLSTM:
            module.__class__ = PackFreeSequenceLSTM
        elif type(module) is ConvLSTM:
            ScanConvLSTM.from_conv_lstm(module)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


class ExportWrapper(nn.Module):
    """Positional inputs in ``input_names`` order -> the model's keyword call (tracers pass positionals).

    Args:
        model: the (rewritten) model.
        input_names: the ``forward`` keywords the exported graph takes, in order.

    Shape:
        - inputs and output: those of ``model``.

    Example:
        >>> from cnnlstm import create_model
        >>> m = create_model("lstm_fcn", num_classes=2, in_channels=3, hidden_size=4)
        >>> ExportWrapper(m, ("x",))(torch.randn(2, 7, 3)).shape
        torch.Size([2, 2])
    """

    def __init__(self, model: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True)))


@contextlib.contextmanager
def tracing_quietly() -> Iterator[None]:
    """Trace with the pack-free helpers and without the tracer's and exporter's expected warnings.

    The models' checks read values (``int(lengths.max())``) to raise helpful errors in eager mode; tracing
    records them as constants and warns, which is expected: the checks are not part of the exported graph.
    The exporter's generic LSTM and indexing caveats do not apply (parity is checked on other batch sizes and
    lengths), and ``torch.jit`` announces its deprecation on every call.

    Example:
        >>> with tracing_quietly():
        ...     pass
    """
    with pack_free_final_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*(Constant folding|LSTM|aten::index)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield
