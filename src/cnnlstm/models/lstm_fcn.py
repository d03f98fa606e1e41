"""LSTM-FCN and MLSTM-FCN (Karim et al. 2018, 2019): an LSTM and a fully convolutional network side by side.

Both branches read the same series. The FCN branch (three Conv1d -> BatchNorm -> ReLU blocks, 128/256/128
filters with kernels 8/5/3, then global average pooling over time) finds local shapes; the LSTM branch (its
final hidden state, then heavy dropout, 0.8 in the paper) summarises order. Their concatenation feeds a linear
classifier. MLSTM-FCN, for multivariate series, adds squeeze-and-excitation after the first two conv blocks.

Dimension shuffle. The original feeds the LSTM the *transposed* series: ``F`` steps of ``T`` features each, so
for a univariate series the LSTM takes a single step. That is cheap but barely recurrent, and aeon cited it when
it removed the model. Here ``shuffle=False`` (default) feeds time steps; ``shuffle=True`` reproduces the paper
and then needs ``seq_len``, the series length the LSTM's input size is built for.

Padding. With ``lengths`` every valid output equals the one from the unpadded series: the LSTM is packed; the
conv branch re-zeroes padded steps after every block (so a convolution sees, past a series' end, the zeros its
own padding would give), squeeze-excite and the global pooling average over valid steps, and BatchNorm's
training statistics use valid steps only (:class:`~cnnlstm.layers.masked_norm.MaskedBatchNorm1d`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.blocks import SqueezeExcite1d
from cnnlstm.layers.checks import check_input, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.masked_norm import MaskedBatchNorm1d
from cnnlstm.layers.masking import check_lengths, lengths_to_mask
from cnnlstm.layers.pooling import masked_mean
from cnnlstm.models._lstm_state import final_hidden
from cnnlstm.models._registry import register_model

__all__ = ["LSTMFCN", "MLSTMFCN"]


class _FCNBlock(nn.Module):
    """Conv1d ("same", any kernel size incl. the paper's 8) -> masked BatchNorm -> ReLU, padding kept at zero."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        # "same" length; an even kernel pads one more step on the right (3 left, 4 right for the paper's 8), as
        # Keras' "same" in the reference code. Explicit, since Conv1d(padding="same") copies the input for it.
        odd = kernel_size % 2 == 1
        self.pad = nn.Identity() if odd else nn.ConstantPad1d(((kernel_size - 1) // 2, kernel_size // 2), 0.0)
        # No conv bias: the BatchNorm shift that follows makes it redundant.
        padding = kernel_size // 2 if odd else 0
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.norm = MaskedBatchNorm1d(out_channels)

    def forward(self, x: Tensor, keep: Tensor | None, mask: Tensor | None) -> Tensor:
        x = F.relu(self.norm(self.conv(self.pad(x)), mask))  # (B, C_out, T)
        return x if keep is None else x * keep  # padded steps back to zero for the next convolution


@register_model("lstm_fcn")
class LSTMFCN(nn.Module):
    """LSTM-FCN time-series classifier (Karim et al. 2018).

    Args:
        num_classes: number of classes ``K``.
        in_channels: features per step ``F`` (variables of the series).
        hidden_size: LSTM units per direction (128 in the paper; 8 to 128 were searched).
        num_layers: stacked LSTM layers.
        bidirectional: bidirectional LSTM branch.
        dropout: dropout on the LSTM branch's output (0.8 in the paper).
        filters: output channels of the three conv blocks.
        kernel_sizes: kernel sizes of the three conv blocks.
        shuffle: feed the LSTM the transposed series (``F`` steps of ``seq_len`` values) as the paper did.
        seq_len: series length ``T``; required by ``shuffle`` (shorter series are zero-padded to it).
        se_reduction: squeeze-excite bottleneck ratio (used by ``mlstm_fcn``).

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int64 in ``[1, T]``, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> model = LSTMFCN(num_classes=3, in_channels=2, hidden_size=8)
        >>> model(torch.randn(4, 20, 2), lengths=torch.tensor([20, 15, 9, 20])).shape
        torch.Size([4, 3])
    """

    input_names = ("x", "lengths")
    output_kind = "logits"
    supports_lengths = True
    #: squeeze-excite after the first two conv blocks (MLSTM-FCN).
    squeeze_excite = False

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.8,
        filters: Sequence[int] = (128, 256, 128),
        kernel_sizes: Sequence[int] = (8, 5, 3),
        shuffle: bool = False,
        seq_len: int | None = None,
        se_reduction: int = 16,
    ) -> None:
        super().__init__()
        name = self.registry_name
        require_positive(
            name, num_classes=num_classes, in_channels=in_channels, hidden_size=hidden_size, num_layers=num_layers,
            se_reduction=se_reduction, filters=filters, kernel_sizes=kernel_sizes,
        )
        require_positive(name, allow_none=True, seq_len=seq_len)
        require_dropout(name, dropout=dropout)
        lists = isinstance(filters, (list, tuple)) and isinstance(kernel_sizes, (list, tuple))
        if not lists or len(filters) != len(kernel_sizes) or not filters:
            raise ConfigError(
                f"{name}: filters and kernel_sizes need one entry per conv block, got {filters}, {kernel_sizes}"
            )
        if shuffle and seq_len is None:
            raise ConfigError(
                f"{name}: shuffle=True feeds the LSTM F steps of T values each, so it needs seq_len (the series "
                "length T)"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.shuffle = shuffle
        self.seq_len = seq_len
        directions = 2 if bidirectional else 1
        self.num_features = directions * hidden_size + filters[-1]

        self.lstm = nn.LSTM(
            seq_len if shuffle else in_channels, hidden_size, num_layers=num_layers, batch_first=True,
            bidirectional=bidirectional,
        )
        self.lstm_dropout = nn.Dropout(dropout)
        widths = [in_channels, *filters]
        self.blocks = nn.ModuleList(_FCNBlock(widths[k], widths[k + 1], kernel_sizes[k]) for k in range(len(filters)))
        n_se = min(2, len(filters) - 1) if self.squeeze_excite else 0
        self.excite = nn.ModuleList(SqueezeExcite1d(filters[k], se_reduction) for k in range(n_se))
        self.head = nn.Linear(self.num_features, num_classes)

    def _check(self, x: Tensor) -> None:
        check_input(
            x, "B, T, F", self.registry_name, what="a series", hint=" (in_channels)", dtype=weights_dtype(self),
            F=self.in_channels,
        )
        if self.shuffle and x.shape[1] > self.seq_len:
            raise ShapeError(
                f"{self.registry_name} was built with shuffle=True for series of at most seq_len={self.seq_len} "
                f"steps, got {tuple(x.shape)}; rebuild with a larger seq_len"
            )

    def _lstm_branch(self, x: Tensor, lengths: Tensor | None, keep: Tensor | None) -> Tensor:
        if self.shuffle:
            if keep is not None:
                x = x * keep.transpose(1, 2)  # zero padded steps: in the shuffled input they are features
            x = F.pad(x, (0, 0, 0, self.seq_len - x.shape[1]))  # (B, seq_len, F)
            x = x.transpose(1, 2)  # (B, F, seq_len): variables become the steps, all of them valid
            lengths = None
        return self.lstm_dropout(final_hidden(self.lstm, x, lengths))  # (B, D * hidden_size)

    def _fcn_branch(self, x: Tensor, keep: Tensor | None, mask: Tensor | None) -> Tensor:
        x = x.transpose(1, 2)  # (B, F, T): Conv1d wants channels first
        if keep is not None:
            x = x * keep
        for k, block in enumerate(self.blocks):
            x = block(x, keep, mask)  # (B, filters[k], T)
            if k < len(self.excite):
                x = self.excite[k](x, mask)  # (B, filters[k], T); padded steps stay zero
        if mask is None:
            return x.mean(dim=2)  # (B, filters[-1])
        return masked_mean(x.transpose(1, 2), mask)  # (B, filters[-1]): average over valid steps only

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Concatenated LSTM and FCN features.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional.
            - output: ``(B, num_features)``, ``num_features = D * hidden_size + filters[-1]``.
        """
        self._check(x)
        B, T, _ = x.shape
        lengths = check_lengths(lengths, B, T, owner=self.registry_name)
        mask = None if lengths is None else lengths_to_mask(lengths.to(x.device), T)  # (B, T)
        keep = None if mask is None else mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
        return torch.cat([self._lstm_branch(x, lengths, keep), self._fcn_branch(x, keep, mask)], dim=1)

    def forward_head(self, features: Tensor) -> Tensor:
        """Class logits.

        Shape:
            - features: ``(B, num_features)``; output: ``(B, K)``.
        """
        return self.head(features)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Classify each series.

        Args:
            x: padded series, time on dim 1.
            lengths: valid steps per series; ``None`` when all are ``T`` long.

        Shape:
            - x: ``(B, T, F)``; lengths: ``(B,)``, optional; output: ``(B, K)`` logits.
        """
        return self.forward_head(self.forward_features(x, lengths))

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Random series of unequal lengths (padded steps hold noise, which the model must ignore)."""
        T = self.seq_len or 12
        lengths = T - (3 * torch.arange(batch_size)) % T  # T, T-3, T-6, ... (all in [1, T])
        return {"x": torch.randn(batch_size, T, self.in_channels), "lengths": lengths}


@register_model("mlstm_fcn")
class MLSTMFCN(LSTMFCN):
    """MLSTM-FCN for multivariate series (Karim et al. 2019): LSTM-FCN with squeeze-excite in the FCN branch.

    A squeeze-and-excitation block (reduction ``se_reduction``, 16 in the paper) follows each of the first two
    conv blocks, so the network reweights its filters per series.

    Args:
        The same as :class:`LSTMFCN`; ``se_reduction`` sets the squeeze-excite bottleneck.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int64 in ``[1, T]``, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> model = MLSTMFCN(num_classes=4, in_channels=6, hidden_size=8)
        >>> model(torch.randn(2, 30, 6)).shape
        torch.Size([2, 4])
    """

    squeeze_excite = True
