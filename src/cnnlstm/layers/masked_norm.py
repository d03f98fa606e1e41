"""Batch normalisation over the valid steps of a padded series.

``nn.BatchNorm1d`` in training mode averages over every position of ``(B, C, T)``, padding included, so the
statistics (and through them every valid output) depend on how much padding the batch carries. This
version takes the padding mask and computes the batch statistics over valid steps only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.errors import ShapeError

__all__ = ["MaskedBatchNorm1d"]


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` for ``(B, C, T)`` series whose training statistics use valid steps only.

    Without a mask, or in eval mode with running statistics, it is exactly ``nn.BatchNorm1d`` (and stays
    traceable for export). With a mask in training mode the mean and the biased variance that normalise the
    batch, and the running statistics (unbiased variance, like PyTorch), are taken over the valid ``(b, t)``
    positions; padded outputs are left unspecified, callers re-zero them. State-dict keys equal
    ``BatchNorm1d``'s, so weights move freely between the two.

    Args:
        num_features: channels ``C``.
        eps: added to the variance for stability.
        momentum: running-statistics momentum (``None`` for a cumulative average), as in ``BatchNorm1d``.
        affine: learn a per-channel scale and shift.
        track_running_stats: keep running statistics for eval mode.

    Shape:
        - x: ``(B, C, T)``; mask: ``(B, T)`` bool (``True`` = valid step), optional.
        - output: ``(B, C, T)``.

    Example:
        >>> bn = MaskedBatchNorm1d(4)
        >>> mask = torch.tensor([[True, True, False], [True, True, True]])
        >>> bn(torch.randn(2, 4, 3), mask).shape
        torch.Size([2, 4, 3])
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3:
            raise ShapeError(f"MaskedBatchNorm1d expects a series (B, C, T), got {tuple(x.shape)}")
        use_batch_stats = self.training or not self.track_running_stats
        if mask is None or not use_batch_stats:
            return super().forward(x)
        if mask.shape != (x.shape[0], x.shape[2]):
            want = (x.shape[0], x.shape[2])
            raise ShapeError(f"MaskedBatchNorm1d expects a padding mask (B, T) = {want}, got {tuple(mask.shape)}")
        # Statistics in float32 whatever the input and whatever autocast would pick for einsum (bf16 sums over
        # B*T lose digits, and the running buffers are float32), as BatchNorm computes them under autocast.
        with torch.autocast(x.device.type, enabled=False):
            return self._normalise(x.float(), mask.float())

    def _normalise(self, x: Tensor, keep: Tensor) -> Tensor:
        count = keep.sum()
        # Masked sums as contractions over (b, t) and the affine map as one addcmul: fewer full passes over
        # (B, C, T) forward and backward than multiply-by-mask-then-sum (about 1.5x faster on the CPU).
        mean = torch.einsum("bct,bt->c", x, keep) / count  # (C,)
        centred = x - mean[:, None]  # (B, C, T)
        var = torch.einsum("bct,bt->c", centred.square(), keep) / count  # (C,) biased, as BatchNorm normalises
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, count)
        scale = torch.rsqrt(var + self.eps)  # (C,)
        if not self.affine:
            return centred * scale[:, None]  # (B, C, T)
        return torch.addcmul(self.bias[:, None], centred, (scale * self.weight)[:, None])  # (B, C, T)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(mean.detach(), momentum)
        self.running_var.lerp_(unbiased.detach(), momentum)
