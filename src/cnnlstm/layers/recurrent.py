"""An LSTM over a padded batch that returns one vector per sequence.

``SequenceLSTM`` packs the batch when lengths are given (the recurrence stops at each sequence's end, so
padding never enters a state) and runs the plain ``nn.LSTM`` otherwise, which keeps the unpadded path
exportable to ONNX. Pooling ``"last"`` reads the final hidden states ``h_n``: for a bidirectional LSTM that is
the forward direction after the last valid step joined with the backward direction after the first step.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlstm.layers.checks import check_input, require_dropout, require_positive
from cnnlstm.layers.masking import check_lengths
from cnnlstm.layers.pooling import POOLING_MODES, TemporalPool

__all__ = ["SequenceLSTM"]


class SequenceLSTM(nn.Module):
    """``nn.LSTM`` (batch-first) over a padded batch, pooled to ``(B, out_features)``.

    Args:
        input_size: features per step ``F``.
        hidden_size: LSTM hidden size ``H``.
        num_layers: stacked LSTM layers.
        bidirectional: run a backward LSTM too; ``out_features = 2 H``.
        dropout: dropout between stacked layers (ignored for one layer, as in ``nn.LSTM``).
        pooling: one of :data:`~cnnlstm.layers.pooling.POOLING_MODES`; ``"last"`` uses the final states.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int, optional.
        - output: ``(B, out_features)``.

    Example:
        >>> import torch
        >>> lstm = SequenceLSTM(4, 8, bidirectional=True)
        >>> lstm(torch.randn(2, 5, 4), lengths=torch.tensor([5, 2])).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        require_positive("SequenceLSTM", input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        require_dropout("SequenceLSTM", dropout=dropout)
        self.lstm = nn.LSTM(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,  # nn.LSTM warns about (and ignores) it for one layer
        )
        self.num_directions = 2 if bidirectional else 1
        self.out_features = hidden_size * self.num_directions
        self.pooling = pooling
        if pooling not in POOLING_MODES:
            TemporalPool(pooling)  # raises the ConfigError with suggestions
        self.pool = None if pooling == "last" else TemporalPool(pooling, input_size=self.out_features)

    def forward_sequence(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """All step outputs and the last layer's final hidden states.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional.
            - outputs: ``(B, T, out_features)``, zeros at padded steps; final: ``(B, out_features)``.
        """
        check_input(x, "B, T, F", "SequenceLSTM", what="a sequence", F=self.lstm.input_size)
        B, T, _ = x.shape
        lengths = check_lengths(lengths, B, T, owner="SequenceLSTM")
        if lengths is None:
            outputs, (h_n, _) = self.lstm(x)  # (B, T, dirs*H); h_n (layers*dirs, B, H)
        else:
            # pack_padded_sequence wants CPU lengths; enforce_sorted=False returns h_n in the batch's order.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_out, (h_n, _) = self.lstm(packed)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=T)  # (B, T, dirs*H)
        final = h_n[-self.num_directions :].transpose(0, 1).reshape(B, self.out_features)  # (B, dirs*H)
        return outputs, final

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pool the LSTM over each sequence's valid steps; see the class docstring for shapes."""
        outputs, final = self.forward_sequence(x, lengths)
        if self.pool is None:
            return final  # (B, dirs*H)
        return self.pool(outputs, lengths=lengths)  # (B, dirs*H)
