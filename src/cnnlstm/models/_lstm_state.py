"""Final LSTM hidden state (series classifiers) and per-step outputs (CRNN) of a padded batch."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["final_hidden", "step_outputs"]


def final_hidden(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The last layer's final hidden state, both directions concatenated.

    With ``lengths`` the batch is packed, so the forward direction stops at each sequence's last valid step
    and the backward direction starts there; without, the plain call stays ONNX-exportable.

    Args:
        lstm: a ``batch_first`` LSTM.
        x: the padded input.
        lengths: valid steps per sequence (already checked), or ``None``.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)``.
        - output: ``(B, num_directions * hidden_size)``.

    Example:
        >>> import torch
        >>> lstm = nn.LSTM(3, 8, batch_first=True, bidirectional=True)
        >>> final_hidden(lstm, torch.randn(2, 5, 3), torch.tensor([5, 2])).shape
        torch.Size([2, 16])
    """
    if lengths is not None:
        # enforce_sorted=False: PyTorch sorts internally and returns h_n in the batch's own order.
        x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(x)  # h_n: (num_layers * D, B, H)
    directions = 2 if lstm.bidirectional else 1
    last = h_n[-directions:]  # (D, B, H): the last layer
    return last.transpose(0, 1).flatten(1)  # (B, D * H)


def step_outputs(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The last layer's output at every step, both directions concatenated, zero at padded steps.

    With ``lengths`` the batch is packed, so the backward direction starts at each sequence's last valid step
    (padding never reaches a valid step); without, the plain call stays ONNX-exportable. Export routes this to
    :func:`~cnnlstm.export.masked_rnn.masked_lstm`, which gives the same numbers without packing.

    Args:
        lstm: a ``batch_first`` LSTM.
        x: the padded input.
        lengths: valid steps per sequence (in ``[1, T]``), or ``None``.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)``.
        - output: ``(B, T, num_directions * hidden_size)``.

    Example:
        >>> import torch
        >>> lstm = nn.LSTM(3, 8, batch_first=True, bidirectional=True)
        >>> step_outputs(lstm, torch.randn(2, 5, 3), torch.tensor([5, 2])).shape
        torch.Size([2, 5, 16])
    """
    if lengths is None:
        out, _ = lstm(x)  # (B, T, D * H)
        return out
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, D * H)
    return out
