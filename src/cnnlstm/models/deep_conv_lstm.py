"""DeepConvLSTM (Ordóñez & Roggen 2016): temporal convolutions per sensor channel, then a stacked LSTM.

Built for activity recognition from wearable sensors. Four convolutional layers (64 filters, kernel 5, ReLU)
slide along *time only*: the paper's ``(5, 1)`` kernels over a ``(T, F)`` "image" apply the same filters to
every sensor channel separately, so each channel becomes 64 feature sequences. At every step the ``64 * F``
values feed a two-layer LSTM (128 units); the last valid step's hidden state is classified. Dropout (0.5)
precedes each recurrent and the output layer, as in the paper.

Differences from the paper: the convolutions keep the length ("same" padding instead of "valid"), so
``lengths`` keep their meaning and padding stays exact (padded steps are re-zeroed after every convolution and
the LSTM is packed); the model emits logits, the task applies the softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.layers.blocks import ConvNormAct1d
from cnnlstm.layers.checks import check_input, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.masking import check_lengths, lengths_to_mask
from cnnlstm.models._lstm_state import final_hidden
from cnnlstm.models._registry import register_model

__all__ = ["DeepConvLSTM"]


@register_model("deep_conv_lstm")
class DeepConvLSTM(nn.Module):
    """DeepConvLSTM sensor-series classifier (Ordóñez & Roggen 2016).

    Args:
        num_classes: number of activity classes ``K``.
        in_channels: sensor channels ``F`` per step.
        hidden_size: LSTM units per direction (128 in the paper).
        num_layers: stacked LSTM layers (2 in the paper).
        bidirectional: bidirectional LSTM; features then join both directions' final states.
        dropout: dropout before each LSTM layer and before the classifier (0.5 in the paper).
        filters: filters of every temporal convolution (64).
        kernel_size: temporal kernel size, odd (5).
        num_conv_layers: number of temporal convolutions (4).

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int64 in ``[1, T]``, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> model = DeepConvLSTM(num_classes=5, in_channels=9, hidden_size=16, filters=8)
        >>> model(torch.randn(2, 24, 9), lengths=torch.tensor([24, 17])).shape
        torch.Size([2, 5])
    """

    input_names = ("x", "lengths")
    output_kind = "logits"
    supports_lengths = True

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        hidden_size: int = 128,
        num_layers: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.5,
        filters: int = 64,
        kernel_size: int = 5,
        num_conv_layers: int = 4,
    ) -> None:
        super().__init__()
        require_positive(
            "deep_conv_lstm", num_classes=num_classes, in_channels=in_channels, hidden_size=hidden_size,
            num_layers=num_layers, filters=filters, kernel_size=kernel_size, num_conv_layers=num_conv_layers,
        )
        require_dropout("deep_conv_lstm", dropout=dropout)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.filters = filters
        self.num_features = (2 if bidirectional else 1) * hidden_size
        # Conv1d over one channel at a time (channels folded into the batch) is the paper's (k, 1) Conv2d:
        # the same temporal filters for every sensor channel.
        self.convs = nn.ModuleList(
            ConvNormAct1d(1 if k == 0 else filters, filters, kernel_size, norm="none", act="relu")
            for k in range(num_conv_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            filters * in_channels, hidden_size, num_layers=num_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = nn.Linear(self.num_features, num_classes)

    def _check(self, x: Tensor) -> None:
        check_input(
            x, "B, T, F", "deep_conv_lstm", what="a series", hint=" (in_channels)", dtype=weights_dtype(self),
            F=self.in_channels,
        )

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The LSTM's hidden state at each series' last valid step.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional.
            - output: ``(B, num_features)``, ``num_features = D * hidden_size``.
        """
        self._check(x)
        B, T, F = x.shape
        lengths = check_lengths(lengths, B, T, owner="deep_conv_lstm")
        # Padding mask per (sample, channel) row of the folded batch; the blocks zero padded steps around each conv.
        mask = None
        if lengths is not None:
            mask = lengths_to_mask(lengths.to(x.device), T).repeat_interleave(F, dim=0)  # (B*F, T)
        z = x.transpose(1, 2).reshape(B * F, 1, T)  # (B*F, 1, T): each sensor channel its own series
        for conv in self.convs:
            z = conv(z, mask)  # (B*F, filters, T)
        z = z.reshape(B, F * self.filters, T).transpose(1, 2)  # (B, T, F*filters): per step, all channels' maps
        return final_hidden(self.lstm, self.dropout(z), lengths)  # (B, D * hidden_size)

    def forward_head(self, features: Tensor) -> Tensor:
        """Class logits.

        Shape:
            - features: ``(B, num_features)``; output: ``(B, K)``.
        """
        return self.head(self.dropout(features))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Classify each sensor window.

        Args:
            x: padded sensor series, time on dim 1.
            lengths: valid steps per series; ``None`` when all are ``T`` long.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional; output: ``(B, K)`` logits.
        """
        return self.forward_head(self.forward_features(x, lengths))

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Random sensor windows of unequal lengths (padded steps hold noise, which the model must ignore)."""
        T = 12
        lengths = T - (3 * torch.arange(batch_size)) % T  # T, T-3, T-6, ... (all in [1, T])
        return {"x": torch.randn(batch_size, T, self.in_channels), "lengths": lengths}
