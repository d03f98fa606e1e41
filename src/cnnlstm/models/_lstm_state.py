"""Final LSTM hidden state of a padded batch, shared by the hybrid series classifiers."""

from __future__ import annotations

from torch import Tensor, nn

from cnnlstm.layers.padded_lstm import run_lstm

__all__ = ["final_hidden"]


def final_hidden(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The last layer's final hidden state, both directions concatenated.

    With ``lengths`` the forward direction stops at each sequence's last valid step and the backward direction
    starts there (see :func:`~cnnlstm.layers.padded_lstm.run_lstm`, which picks packing or the exact unpacked
    run by device and stays exportable).

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
    return run_lstm(lstm, x, lengths)[1]  # (B, D * H)
