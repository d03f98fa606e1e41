"""Convolutional LSTM (Shi et al. 2015): an LSTM whose gates are convolutions, for sequences of feature maps.

A ConvLSTM keeps a hidden state and a cell state that are *maps* ``(B, C_h, *S)`` instead of vectors, so it
models motion and local structure over time at once. PyTorch has no ConvLSTM; this one adds what the usual
copies lack: 1-D and 2-D (and 3-D) inputs, stacked and bidirectional layers, initial and final states
(streaming), padding-aware ``lengths``, Hadamard peepholes and layer normalisation.

Gate equations of one step (``*`` convolution, ``∘`` Hadamard product, ``[x; h]`` channel concatenation)::

    i, f, g, o = split(W * [x_t; h_{t-1}] + b)          # one convolution, gates in this order
    i = σ(i + w_ci ∘ c_{t-1})                           # peephole terms only with peephole=True
    f = σ(f + w_cf ∘ c_{t-1})
    c_t = f ∘ c_{t-1} + i ∘ tanh(g)
    o = σ(o + w_co ∘ c_t)
    h_t = o ∘ tanh(c_t)                                 # tanh(LN(c_t)) with layer_norm=True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.conv_lstm_scan import scan_direction
from cnnlstm.layers.masking import check_lengths, lengths_to_mask

__all__ = ["ConvLSTMCell", "ConvLSTM", "State"]

#: ``(h, c)``: hidden and cell state maps, each ``(B, C_h, *S)``.
State = tuple[Tensor, Tensor]

_CONVS = {1: (nn.Conv1d, F.conv1d), 2: (nn.Conv2d, F.conv2d), 3: (nn.Conv3d, F.conv3d)}


def _tuple(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    out = (value,) * dims if isinstance(value, int) else tuple(value)
    if len(out) != dims or any(not isinstance(v, int) or v < 1 for v in out):
        raise ConfigError(f"{name} must be a positive int or {dims} positive ints, got {value!r}")
    return out


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: ``(x_t, (h, c)) -> (h', c')`` with convolutional gates.

    The four gates come from a single convolution over the channel concatenation ``[x_t; h]``; its output
    channels hold the gates in the order **i, f, g, o** (input, forget, candidate, output), ``hidden_channels``
    each. Convolutions use ``"same"`` padding, so the state keeps the spatial size of the input. The forget
    gate's bias starts at 1 (Jozefowicz et al. 2015) so that early in training the cell remembers.

    Peepholes (``peephole=True``) are Hadamard weights ``w_ci, w_cf, w_co`` of shape ``(C_h, *S)``, one weight
    per channel *and position*, as in Shi et al. (2015); they therefore need ``spatial_size`` and the cell
    then only accepts inputs of that spatial size.

    Layer normalisation (``layer_norm=True``, after Ba et al. 2016) normalises each gate's pre-activation over
    ``(C_h, *S)`` per sample (a ``GroupNorm`` with one group per gate) and the cell state before its output
    ``tanh``; the returned ``c`` stays unnormalised. Its per-channel shift replaces the convolution's bias.

    ``in_channels=0`` makes a cell without input, driven by its state alone (``x_t=None``): the forecasting
    stack of Shi et al.'s encoder-forecaster.

    Args:
        in_channels: channels ``C`` of ``x_t`` (0 for an input-less cell).
        hidden_channels: channels ``C_h`` of ``h`` and ``c``.
        kernel_size: gate convolution kernel, an int or one int per spatial dim.
        dims: number of spatial dims of the maps: 1 (sequences of signals), 2 (frames) or 3 (volumes).
        bias: add a learned bias to the gates (ignored with ``layer_norm``, whose shift plays that role).
        peephole: add Shi et al.'s Hadamard peephole connections from the cell state to the gates.
        layer_norm: normalise gate pre-activations and the cell state.
        spatial_size: ``S``, required by ``peephole`` (the peephole weights have one value per position).

    Shape:
        - x_t: ``(B, C, *S)`` (``None`` when ``in_channels=0``).
        - state: ``(h, c)``, each ``(B, C_h, *S)``; ``None`` starts from zeros.
        - output: ``(h', c')``, each ``(B, C_h, *S)``.

    Example:
        >>> cell = ConvLSTMCell(3, 8, kernel_size=3)
        >>> h, c = cell(torch.randn(2, 3, 16, 16))
        >>> h.shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int | Sequence[int],
        *,
        dims: int = 2,
        bias: bool = True,
        peephole: bool = False,
        layer_norm: bool = False,
        spatial_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if dims not in _CONVS:
            raise ConfigError(f"ConvLSTMCell supports dims=1, 2 or 3 spatial dims, got dims={dims}")
        if in_channels < 0 or hidden_channels < 1:
            raise ConfigError(
                f"ConvLSTMCell needs in_channels >= 0 and hidden_channels >= 1, got {in_channels}, {hidden_channels}"
            )
        if peephole and spatial_size is None:
            raise ConfigError(
                "peephole=True needs spatial_size: Shi et al.'s peepholes hold one weight per channel and position"
            )
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = _tuple(kernel_size, dims, "kernel_size")
        self.dims = dims
        self.spatial_size = None if spatial_size is None else _tuple(spatial_size, dims, "spatial_size")
        self.layer_norm = layer_norm
        conv_cls, self._conv_fn = _CONVS[dims]
        # One convolution over [x; h]; "same" padding keeps the state the size of the input.
        self.conv = conv_cls(
            in_channels + hidden_channels, 4 * hidden_channels, self.kernel_size, padding="same",
            bias=bias and not layer_norm,
        )
        if layer_norm:
            self.gate_norm = nn.GroupNorm(4, 4 * hidden_channels)  # one group per gate: LN over (C_h, *S)
            self.cell_norm = nn.GroupNorm(1, hidden_channels)
        if peephole:
            self.peephole = nn.Parameter(torch.empty(3, hidden_channels, *self.spatial_size))  # w_ci, w_cf, w_co
        else:
            self.register_parameter("peephole", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default conv init; forget-gate bias 1; peepholes like the gate bias."""
        self.conv.reset_parameters()
        fan_in = self.conv.weight[0].numel()
        bias = self.gate_norm.bias if self.layer_norm else self.conv.bias
        if bias is not None:
            with torch.no_grad():
                bias[self.hidden_channels : 2 * self.hidden_channels].fill_(1.0)  # the f chunk
        if self.peephole is not None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.peephole, -bound, bound)

    def extra_repr(self) -> str:
        extra = f", peephole=True, spatial_size={self.spatial_size}" if self.peephole is not None else ""
        return f"dims={self.dims}, layer_norm={self.layer_norm}{extra}"

    def init_state(self, x_like: Tensor, spatial_size: Sequence[int] | None = None) -> State:
        """Zero ``(h, c)`` for the batch, device and dtype of ``x_like`` (``(B, ...)``) and spatial size ``S``.

        Shape:
            - x_like: ``(B, ...)``; ``spatial_size`` defaults to ``x_like.shape[-dims:]``.
            - output: ``(h, c)``, each ``(B, C_h, *S)``.
        """
        size = tuple(x_like.shape[-self.dims :]) if spatial_size is None else tuple(spatial_size)
        h = x_like.new_zeros(x_like.shape[0], self.hidden_channels, *size)  # (B, C_h, *S)
        return h, h.clone()

    def input_gates(self, x: Tensor) -> Tensor:
        """The input half of the gate convolution, ``W_x * x`` (no bias), for any number of steps at once.

        ``W * [x; h] = W_x * x + W_h * h`` (zero padding is per channel), so a layer can convolve all time
        steps of its input in one batched call and only convolve ``h`` inside the recurrence.

        Shape:
            - x: ``(N, C, *S)``; output: ``(N, 4 * C_h, *S)``.
        """
        return self._conv_fn(x, self.conv.weight[:, : self.in_channels], None, padding="same")

    def step(self, x_gates: Tensor | None, state: State, hidden_weight: Tensor | None = None) -> State:
        """Advance one step given the precomputed input gates ``W_x * x_t`` (``None`` for an input-less cell).

        Args:
            x_gates: output of :meth:`input_gates` for this step, or ``None``.
            state: ``(h, c)`` of the previous step.
            hidden_weight: ``self.conv.weight[:, in_channels:]`` sliced once per sequence (saves a slice per step).

        Shape:
            - x_gates: ``(B, 4 * C_h, *S)``; state and output: ``(h, c)``, each ``(B, C_h, *S)``.
        """
        h, c = state
        if self.peephole is not None and tuple(c.shape[2:]) != self.spatial_size:
            raise ShapeError(
                f"ConvLSTMCell was built with spatial_size={self.spatial_size} for its peepholes, "
                f"got maps of size {tuple(c.shape[2:])}; build it with the input's spatial size"
            )
        weight = self.conv.weight[:, self.in_channels :] if hidden_weight is None else hidden_weight
        gates = self._conv_fn(h, weight, self.conv.bias, padding="same")  # (B, 4*C_h, *S)
        if x_gates is not None:
            gates = gates + x_gates
        if self.layer_norm:
            gates = self.gate_norm(gates)
        i, f, g, o = gates.chunk(4, dim=1)  # each (B, C_h, *S)
        if self.peephole is not None:
            w_ci, w_cf, w_co = self.peephole  # each (C_h, *S)
            i = i + w_ci * c
            f = f + w_cf * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole is not None:
            o = o + w_co * c
        h = torch.sigmoid(o) * torch.tanh(self.cell_norm(c) if self.layer_norm else c)
        return h, c

    def forward(self, x_t: Tensor | None, state: State | None = None) -> State:
        """One step; see the class docstring for shapes."""
        if x_t is None:
            if self.in_channels != 0 or state is None:
                raise ShapeError(
                    "ConvLSTMCell got x_t=None: only a cell with in_channels=0, given a state, runs without input"
                )
            return self.step(None, state)
        if x_t.dim() != 2 + self.dims or x_t.shape[1] != self.in_channels:
            layout = ", ".join(["B", "C"] + [f"S{k}" for k in range(self.dims)])
            raise ShapeError(
                f"ConvLSTMCell expects x_t ({layout}) with C={self.in_channels}, got {tuple(x_t.shape)}"
            )
        if state is None:
            state = self.init_state(x_t)
        return self.step(self.input_gates(x_t), state)


class ConvLSTM(nn.Module):
    """A stack of ConvLSTM layers over a sequence of maps, optionally bidirectional, with states and lengths.

    Mirrors ``nn.LSTM(batch_first=True)``: layer ``l + 1`` reads layer ``l``'s output (both directions
    concatenated on channels), ``dropout`` is applied between layers, and states are listed per layer and
    direction in the order ``[layer0_fwd, layer0_bwd, layer1_fwd, ...]``.

    States make it streamable: running a sequence in two halves, passing the first call's final states as
    the second call's ``state``, equals one run over the whole sequence (forward direction).

    With ``lengths``, steps at ``t >= lengths[b]`` are padding: they do not update the state (the final state
    is the state after the last valid step), their outputs are zero, and the backward direction starts at
    the last valid step. Padded and unpadded batches therefore give the same results. For speed the input
    half of every gate convolution runs for all steps in one batched call; only ``W_h * h`` runs per step.
    While traced (``torch.jit.trace``, ONNX export) the time loop is a scripted loop
    (:mod:`cnnlstm.layers.conv_lstm_scan`), so the traced graph takes any number of steps.

    Args:
        in_channels: channels ``C`` of the input maps.
        hidden_channels: channels per layer: an int for all layers or a list with one int per layer.
        kernel_size: gate kernel (an int or one int per spatial dim), the same for every layer.
        num_layers: number of stacked layers (defaults to ``len(hidden_channels)`` for a list).
        dims: spatial dims of the maps, 1, 2 or 3.
        bidirectional: add a backward layer per layer; outputs then have ``2 * C_h`` channels.
        dropout: dropout on each layer's output except the last.
        bias: learned gate bias (see :class:`ConvLSTMCell`).
        peephole: Hadamard peepholes; needs ``spatial_size``.
        layer_norm: layer-normalised gates and cell state.
        spatial_size: ``S``, needed only with ``peephole``.

    Shape:
        - x: ``(B, T, C, *S)``.
        - state: ``None`` (zeros) or a list of ``num_layers * num_directions`` pairs ``(h, c)``, each
          ``(B, C_h, *S)`` of that layer.
        - lengths: ``(B,)`` int64 with values in ``[1, T]``, or ``None``.
        - output: ``(B, T, C_out, *S)`` with ``C_out = hidden_channels[-1] * num_directions``, and the list of
          final states ``(h_n, c_n)`` in the order of ``state``.

    Example:
        >>> lstm = ConvLSTM(1, [8, 16], kernel_size=3, num_layers=2)
        >>> out, states = lstm(torch.randn(2, 5, 1, 32, 32))
        >>> out.shape, len(states)
        (torch.Size([2, 5, 16, 32, 32]), 2)
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int | Sequence[int],
        kernel_size: int | Sequence[int],
        num_layers: int | None = None,
        *,
        dims: int = 2,
        bidirectional: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        peephole: bool = False,
        layer_norm: bool = False,
        spatial_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(hidden_channels, int):
            hidden = [hidden_channels] * (1 if num_layers is None else num_layers)
        else:
            hidden = list(hidden_channels)
            if num_layers is not None and num_layers != len(hidden):
                raise ConfigError(f"num_layers={num_layers} but hidden_channels lists {len(hidden)} layers {hidden}")
        if not hidden:
            raise ConfigError("ConvLSTM needs at least one layer")
        if in_channels < 1:
            raise ConfigError(f"ConvLSTM needs in_channels >= 1, got {in_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.hidden_channels = hidden
        self.num_layers = len(hidden)
        self.dims = dims
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.out_channels = hidden[-1] * self.num_directions
        cells = []
        for layer, width in enumerate(hidden):
            layer_in = in_channels if layer == 0 else hidden[layer - 1] * self.num_directions
            for _ in range(self.num_directions):
                cells.append(
                    ConvLSTMCell(
                        layer_in, width, kernel_size, dims=dims, bias=bias, peephole=peephole,
                        layer_norm=layer_norm, spatial_size=spatial_size,
                    )
                )
        self.cells = nn.ModuleList(cells)  # index layer * num_directions + direction
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _check(self, x: Tensor, state: list[State] | None) -> None:
        layout = ", ".join(["B", "T", "C"] + [f"S{k}" for k in range(self.dims)])
        if x.dim() != 3 + self.dims or x.shape[2] != self.in_channels:
            raise ShapeError(
                f"ConvLSTM expects a sequence of maps ({layout}) with C={self.in_channels}, got {tuple(x.shape)}"
            )
        if state is None:
            return
        if len(state) != len(self.cells):
            raise ShapeError(
                f"ConvLSTM expects {len(self.cells)} (h, c) states (num_layers * num_directions), got {len(state)}"
            )
        B, S = x.shape[0], tuple(x.shape[3:])
        for k, (h, c) in enumerate(state):
            want = (B, self.cells[k].hidden_channels, *S)
            if tuple(h.shape) != want or tuple(c.shape) != want:
                raise ShapeError(
                    f"ConvLSTM state {k} (layer {k // self.num_directions}) must be two maps of shape {want}, "
                    f"got {tuple(h.shape)} and {tuple(c.shape)}"
                )

    def _run_direction(
        self, cell: ConvLSTMCell, x: Tensor, state: State, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, State]:
        if torch.jit.is_tracing():
            # Tracing (TorchScript, ONNX export) would unroll the Python loop below and freeze T into the graph;
            # the scripted loop stays a loop over a run-time number of steps, with the same results.
            return scan_direction(cell, x, state, mask, reverse)
        B, T = x.shape[:2]
        x_gates = cell.input_gates(x.flatten(0, 1)).unflatten(0, (B, T))  # (B, T, 4*C_h, *S)
        hidden_weight = cell.conv.weight[:, cell.in_channels :]
        h, c = state
        outputs: list[Tensor] = [x_gates] * T  # placeholders, every slot is overwritten
        for t in range(T - 1, -1, -1) if reverse else range(T):
            h_new, c_new = cell.step(x_gates[:, t], (h, c), hidden_weight)  # each (B, C_h, *S)
            if mask is None:
                h, c = h_new, c_new
                outputs[t] = h
            else:
                # Padded steps keep the old state and output zeros; the backward pass thus starts at the last
                # valid step with its initial state.
                valid = mask[:, t].view(B, *([1] * (h.dim() - 1)))  # (B, 1, ..., 1)
                h = torch.where(valid, h_new, h)
                c = torch.where(valid, c_new, c)
                outputs[t] = h_new * valid
        return torch.stack(outputs, dim=1), (h, c)  # (B, T, C_h, *S)

    def forward(
        self, x: Tensor, state: list[State] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[State]]:
        """Run the stack over ``x``; see the class docstring for shapes."""
        self._check(x, state)
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, owner="ConvLSTM")
        mask = None if lengths is None else lengths_to_mask(lengths.to(x.device), T)  # (B, T)
        finals: list[State] = []
        layer_input = x  # (B, T, C, *S)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                k = layer * self.num_directions + direction
                cell = self.cells[k]
                init = cell.init_state(x) if state is None else state[k]
                out, final = self._run_direction(cell, layer_input, init, mask, reverse=direction == 1)
                outputs.append(out)
                finals.append(final)
            layer_input = torch.cat(outputs, dim=2) if self.bidirectional else outputs[0]  # (B, T, C_l, *S)
            if layer < self.num_layers - 1:
                layer_input = self.dropout(layer_input)
        return layer_input, finals
