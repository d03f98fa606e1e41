"""What the exporters trace: a frozen eval-mode copy of the model, called with positional inputs.

Nothing is rewritten or patched: the layers take their trace-friendly path themselves while traced
(``torch.jit.is_tracing()``). :class:`~cnnlstm.layers.conv_lstm.ConvLSTM` runs its time loop as a scripted
loop (:mod:`cnnlstm.layers.conv_lstm_scan`) instead of unrolling it to the example's ``T``;
:func:`~cnnlstm.layers.padded_lstm.run_lstm`, which every length-aware ``nn.LSTM`` call goes through, takes its
unpacked, exportable path; CRNN keeps its padded path. The copy leaves the caller's model (its mode and its
``requires_grad`` flags) untouched.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["exportable_copy", "ExportWrapper", "tracing_quietly"]


def exportable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode with gradients off (see the module docstring).

    Args:
        model: any registered model.

    Example:
        >>> from cnnlstm import create_model
        >>> model = create_model("conv_lstm_forecaster", in_channels=1, hidden_size=4)
        >>> copy_ = exportable_copy(model)
        >>> copy_.training, model.training, type(copy_.encoder) is type(model.encoder)
        (False, True, True)
    """
    clone = copy.deepcopy(model).eval()
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
    """Trace without the tracer's and exporter's expected warnings.

    The models' checks read values (``int(lengths.max())``) to raise helpful errors in eager mode; tracing
    records them as constants and warns, which is expected: the checks are not part of the exported graph.
    The exporter's generic LSTM and indexing caveats do not apply (parity is checked on other batch sizes and
    lengths), and ``torch.jit`` announces its deprecation on every call.

    Example:
        >>> with tracing_quietly():
        ...     pass
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=UserWarning, message=r".*(Constant folding|LSTM|aten::index)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield
