"""Pooling over time that respects padding: (B, T, D) -> (B, D).

Every function takes the padding as a ``(B, T)`` boolean mask (``True`` = valid step) or as ``(B,)`` lengths;
padded steps never influence the result. Without padding information the plain reductions run, which keeps
the unpadded path traceable for ONNX export.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError, did_you_mean
from cnnlstm.layers.masking import check_lengths, check_mask, lengths_to_mask

__all__ = ["TemporalPool", "POOLING_MODES", "masked_mean", "masked_max", "last_valid"]

POOLING_MODES = ("last", "mean", "max", "attention")


def _expand_mask(mask: Tensor, x: Tensor) -> Tensor:
    # (B, T) -> (B, T, 1, ...) so the mask broadcasts over x's feature dims.
    return mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim()))


def masked_mean(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Mean over the valid steps only.

    Args:
        x: padded values.
        mask: ``True`` on valid steps; its dims are the leading dims of ``x``.
        dim: the dimension to reduce (time).

    Returns:
        The mean over valid steps; a sequence with no valid step gives zeros.

    Shape:
        - x: ``(B, T, *)``, mask: ``(B, T)``.
        - output: ``(B, *)``.

    Example:
        >>> masked_mean(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[True, True, False]]))
        tensor([[2.]])
    """
    m = _expand_mask(mask, x).to(x.dtype)  # (B, T, 1, ...)
    total = (x * m).sum(dim=dim)  # (B, *)
    count = m.sum(dim=dim).clamp(min=1)  # (B, 1, ...) avoids 0/0 for empty sequences
    return total / count


def masked_max(x: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Maximum over the valid steps only.

    Args:
        x: padded values.
        mask: ``True`` on valid steps; its dims are the leading dims of ``x``.
        dim: the dimension to reduce (time).

    Returns:
        The maximum over valid steps; a sequence with no valid step gives zeros.

    Shape:
        - x: ``(B, T, *)``, mask: ``(B, T)``.
        - output: ``(B, *)``.

    Example:
        >>> masked_max(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([[True, True, False]]))
        tensor([[3.]])
    """
    m = _expand_mask(mask, x)  # (B, T, 1, ...)
    out = x.masked_fill(~m, float("-inf")).amax(dim=dim)  # (B, *)
    any_valid = m.any(dim=dim)  # (B, 1, ...)
    return torch.where(any_valid, out, torch.zeros_like(out))


def last_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """The last valid step of each sequence, ``x[b, lengths[b] - 1]``.

    Args:
        x: padded values, time on dim 1.
        lengths: true length of each sequence (``>= 1``).

    Shape:
        - x: ``(B, T, *)``, lengths: ``(B,)`` integer.
        - output: ``(B, *)``.

    Example:
        >>> last_valid(torch.tensor([[[1.0], [3.0], [100.0]]]), torch.tensor([2]))
        tensor([[3.]])
    """
    index = (lengths.to(device=x.device, dtype=torch.long) - 1).clamp(min=0)  # (B,)
    return x[torch.arange(x.shape[0], device=x.device), index]  # (B, *)


class TemporalPool(nn.Module):
    """Reduce a padded sequence of feature vectors to one vector per sequence.

    Modes:
        - ``"last"``: the last *valid* step (``x[b, lengths[b] - 1]``), not the last padded one.
        - ``"mean"`` / ``"max"``: over valid steps.
        - ``"attention"``: a learned softmax over steps (additive scoring ``v^T tanh(W x_t)``, Yang et al.
          2016); padded steps get exactly zero weight. Needs ``input_size``.

    Args:
        mode: one of :data:`POOLING_MODES`.
        input_size: feature size ``D``; required for ``"attention"``.

    Shape:
        - x: ``(B, T, D)``; lengths: ``(B,)`` int or mask: ``(B, T)`` bool (``True`` = valid), both optional.
        - output: ``(B, D)``.

    Example:
        >>> pool = TemporalPool("last")
        >>> pool(torch.randn(2, 4, 8), lengths=torch.tensor([4, 2])).shape
        torch.Size([2, 8])
    """

    def __init__(self, mode: str = "last", input_size: int | None = None) -> None:
        super().__init__()
        if mode not in POOLING_MODES:
            raise ConfigError(
                f"unknown pooling mode {mode!r}{did_you_mean(mode, POOLING_MODES)}; use one of {POOLING_MODES}"
            )
        if mode == "attention" and (input_size is None or input_size < 1):
            raise ConfigError("TemporalPool('attention') needs input_size (the feature size D of its input)")
        self.mode = mode
        self.input_size = input_size
        if mode == "attention":
            self.score = nn.Sequential(
                nn.Linear(input_size, input_size), nn.Tanh(), nn.Linear(input_size, 1, bias=False)
            )

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", input_size={self.input_size}" if self.input_size else "")

    def _padding(self, x: Tensor, lengths: Tensor | None, mask: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        B, T = x.shape[:2]
        lengths = check_lengths(lengths, B, T, owner="TemporalPool")
        mask = check_mask(mask, B, T, owner="TemporalPool")
        if mask is None and lengths is not None:
            mask = lengths_to_mask(lengths, T)  # (B, T)
        return lengths, mask

    def attention_weights(self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Softmax weights over steps used by ``"attention"`` pooling (zero on padded steps).

        Shape:
            - x: ``(B, T, D)``; output: ``(B, T)``, each row sums to 1.
        """
        if self.mode != "attention":
            raise ConfigError(f"attention_weights needs mode='attention', this pool is {self.mode!r}")
        self._check_input(x)
        _, mask = self._padding(x, lengths, mask)
        scores = self.score(x).squeeze(-1)  # (B, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=1)  # (B, T)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ShapeError(f"TemporalPool expects a sequence (B, T, D), got {tuple(x.shape)}")
        if self.input_size is not None and x.shape[2] != self.input_size:
            raise ShapeError(f"TemporalPool was built for D={self.input_size}, got input {tuple(x.shape)}")

    def forward(self, x: Tensor, lengths: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Pool ``x`` over time; pass ``lengths`` or ``mask`` when the batch is padded."""
        self._check_input(x)
        if self.mode == "attention":
            weights = self.attention_weights(x, lengths, mask)  # (B, T)
            return torch.bmm(weights.unsqueeze(1), x).squeeze(1)  # (B, D)
        lengths, mask = self._padding(x, lengths, mask)
        if self.mode == "last":
            if lengths is None and mask is not None:
                # Last True index; also right for non-prefix masks.
                steps = torch.arange(1, x.shape[1] + 1, device=x.device)  # (T,)
                lengths = (mask * steps).amax(dim=1)  # (B,)
            return x[:, -1] if lengths is None else last_valid(x, lengths)  # (B, D)
        if self.mode == "mean":
            return x.mean(dim=1) if mask is None else masked_mean(x, mask)  # (B, D)
        return x.amax(dim=1) if mask is None else masked_max(x, mask)  # (B, D)
