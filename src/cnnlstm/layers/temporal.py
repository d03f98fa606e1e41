"""Apply a per-frame module to every step of a sequence at once.

``TimeDistributed`` folds time into the batch, ``(B, T, ...) -> (B*T, ...)``, runs the wrapped module once and
unfolds the result, so a CNN encodes all frames of a clip in one batched call (no Python loop over ``T``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.masking import check_lengths, check_mask, lengths_to_mask

__all__ = ["TimeDistributed"]


class TimeDistributed(nn.Module):
    """Run ``module`` on each step of a ``(B, T, ...)`` sequence by folding time into the batch.

    With a padding mask (or ``lengths``), only the valid frames are gathered and computed; the outputs are
    scattered back into a zero tensor, so padded frames cost nothing, come out as exact zeros and never
    influence a valid frame.

    BatchNorm semantics: because only valid frames reach the module, a BatchNorm inside it (in training mode)
    normalises with statistics over the valid frames of the batch, i.e. over up to ``B*T`` frames treated as
    one batch, never over padding. Its running statistics are updated the same way. ``chunk_size`` splits
    that batch, so in training mode each chunk gets its own statistics (and the running averages get one
    update per chunk); in eval mode, or for modules without batch statistics, chunked and unchunked runs are
    equal.

    Args:
        module: any module mapping ``(N, ...) -> (N, ...)`` (a frame encoder, a ``Linear``, ...).
        chunk_size: if set, run the folded batch in pieces of at most this many frames to bound peak memory
            (activations of a large CNN on ``B*T`` frames at once may not fit).

    Shape:
        - x: ``(B, T, *in)``; lengths: ``(B,)`` int, or mask: ``(B, T)`` bool (``True`` = valid), optional.
        - output: ``(B, T, *out)`` where ``module`` maps ``(N, *in) -> (N, *out)``; zeros at padded steps.

    Example:
        >>> td = TimeDistributed(nn.Linear(4, 2))
        >>> td(torch.randn(2, 3, 4), lengths=torch.tensor([3, 1])).shape
        torch.Size([2, 3, 2])
    """

    def __init__(self, module: nn.Module, chunk_size: int | None = None) -> None:
        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise ConfigError(f"TimeDistributed chunk_size must be a positive number of frames, got {chunk_size}")
        self.module = module
        self.chunk_size = chunk_size

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}" if self.chunk_size else ""

    def _run(self, frames: Tensor) -> Tensor:
        if self.chunk_size is None or frames.shape[0] <= self.chunk_size:
            return self.module(frames)
        return torch.cat([self.module(chunk) for chunk in frames.split(self.chunk_size)])  # (N, *out)

    def forward(self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Apply the module to every (valid) step; see the class docstring for shapes."""
        if x.dim() < 3:
            raise ShapeError(
                f"TimeDistributed expects a sequence (B, T, ...) with per-step inputs, got {tuple(x.shape)}"
            )
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, owner="TimeDistributed")
        mask = check_mask(mask, B, T, owner="TimeDistributed")
        if mask is None and lengths is not None:
            mask = lengths_to_mask(lengths, T)  # (B, T)
        if mask is not None:
            mask = mask.to(x.device)  # lengths may stay on the CPU (packing wants them there) while x is on a GPU
        frames = x.flatten(0, 1)  # (B*T, *in)
        if mask is None:
            y = self._run(frames)  # (B*T, *out)
            return y.reshape((B, T) + y.shape[1:])  # (B, T, *out)

        index = mask.flatten().nonzero().squeeze(1)  # (N,) positions of valid frames in the folded batch
        if index.numel() == 0:
            raise ShapeError("TimeDistributed got a padding mask with no valid step; every batch needs one")
        if index.numel() == B * T:  # nothing padded: skip the gather/scatter copies
            y = self._run(frames)  # (B*T, *out)
            return y.reshape((B, T) + y.shape[1:])  # (B, T, *out)
        y = self._run(frames.index_select(0, index))  # (N, *out)
        out = y.new_zeros((B * T,) + y.shape[1:])  # (B*T, *out)
        out = out.index_copy(0, index, y)  # padded rows stay zero; differentiable w.r.t. y
        return out.reshape((B, T) + y.shape[1:])  # (B, T, *out)
