"""LSTMs under CPU bf16 autocast on processors whose oneDNN has no bf16 LSTM kernel.

CPU autocast runs ``aten::lstm`` in bfloat16 through oneDNN, which builds that primitive only on processors
with AVX-512 (or AMX); on an AVX2-only x86 CPU the call fails with "could not create a primitive descriptor
for the LSTM forward propagation primitive" — from every LSTM model, for any recipe with
``trainer.precision: bf16-mixed``.

:func:`install` (run by ``import cnnlstm``) probes once whether a tiny LSTM runs under CPU bf16 autocast. Where it
does, nothing changes. Where it does not, the AutocastCPU kernels of ``aten::lstm`` (padded and packed
overloads) are replaced by ones that run the LSTM in float32 with autocast off below them — what autocast does
for the ops it keeps in full precision, and what cuDNN-less mixed-precision paths do for recurrences. The rest
of the model (convolutions, linear layers) still runs in bf16. Every ``nn.LSTM`` is covered, the library's and a
user's own, and no call site changes. Plain float32 LSTMs and CUDA never pass through here.

``ONEDNN_MAX_CPU_ISA=AVX2`` reproduces an AVX2-only processor on an AVX-512 one (the tests use it in a
subprocess).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["bf16_lstm_falls_back", "install"]

_LIBRARY: torch.library.Library | None = None  # keeps the registration alive
_FALLS_BACK: bool | None = None


def _bf16_autocast_lstm_runs() -> bool:
    """Whether a one-layer, one-step LSTM runs under CPU bf16 autocast on this processor."""
    lstm = torch.nn.LSTM(1, 1, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 1, 1))  # (B, T, F)
    except RuntimeError:
        return False
    return True


def _f32(t: Tensor) -> Tensor:
    # Floating tensors only: the batch sizes of a packed sequence are int64 and stay so.
    return t.float() if t.is_floating_point() else t


def _lstm_input(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):  # noqa: ANN001, ANN202
    with torch.autocast("cpu", enabled=False):
        return torch.ops.aten.lstm.input(
            _f32(input), [_f32(h) for h in hx], [_f32(p) for p in params],
            has_biases, num_layers, dropout, train, bidirectional, batch_first,
        )


def _lstm_data(data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional):  # noqa: ANN001, ANN202
    with torch.autocast("cpu", enabled=False):
        return torch.ops.aten.lstm.data(
            _f32(data), batch_sizes, [_f32(h) for h in hx], [_f32(p) for p in params],
            has_biases, num_layers, dropout, train, bidirectional,
        )


def install() -> bool:
    """Probe the processor once and, where CPU bf16 autocast cannot run an LSTM, run LSTMs in float32 there.

    Returns:
        Whether the float32 fallback is in place (:func:`bf16_lstm_falls_back`).

    Example:
        >>> install() in (True, False)  # already done by ``import cnnlstm``; a second call changes nothing
        True
    """
    global _LIBRARY, _FALLS_BACK
    if _FALLS_BACK is None:
        _FALLS_BACK = not _bf16_autocast_lstm_runs()
        if _FALLS_BACK:
            library = torch.library.Library("aten", "IMPL")
            library.impl("lstm.input", _lstm_input, "AutocastCPU")
            library.impl("lstm.data", _lstm_data, "AutocastCPU")
            _LIBRARY = library
    return _FALLS_BACK


def bf16_lstm_falls_back() -> bool:
    """Whether LSTMs under CPU bf16 autocast run in float32 in this process (the processor has no bf16 kernel).

    Example:
        >>> bf16_lstm_falls_back() in (True, False)
        True
    """
    return install()
