"""A ConvLSTM over a sequence of feature grids, pooled over space and then over time, for clip classifiers.

Global average pooling of a CNN's last map throws away where things are, so an LSTM over pooled frame vectors
cannot tell a shape moving left from one moving right. A ConvLSTM over the frames' feature *maps* keeps position:
its convolutional gates compare each place with its neighbourhood in the previous step, which is what motion is.
Pooling over space (mean and max, concatenated) only after the recurrence makes the clip's vector independent of
where the motion happened.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.conv_lstm import ConvLSTM, State
from cnnlstm.layers.masking import check_lengths
from cnnlstm.layers.pooling import TemporalPool

__all__ = ["ConvLSTMPool", "GridLayerNorm", "append_differences"]


def append_differences(x: Tensor, channels: int, grid_size: Sequence[int], previous: Tensor | None = None) -> Tensor:
    """Each step's grid followed, per position, by its change from the step before: ``[g_t; g_t - g_{t-1}]``.

    Motion is what changes between frames; static clutter cancels out in the difference, so a recurrence that
    reads it learns direction from a few hundred clips where the raw grids alone let it memorise backgrounds.
    The first step's difference is zero (or taken from ``previous``, the step before a streamed chunk).

    Args:
        x: flat per-step grids, channel-major.
        channels: ``C``.
        grid_size: ``(h, w)``.
        previous: ``(B, C * h * w)`` the step before ``x[:, 0]``, or ``None``.

    Shape:
        - x: ``(B, T, C * h * w)``; output: ``(B, T, 2 C * h * w)``.

    Example:
        >>> append_differences(torch.tensor([[[1.0], [3.0]]]), 1, (1, 1)).tolist()
        [[[1.0, 0.0], [3.0, 2.0]]]
    """
    grids = x.unflatten(2, (channels, *grid_size))  # (B, T, C, h, w)
    before = grids[:, :1] if previous is None else previous.unflatten(1, (channels, *grid_size)).unsqueeze(1)
    shifted = torch.cat([before, grids[:, :-1]], dim=1)  # (B, T, C, h, w): the step before each step
    return torch.cat([grids, grids - shifted], dim=2).flatten(2)  # (B, T, 2C*h*w)


class GridLayerNorm(nn.Module):
    """Layer normalisation over the channels at each position of flat per-step grids.

    A pretrained CNN's intermediate maps are not normalised (values in the tens), which saturates recurrent gates;
    normalising each position's channel vector fixes the scale per frame and per place, so it needs no batch
    statistics (padding cannot leak into it) and keeps where things are.

    Args:
        channels: channels ``C`` of each grid.
        grid_size: ``(h, w)``.

    Shape:
        - x: ``(B, T, C * h * w)`` channel-major; output: the same.

    Example:
        >>> GridLayerNorm(4, (2, 2))(torch.randn(3, 5, 16)).shape
        torch.Size([3, 5, 16])
    """

    def __init__(self, channels: int, grid_size: Sequence[int]) -> None:
        super().__init__()
        self.channels = channels
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ShapeError(f"GridLayerNorm expects flat grids (B, T, C*h*w), got {tuple(x.shape)}")
        # Positive dims throughout: the ONNX exporter mishandles negative ones in unflatten and permute.
        grids = x.unflatten(2, (self.channels, *self.grid_size))  # (B, T, C, h, w)
        grids = self.norm(grids.permute(0, 1, 3, 4, 2))  # (B, T, h, w, C): each position's C values normalised
        return grids.permute(0, 1, 4, 2, 3).flatten(2)  # (B, T, C*h*w)


class ConvLSTMPool(nn.Module):
    """ConvLSTM over per-step feature grids -> spatial mean and max -> temporal pooling.

    Inputs are flat per step (``C * h * w`` values, channel-major, as ``map.flatten(1)`` gives), so the frame
    features of a clip are an ordinary ``(B, T, D)`` sequence that pads, caches and packs like pooled vectors.

    Args:
        in_channels: channels ``C`` of each step's grid.
        grid_size: ``(h, w)`` of each step's grid.
        hidden_channels: ConvLSTM hidden channels ``C_h`` (every layer).
        num_layers: stacked ConvLSTM layers.
        kernel_size: gate convolution kernel.
        dropout: dropout between ConvLSTM layers.
        pooling: temporal pooling of the per-step vectors: ``"last"``, ``"mean"``, ``"max"`` or ``"attention"``.

    Shape:
        - x: ``(B, T, C * h * w)``; lengths: ``(B,)`` int64, optional.
        - output: ``(B, 2 * C_h)`` (spatial mean and max of the hidden maps, pooled over valid steps).

    Example:
        >>> pool = ConvLSTMPool(4, (3, 3), hidden_channels=8)
        >>> pool(torch.randn(2, 5, 4 * 3 * 3), torch.tensor([5, 2])).shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        in_channels: int,
        grid_size: Sequence[int],
        hidden_channels: int,
        num_layers: int = 1,
        *,
        kernel_size: int = 3,
        dropout: float = 0.0,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        if len(grid_size) != 2 or min(grid_size) < 1:
            raise ConfigError(f"ConvLSTMPool grid_size must be (h, w) of positive ints, got {grid_size!r}")
        self.in_channels = in_channels
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.input_size = in_channels * self.grid_size[0] * self.grid_size[1]
        self.conv_lstm = ConvLSTM(in_channels, hidden_channels, kernel_size, num_layers, dropout=dropout)
        self.step_features = 2 * hidden_channels
        self.pooling = pooling
        self.pool = TemporalPool(pooling, input_size=self.step_features)
        self.out_features = self.step_features

    def _grids(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ShapeError(f"ConvLSTMPool expects (B, T, C*h*w) with C*h*w={self.input_size} "
                             f"(C={self.in_channels}, grid {self.grid_size}), got {tuple(x.shape)}")
        return x.unflatten(2, (self.in_channels, *self.grid_size))  # (B, T, C, h, w)

    @staticmethod
    def _spatial(maps: Tensor) -> Tensor:
        """(..., C_h, h, w) -> (..., 2 C_h): mean and max over positions."""
        return torch.cat([maps.mean(dim=(-2, -1)), maps.amax(dim=(-2, -1))], dim=-1)

    def forward_sequence(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-step vectors before temporal pooling (zeros at padded steps).

        Shape:
            - x: ``(B, T, C * h * w)``; lengths: ``(B,)``, optional.
            - output: ``(B, T, 2 * C_h)``.
        """
        grids = self._grids(x)  # (B, T, C, h, w)
        lengths = check_lengths(lengths, x.shape[0], x.shape[1], owner="ConvLSTMPool")
        maps, _ = self.conv_lstm(grids, lengths=lengths)  # (B, T, C_h, h, w), zeros at padded steps
        return self._spatial(maps)  # (B, T, 2 C_h)

    def step(self, x: Tensor, state: list[State] | None = None) -> tuple[Tensor, list[State]]:
        """One step from ``state`` (streaming): the step's vector and the new ConvLSTM states.

        Shape:
            - x: ``(B, C * h * w)``; state: ``None`` or the list :meth:`step` returned.
            - output: ``(B, 2 * C_h)`` and the states.
        """
        grid = self._grids(x.unsqueeze(1))  # (B, 1, C, h, w)
        maps, state = self.conv_lstm(grid, state)  # (B, 1, C_h, h, w)
        return self._spatial(maps[:, 0]), state  # (B, 2 C_h)

    def check_chunkable(self, owner: str = "ConvLSTMPool") -> None:
        """Truncated BPTT chains LSTM ``(h, c)`` vectors; this layer's state is a list of maps: refuse it."""
        raise ConfigError(f"{owner}: truncated BPTT (trainer.tbptt_steps) is not available with "
                          "frame_features='conv_lstm'; use chunk_size to bound the encoder's memory instead")

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Pool the ConvLSTM over space and each sequence's valid steps; see the class docstring for shapes."""
        return self.pool(self.forward_sequence(x, lengths), lengths=lengths)  # (B, 2 C_h)
