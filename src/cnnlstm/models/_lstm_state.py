"""Final LSTM hidden state (series classifiers) and per-step outputs (CRNN) of a padded batch."""

from __future__ import annotations

from torch import Tensor, nn

from cnnlstm.layers.padded_lstm import run_lstm

__all__ = ["final_hidden", "step_outputs"]


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


def step_outputs(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> Tensor:
    """The last layer's output at every step, both directions concatenated, zero at padded steps.

    With ``lengths`` the recurrence stops at each sequence's end (the backward direction starts at its last valid
    step, so padding never reaches a valid step); see :func:`~cnnlstm.layers.padded_lstm.run_lstm`.

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
    return run_lstm(lstm, x, lengths)[0]  # (B, T, D * H)
