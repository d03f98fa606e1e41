"""An ``nn.LSTM`` over a padded batch: every length-aware LSTM call in cnnlstm goes through :func:`run_lstm`.

Packing (``pack_padded_sequence``) is how eager PyTorch stops the recurrence at each sequence's end, but on the
CPU a packed LSTM runs step by step instead of through the fused kernel (several times slower for a training
step), and packing does not export (neither to ONNX nor as a dynamic TorchScript graph). The same numbers come
out of plain, unpacked LSTM calls plus two index tricks, because padding sits *after* the valid steps:

- forward direction: step ``t`` only depends on steps ``<= t``, so the output at ``lengths - 1`` is exactly the
  packed run's final state, whatever the padding holds;
- backward direction: reverse each sequence *within its length* (padding stays at the end), run a forward
  pass with the backward weights, read the state at ``lengths - 1`` (the backward state after step 0), and
  reverse the outputs back.

Stacked bidirectional layers need both directions' outputs at every step as the next layer's input, so those
run layer by layer (two fused calls per layer); a unidirectional stack runs in one call. :func:`run_lstm`
takes this masked path on the CPU and while tracing for export, and packs on CUDA, where cuDNN's packed
kernel is fast and skips the padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlstm.errors import ConfigError
from cnnlstm.layers.pooling import last_valid

__all__ = ["masked_lstm", "packed_lstm", "reverse_padded", "run_lstm"]


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence's valid steps in place; padded steps stay where they are. Its own inverse.

    Args:
        x: padded batch, time on dim 1.
        lengths: valid steps per sequence, in ``[1, T]``.

    Shape:
        - x: ``(B, T, D)``; lengths: ``(B,)``; output: ``(B, T, D)``.

    Example:
        >>> reverse_padded(torch.tensor([[[1.0], [2.0], [9.0]]]), torch.tensor([2])).flatten().tolist()
        [2.0, 1.0, 9.0]
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    n = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    index = torch.where(steps < n, n - 1 - steps, steps)  # (B, T): source step of each output step
    return x.gather(1, index.unsqueeze(2).expand_as(x))  # (B, T, D)


def _direction(lstm: nn.LSTM, layer: int, reverse: bool, x: Tensor) -> Tensor:
    """One layer and direction of ``lstm`` as a forward, single-layer run from zero state."""
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if lstm.bias else ("weight_ih", "weight_hh")
    weights = [getattr(lstm, name + suffix) for name in names]
    h0 = x.new_zeros(1, x.shape[0], lstm.hidden_size)  # (1, B, H)
    # The functional form of nn.LSTM.forward (same aten::lstm op, which exports to ONNX LSTM), on a subset of
    # the weights: one layer, one direction, no dropout, batch_first.
    out, _, _ = torch.lstm(x, (h0, h0), weights, lstm.bias, 1, 0.0, False, False, True)
    return out  # (B, T, H)


def masked_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``lstm`` on a padded batch exactly as the packed run does, without packing.

    In training mode the dropout between stacked layers applies as in ``nn.LSTM`` (to every layer's output but
    the last's); only the random draws differ from a packed run's.

    Args:
        lstm: a ``batch_first`` ``nn.LSTM`` without projections.
        x: padded input; padded steps may hold anything.
        lengths: valid steps per sequence, in ``[1, T]``.

    Returns:
        ``(outputs, final)``: every step's last-layer output, zero at padded steps (as ``pad_packed_sequence``
        gives), and the last layer's final hidden state, directions concatenated (``h_n[-D:]``).

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int.
        - outputs: ``(B, T, D * H)``; final: ``(B, D * H)``.

    Example:
        >>> lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
        >>> out, final = masked_lstm(lstm, torch.randn(2, 5, 3), torch.tensor([5, 2]))
        >>> out.shape, final.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 8]))
    """
    if not lstm.batch_first or lstm.proj_size:
        raise ConfigError("masked_lstm needs a batch_first nn.LSTM without proj_size (cnnlstm's models use those)")
    lengths = lengths.to(device=x.device, dtype=torch.long)
    keep = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)  # (B, T, 1)
    if not lstm.bidirectional:
        # Future padding cannot reach a valid step, so the plain stacked run is already exact.
        out, _ = lstm(x)  # (B, T, H)
        return out * keep, last_valid(out, lengths)  # (B, T, H), (B, H)
    finals: list[Tensor] = []
    for layer in range(lstm.num_layers):
        if layer > 0:
            x = F.dropout(x, lstm.dropout, lstm.training)  # nn.LSTM's dropout between stacked layers
        forward = _direction(lstm, layer, False, x)  # (B, T, H)
        backward_rev = _direction(lstm, layer, True, reverse_padded(x, lengths))  # (B, T, H), time reversed
        finals = [last_valid(forward, lengths), last_valid(backward_rev, lengths)]  # 2 x (B, H)
        x = torch.cat([forward, reverse_padded(backward_rev, lengths)], dim=2)  # (B, T, 2H)
    return x * keep, torch.cat(finals, dim=1)  # (B, T, 2H), (B, 2H)


def packed_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run ``lstm`` on a padded batch by packing it; same contract as :func:`masked_lstm`.

    Args:
        lstm: a ``batch_first`` ``nn.LSTM``.
        x: padded input.
        lengths: valid steps per sequence, in ``[1, T]``.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)`` int.
        - outputs: ``(B, T, D * H)``, zeros at padded steps; final: ``(B, D * H)``.

    Example:
        >>> out, final = packed_lstm(nn.LSTM(3, 4, batch_first=True), torch.randn(2, 5, 3), torch.tensor([5, 2]))
        >>> out.shape, final.shape
        (torch.Size([2, 5, 4]), torch.Size([2, 4]))
    """
    # pack_padded_sequence wants CPU lengths; enforce_sorted=False returns h_n in the batch's own order.
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    packed_out, (h_n, _) = lstm(packed)
    outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])  # (B, T, D*H)
    return outputs, _final(lstm, h_n)


def _final(lstm: nn.LSTM, h_n: Tensor) -> Tensor:
    """The last layer's final states, directions concatenated: ``(L * D, B, H) -> (B, D * H)``."""
    directions = 2 if lstm.bidirectional else 1
    return h_n[-directions:].transpose(0, 1).flatten(1)


def run_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Every step's output and the last layer's final hidden state of a padded batch; the one LSTM entry point.

    Without ``lengths`` it is the plain call. With them the recurrence stops at each sequence's end: through
    :func:`packed_lstm` on CUDA (cuDNN's packed kernel skips the padding), and through :func:`masked_lstm`
    elsewhere and while tracing (the CPU runs a packed LSTM step by step, and packing does not export). Both
    give the same values and gradients.

    Args:
        lstm: a ``batch_first`` ``nn.LSTM`` without projections.
        x: the padded input.
        lengths: valid steps per sequence (already checked, in ``[1, T]``), or ``None``.

    Shape:
        - x: ``(B, T, F)``; lengths: ``(B,)``.
        - outputs: ``(B, T, D * H)``, zeros at padded steps; final: ``(B, D * H)``.

    Example:
        >>> lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
        >>> out, final = run_lstm(lstm, torch.randn(2, 5, 3), torch.tensor([5, 2]))
        >>> out.shape, final.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 8]))
    """
    if lengths is None:
        outputs, (h_n, _) = lstm(x)  # (B, T, D*H); h_n (L*D, B, H)
        return outputs, _final(lstm, h_n)
    if x.is_cuda and not torch.jit.is_tracing():
        return packed_lstm(lstm, x, lengths)
    return masked_lstm(lstm, x, lengths)
