"""The time loop of :class:`~cnnlstm.layers.conv_lstm.ConvLSTM` as a scripted loop, which tracing keeps dynamic.

``ConvLSTM`` steps through time in a Python loop; ``torch.jit.trace`` (and so the TorchScript-based ONNX
exporter) unrolls it, freezing the number of steps into the graph. Here the recurrence over ``W_h * h`` is a
``torch.jit.script`` function whose trip count is a tensor, so it stays a loop: ``prim::Loop`` in TorchScript,
``Loop`` in ONNX. The input half of the gates is still one batched convolution over all steps, as in eager.
``ConvLSTM`` takes this path by itself while it is traced (:func:`scan_direction`); nothing is swapped or patched.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # conv_lstm imports this module; the cell is only read here
    from cnnlstm.layers.conv_lstm import ConvLSTMCell, State

__all__ = ["scan_direction"]


def _scan(
    steps: Tensor,
    x_gates: Tensor,
    mask: Tensor,  # (B, T, 1, ..., 1) float, 1 on valid steps
    h: Tensor,
    c: Tensor,
    weight: Tensor,
    bias: Tensor,
    pad: list[int],
    ones: list[int],
    zeros: list[int],
    peephole: Tensor,
    gate_norm: list[Tensor],
    cell_norm: list[Tensor],
    hidden: int,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    # ConvLSTMCell.step, written once more in TorchScript: gates i, f, g, o; peephole (zeros when absent: adding
    # exact zeros changes nothing); layer norm when gate_norm / cell_norm hold [weight, bias, eps].
    n = int(steps)
    outputs: list[Tensor] = []
    for i in range(n):
        t = n - 1 - i if reverse else i
        gates = torch.convolution(F.pad(h, pad), weight, bias, ones, zeros, ones, False, zeros, 1) + x_gates[:, t]
        if len(gate_norm) > 0:
            gates = F.group_norm(gates, 4, gate_norm[0], gate_norm[1], float(gate_norm[2]))
        # Slices, not chunk: the exporter cannot split a tensor of unknown rank.
        gi, gf = gates[:, :hidden], gates[:, hidden : 2 * hidden]  # each (B, C_h, *S)
        gg, go = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
        gi = gi + peephole[0] * c
        gf = gf + peephole[1] * c
        c_new = torch.sigmoid(gf) * c + torch.sigmoid(gi) * torch.tanh(gg)
        go = go + peephole[2] * c_new
        normed = c_new
        if len(cell_norm) > 0:
            normed = F.group_norm(c_new, 1, cell_norm[0], cell_norm[1], float(cell_norm[2]))
        h_new = torch.sigmoid(go) * torch.tanh(normed)
        valid = mask[:, t]  # (B, 1, ..., 1): 0 on padding
        h = valid * h_new + (1.0 - valid) * h  # padded steps keep the state (exact: one term is 0 * finite)
        c = valid * c_new + (1.0 - valid) * c
        outputs.append(h_new * valid)
    if reverse:
        outputs.reverse()
    return torch.stack(outputs, dim=1), h, c  # (B, T, C_h, *S), (B, C_h, *S), (B, C_h, *S)


@functools.cache
def _scripted_scan():  # noqa: ANN202 (a ScriptFunction)
    # Scripted on first use, not at import: only tracing needs it.
    with warnings.catch_warnings():  # torch.jit announces its deprecation; scripting is still what keeps the loop
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.script(_scan)


def _same_padding(cell: ConvLSTMCell) -> list[int]:
    # F.pad order (last dim first); PyTorch's padding="same" puts the odd extra step of an even kernel last.
    pad: list[int] = []
    for k in reversed(cell.kernel_size):
        pad += [(k - 1) // 2, k // 2]
    return pad


def _norm_args(norm: torch.nn.GroupNorm | None, like: Tensor) -> list[Tensor]:
    if norm is None:
        return []
    return [norm.weight, norm.bias, like.new_tensor(norm.eps)]


def scan_direction(
    cell: ConvLSTMCell, x: Tensor, state: State, mask: Tensor | None, reverse: bool
) -> tuple[Tensor, State]:
    """One layer and direction of a ``ConvLSTM`` through the scripted loop; results equal the eager loop's.

    Args:
        cell: the layer's cell (its weights are read, its Python ``step`` is not run).
        x: the layer's input sequence.
        state: initial ``(h, c)``.
        mask: ``(B, T)`` bool, True on valid steps, or ``None`` (all valid).
        reverse: run from the last step to the first (the backward direction).

    Shape:
        - x: ``(B, T, C, *S)``; state: ``(h, c)``, each ``(B, C_h, *S)``.
        - output: ``(B, T, C_h, *S)`` (zeros at padded steps) and the final ``(h, c)``.

    Example:
        >>> from cnnlstm.layers.conv_lstm import ConvLSTMCell
        >>> cell = ConvLSTMCell(1, 4, kernel_size=3)
        >>> x = torch.rand(2, 5, 1, 8, 8)
        >>> out, (h, c) = scan_direction(cell, x, cell.init_state(x), None, reverse=False)
        >>> out.shape
        torch.Size([2, 5, 4, 8, 8])
    """
    B, T = x.shape[:2]
    x_gates = cell.input_gates(x.flatten(0, 1))  # (B*T, 4*C_h, *S)
    x_gates = x_gates.reshape(x.shape[:2] + x_gates.shape[1:])  # (B, T, 4*C_h, *S); unflatten traces B, T fixed
    if mask is None:
        mask = x.new_ones(B, T, dtype=torch.bool)  # (B, T): every step valid
    weight = cell.conv.weight[:, cell.in_channels :]
    bias = cell.conv.bias if cell.conv.bias is not None else weight.new_zeros(weight.shape[0])
    h, c = state
    peephole = cell.peephole if cell.peephole is not None else h.new_zeros(3, 1)
    gate_norm = _norm_args(getattr(cell, "gate_norm", None) if cell.layer_norm else None, h)
    cell_norm = _norm_args(getattr(cell, "cell_norm", None) if cell.layer_norm else None, h)
    valid = mask.to(h.dtype).view(B, T, *([1] * (h.dim() - 1)))  # (B, T, 1, ..., 1), rank known here
    steps = torch._shape_as_tensor(x)[1]  # a tensor, so the trip count stays dynamic when traced
    out, h, c = _scripted_scan()(
        steps, x_gates, valid, h, c, weight, bias, _same_padding(cell), [1] * cell.dims, [0] * cell.dims,
        peephole, gate_norm, cell_norm,
        cell.hidden_channels, reverse,
    )
    # Values leaving a scripted function have unknown rank for the exporter; reshaping restores it.
    size = state[0].shape  # (B, C_h, *S)
    return out.reshape(B, T, *size[1:]), (h.reshape(size), c.reshape(size))

