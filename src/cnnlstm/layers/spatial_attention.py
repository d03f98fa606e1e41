"""An LSTM that attends over each step's feature grid, driven by its own previous state (Sharma et al. 2015).

"Action recognition using visual attention": at step ``t`` the LSTM's previous hidden state ``h_{t-1}`` scores
every position ``i`` of the frame's ``h x w`` feature grid, the scores are a softmax ``a_t`` over the ``L = h w``
positions, and the LSTM reads the attended feature ``sum_i a_{t,i} x_{t,i}`` (a ``C``-vector) instead of the
globally pooled one. What the recurrence has seen so far decides where it looks next.

Sharma et al. score positions from the state alone (``W_a h_{t-1} + b_a``, a location prior). That cannot find a
moving object: the state knows where to look only from what it read, and a read that starts near-uniform is the
pooled vector, which has lost position (a direction-of-motion probe stayed at chance). So the score adds a content
term, the state's query against each position's features (``x_{t,i} . (W_q h_{t-1} + b_q) / sqrt(C)``, the soft
attention of Show, Attend and Tell, Xu et al. 2015; ``b_q`` lets the first step look for content already), and the
LSTM also reads where it looked, ``sum_i a_{t,i} p_i`` with ``p_i`` the position's (row, column) in [-1, 1], so the
sequence of attended places (a trajectory) reaches the recurrence. The first step starts from ``h_0 = 0``.

The time loop is a scripted function whose trip count is a tensor, so tracing (TorchScript, ONNX) keeps it a loop
and an exported model takes clips of any length, with ``lengths``, as eager mode does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.masking import check_lengths, lengths_to_mask
from cnnlstm.layers.pooling import TemporalPool

__all__ = ["SpatialAttentionLSTM"]


def _scan(steps: Tensor, x: Tensor, coords: Tensor, valid: Tensor, h: Tensor, c: Tensor, w_att: Tensor,
          b_att: Tensor, w_q: Tensor, b_q: Tensor, w_ih: Tensor, w_hh: Tensor, bias: Tensor, hidden: int,
          scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # x: (B, T, L, C) positions; coords: (L, 2); valid: (B, T, 1) float, 1 on valid steps; h, c: (B, H).
    n = int(steps)
    outputs: list[Tensor] = []
    weights: list[Tensor] = []
    for t in range(n):
        xt = x[:, t]  # (B, L, C)
        query = F.linear(h, w_q, b_q).unsqueeze(2)  # (B, C, 1): what to look for, from the previous state
        scores = F.linear(h, w_att, b_att) + torch.bmm(xt, query).squeeze(2) * scale  # (B, L): where + what
        alpha = torch.softmax(scores, dim=1)  # (B, L)
        read = torch.bmm(alpha.unsqueeze(1), xt).squeeze(1)  # (B, 1, L) @ (B, L, C) -> (B, C)
        where = torch.mm(alpha, coords)  # (B, 2): the attended (row, column)
        gates = F.linear(torch.cat([read, where], dim=1), w_ih) + F.linear(h, w_hh) + bias  # (B, 4H): i, f, g, o
        # Slices, not chunk: the exporter cannot split a tensor of unknown rank.
        gi, gf = gates[:, :hidden], gates[:, hidden : 2 * hidden]
        gg, go = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
        c_new = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
        h_new = torch.sigmoid(go) * torch.tanh(c_new)
        keep = valid[:, t]  # (B, 1): 0 on padding
        h = keep * h_new + (1.0 - keep) * h  # padded steps keep the state (exact: one term is 0 * finite)
        c = keep * c_new + (1.0 - keep) * c
        outputs.append(h_new * keep)
        weights.append(alpha * keep)
    return torch.stack(outputs, dim=1), torch.stack(weights, dim=1), h, c  # (B, T, H), (B, T, L), (B, H), (B, H)


with warnings.catch_warnings():  # torch.jit announces its deprecation; scripting is still what keeps the loop
    warnings.filterwarnings("ignore", category=FutureWarning)
    _scan = torch.jit.script(_scan)


class SpatialAttentionLSTM(nn.Module):
    """LSTM with soft spatial attention over per-step feature grids (Sharma et al. 2015), then temporal pooling.

    Inputs are flat per step (``C * h * w`` values, channel-major, as ``map.flatten(1)`` gives), so a clip's
    frame features are an ordinary ``(B, T, D)`` sequence that pads, caches and packs like pooled vectors.

    Args:
        in_channels: channels ``C`` of each step's grid (what the attended read has).
        grid_size: ``(h, w)`` of each step's grid; ``L = h * w`` attention weights per step.
        hidden_size: LSTM hidden size ``H``.
        pooling: temporal pooling of the per-step hidden states: ``"last"``, ``"mean"``, ``"max"`` or ``"attention"``.

    Shape:
        - x: ``(B, T, C * h * w)``; lengths: ``(B,)`` int64, optional.
        - output: ``(B, H)``.

    Example:
        >>> layer = SpatialAttentionLSTM(4, (3, 3), hidden_size=8)
        >>> layer(torch.randn(2, 5, 4 * 3 * 3), torch.tensor([5, 2])).shape
        torch.Size([2, 8])
    """

    def __init__(self, in_channels: int, grid_size: Sequence[int], hidden_size: int, *, pooling: str = "last") -> None:
        super().__init__()
        if len(grid_size) != 2 or min(grid_size) < 1:
            raise ConfigError(f"SpatialAttentionLSTM grid_size must be (h, w) of positive ints, got {grid_size!r}")
        self.in_channels = in_channels
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.positions = self.grid_size[0] * self.grid_size[1]
        self.input_size = in_channels * self.positions
        self.hidden_size = hidden_size
        self.cell = nn.LSTMCell(in_channels + 2, hidden_size)  # the attended features and (row, column)
        self.attend = nn.Linear(hidden_size, self.positions)  # h_{t-1} -> one location score per grid position
        self.query = nn.Linear(hidden_size, in_channels)  # h_{t-1} -> the features to look for
        rows = torch.linspace(-1.0, 1.0, self.grid_size[0]) if self.grid_size[0] > 1 else torch.zeros(1)
        cols = torch.linspace(-1.0, 1.0, self.grid_size[1]) if self.grid_size[1] > 1 else torch.zeros(1)
        coords = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(self.positions, 2)  # (L, 2)
        self.register_buffer("coords", coords, persistent=False)  # a constant of the grid, not a weight
        self.pooling = pooling
        self.pool = TemporalPool(pooling, input_size=hidden_size)
        self.out_features = hidden_size

    def _positions(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ShapeError(f"SpatialAttentionLSTM expects (B, T, C*h*w) with C*h*w={self.input_size} "
                             f"(C={self.in_channels}, grid {self.grid_size}), got {tuple(x.shape)}")
        B, T = x.shape[:2]
        # Positive dims and explicit sizes: the ONNX exporter mishandles negative ones in unflatten and transpose.
        grids = x.reshape(B, T, self.in_channels, self.positions)  # (B, T, C, L)
        return grids.transpose(2, 3)  # (B, T, L, C): one C-vector per position

    def _run(self, x: Tensor, mask: Tensor, state: tuple[Tensor, Tensor] | None
             ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        positions = self._positions(x)  # (B, T, L, C)
        B, T = x.shape[:2]
        if state is None:
            h = x.new_zeros(B, self.hidden_size)  # (B, H)
            state = (h, h)
        cell = self.cell
        bias = cell.bias_ih + cell.bias_hh  # (4H,)
        valid = mask.to(x.dtype).unsqueeze(2)  # (B, T, 1)
        steps = torch._shape_as_tensor(x)[1]  # a tensor, so the trip count stays dynamic when traced
        out, weights, h, c = _scan(steps, positions, self.coords.to(x.dtype), valid, state[0], state[1],
                                   self.attend.weight, self.attend.bias, self.query.weight, self.query.bias,
                                   cell.weight_ih, cell.weight_hh, bias, self.hidden_size, self.in_channels ** -0.5)
        # Values leaving a scripted function have unknown rank for the exporter; reshaping restores it.
        size = (B, self.hidden_size)
        return (out.reshape(B, T, self.hidden_size), weights.reshape(B, T, self.positions),
                (h.reshape(size), c.reshape(size)))

    def forward_sequence(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-step hidden states and attention weights before temporal pooling (zeros at padded steps).

        Shape:
            - x: ``(B, T, C * h * w)``; lengths: ``(B,)``, optional.
            - output: ``(B, T, H)`` and the weights ``(B, T, h * w)`` (each valid step's sum to 1).
        """
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, owner="SpatialAttentionLSTM")
        mask = x.new_ones(B, T, dtype=torch.bool) if lengths is None else lengths_to_mask(lengths, T)  # (B, T)
        out, weights, _ = self._run(x, mask, None)
        return out, weights

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One step from ``state`` (streaming): the step's hidden state and the new ``(h, c)``.

        Shape:
            - x: ``(B, C * h * w)``; state: ``None`` or the ``(h, c)`` :meth:`step` returned, each ``(B, H)``.
            - output: ``(B, H)`` and the state.
        """
        mask = x.new_ones(x.shape[0], 1, dtype=torch.bool)  # (B, 1)
        out, _, state = self._run(x.unsqueeze(1), mask, state)
        return out[:, 0], state  # (B, H)

    def check_chunkable(self, owner: str = "SpatialAttentionLSTM") -> None:
        """Truncated BPTT is not offered for this layer: refuse it with what to use instead."""
        raise ConfigError(f"{owner}: truncated BPTT (trainer.tbptt_steps) is not available with "
                          "frame_features='attention'; use chunk_size to bound the encoder's memory instead")

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Attend, recur and pool each sequence's valid steps; see the class docstring for shapes."""
        out, _ = self.forward_sequence(x, lengths)  # (B, T, H)
        return self.pool(out, lengths=lengths)  # (B, H)
