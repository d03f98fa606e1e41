"""Small convolutional blocks shared by the hybrid models: conv -> norm -> activation, and squeeze-excite.

The 1-D blocks take series channels-first, ``(B, C, T)``, as ``nn.Conv1d`` does; models that hold series
batch-first ``(B, T, F)`` transpose before calling them. Both 1-D blocks accept an optional ``(B, T)`` padding
mask so a stack of them gives the same values on valid steps as a run on the unpadded series.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError, did_you_mean
from cnnlstm.layers.pooling import masked_mean

__all__ = ["ConvNormAct1d", "ConvNormAct2d", "SqueezeExcite1d", "make_activation", "ACTIVATIONS", "NORMS"]

ACTIVATIONS = ("relu", "gelu", "silu", "elu", "leaky_relu", "tanh", "none")
NORMS = ("batch", "group", "none")


def make_activation(name: str) -> nn.Module:
    """Build an activation module by name (one of :data:`ACTIVATIONS`).

    Args:
        name: ``"relu"``, ``"gelu"``, ... (see :data:`ACTIVATIONS`); unknown names raise ``ConfigError``.

    Example:
        >>> make_activation("relu")
        ReLU(inplace=True)
    """
    table = {
        "relu": lambda: nn.ReLU(inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
        "tanh": nn.Tanh,
        "none": nn.Identity,
    }
    if name not in table:
        raise ConfigError(f"unknown activation {name!r}{did_you_mean(name, table)}; use one of {ACTIVATIONS}")
    return table[name]()


def _make_norm(norm: str, channels: int, dims: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if norm == "group":
        # 8 groups when the width allows (GroupNorm works with batch size 1 and ignores batch composition).
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm {norm!r}{did_you_mean(norm, NORMS)}; use one of {NORMS}")


class _ConvNormAct(nn.Module):
    dims: int = 0

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: str = "batch",
        act: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if stride == 1 and kernel_size % 2 == 0:
            raise ConfigError(f"{type(self).__name__} keeps the length with odd kernel sizes, got {kernel_size}")
        conv = nn.Conv1d if self.dims == 1 else nn.Conv2d
        # "same" padding for stride 1; the bias is redundant before a norm that re-centres.
        self.conv = conv(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            groups=groups,
            bias=norm == "none",
        )
        self.norm = _make_norm(norm, out_channels, self.dims)
        self.act = make_activation(act)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _check(self, x: Tensor) -> None:
        layout = "(B, C, T)" if self.dims == 1 else "(B, C, H, W)"
        if x.dim() != self.dims + 2 or x.shape[1] != self.conv.in_channels:
            raise ShapeError(
                f"{type(self).__name__} expects {layout} with C={self.conv.in_channels}, got {tuple(x.shape)}"
            )


class ConvNormAct1d(_ConvNormAct):
    """``Conv1d`` (same padding) -> norm -> activation -> dropout over a channels-first series.

    With a padding ``mask``, padded steps are set to zero before the convolution and after the block, so each
    valid output equals the one from the unpadded series (zero padding at the end is what ``Conv1d`` sees
    there anyway). With ``norm="batch"`` in training mode the batch statistics still include padded steps;
    use ``norm="group"`` or eval mode when that matters.

    Args:
        in_channels: input channels ``C``.
        out_channels: output channels.
        kernel_size: odd kernel size (the length is kept when ``stride=1``).
        stride: convolution stride.
        dilation: convolution dilation.
        groups: convolution groups.
        norm: one of :data:`NORMS`.
        act: one of :data:`ACTIVATIONS`.
        dropout: dropout probability after the activation.

    Shape:
        - x: ``(B, C, T)``; mask: ``(B, T)`` bool, optional.
        - output: ``(B, out_channels, T')`` (``T' = T`` for stride 1).

    Example:
        >>> import torch
        >>> ConvNormAct1d(3, 8, 5)(torch.randn(2, 3, 16)).shape
        torch.Size([2, 8, 16])
    """

    dims = 1

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self._check(x)
        if mask is not None:
            if self.conv.stride[0] != 1:
                raise ConfigError("ConvNormAct1d supports a padding mask only with stride=1")
            keep = mask.unsqueeze(1).to(x.dtype)  # (B, 1, T)
            x = x * keep
        x = self.drop(self.act(self.norm(self.conv(x))))  # (B, out_channels, T')
        return x if mask is None else x * keep


class ConvNormAct2d(_ConvNormAct):
    """``Conv2d`` (same padding) -> norm -> activation -> dropout.

    Args:
        in_channels: input channels ``C``.
        out_channels: output channels.
        kernel_size: odd kernel size (height and width are kept when ``stride=1``).
        stride: convolution stride.
        dilation: convolution dilation.
        groups: convolution groups.
        norm: one of :data:`NORMS`.
        act: one of :data:`ACTIVATIONS`.
        dropout: dropout probability after the activation.

    Shape:
        - x: ``(B, C, H, W)``.
        - output: ``(B, out_channels, H', W')``.

    Example:
        >>> import torch
        >>> ConvNormAct2d(3, 8, stride=2)(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 8, 16, 16])
    """

    dims = 2

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.drop(self.act(self.norm(self.conv(x))))  # (B, out_channels, H', W')


class SqueezeExcite1d(nn.Module):
    """Squeeze-and-excitation over time (Hu et al. 2018), as used by MLSTM-FCN (Karim et al. 2019).

    Each channel is rescaled by a gate computed from its mean over the (valid) steps:
    ``x * sigmoid(W2 relu(W1 mean_t x))``.

    Args:
        channels: channels ``C``.
        reduction: bottleneck ratio of the gate MLP (16 in MLSTM-FCN); the bottleneck has at least 1 unit.

    Shape:
        - x: ``(B, C, T)``; mask: ``(B, T)`` bool, optional (padded steps are left out of the mean).
        - output: ``(B, C, T)``.

    Example:
        >>> import torch
        >>> SqueezeExcite1d(32)(torch.randn(2, 32, 10)).shape
        torch.Size([2, 32, 10])
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )
        self.channels = channels

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.channels:
            raise ShapeError(f"SqueezeExcite1d expects (B, C, T) with C={self.channels}, got {tuple(x.shape)}")
        squeezed = x.mean(dim=2) if mask is None else masked_mean(x.transpose(1, 2), mask)  # (B, C)
        return x * self.gate(squeezed).unsqueeze(2)  # (B, C, T)
