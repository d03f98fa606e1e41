"""The built-in small CNN: conv-BN-ReLU stages, each halving the map, for small frames (digits, 32x32 clips)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlstm.encoders.base import FrameEncoder
from cnnlstm.errors import ConfigError
from cnnlstm.layers.fusion import add_coords

__all__ = ["ConvStage", "SmallCNN"]


class ConvStage(nn.Module):
    """Conv-BN-ReLU, then a 2x2 max-pool along each spatial side longer than one pixel, then channel dropout.

    Skipping the pool on 1-pixel sides is what lets a 3-stage CNN take 8x8 (or even 4x4, or 1xW) inputs;
    ``ceil_mode`` keeps the last row/column of odd-sized maps.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd conv kernel size ("same" padding).
        dropout: probability of zeroing a whole channel (``nn.Dropout2d``) in training.
        coords: append x and y coordinate maps (:func:`~cnnlstm.layers.fusion.add_coords`, CoordConv) to the
            input before the conv, so the features can say where something is, not only what it is.

    Shape:
        x: (N, in_channels, H, W).
        returns: (N, out_channels, ceil(H/2), ceil(W/2)), sides of 1 left at 1.

    Example:
        >>> ConvStage(3, 8)(torch.rand(2, 3, 7, 1)).shape
        torch.Size([2, 8, 4, 1])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dropout: float = 0.0,
                 coords: bool = False) -> None:
        super().__init__()
        self.coords = bool(coords)
        self.conv = nn.Conv2d(in_channels + 2 * self.coords, out_channels, kernel_size, padding=kernel_size // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Run the stage; ``film = (gamma, beta)``, each ``(N, out_channels)``, scales the normalised map by
        ``1 + gamma`` and shifts it by ``beta`` before the ReLU (conditional batch norm, de Vries et al. 2017)."""
        if self.coords:
            x = add_coords(x)  # (N, C_in + 2, H, W)
        x = self.bn(self.conv(x))  # (N, C_out, H, W)
        if film is not None:
            gamma, beta = film
            x = (1 + gamma[:, :, None, None]) * x + beta[:, :, None, None]  # identity at gamma = beta = 0
        x = F.relu(x)
        h, w = x.shape[-2:]
        kernel = (2 if h > 1 else 1, 2 if w > 1 else 1)
        if kernel != (1, 1):
            x = F.max_pool2d(x, kernel, kernel, ceil_mode=True)  # (N, C_out, ceil(H/2), ceil(W/2))
        return self.drop(x)


class SmallCNN(FrameEncoder):
    """A small CNN frame encoder (``build_encoder("cnn")``): ``len(widths)`` conv stages, global average pool.

    Fast enough to run per frame on CPU, and the natural choice for small images (8x8 digits up to 64x64 clips).
    Each stage (see :class:`ConvStage`) halves the map, so 32x32 inputs give a 4x4 grid with the default 3 stages.

    Args:
        in_channels: C of the input images.
        widths: output channels of each stage; the last is ``out_features``.
        kernel_size: odd conv kernel size.
        dropout: ``nn.Dropout2d`` probability after each stage.
        coords: append x, y coordinate maps to every stage's input (CoordConv, Liu et al. 2018): the pooled
            vector can then carry where things are ("is the red object on the left?"), not only what is there.

    Shape:
        x: (N, C, H, W), any H, W >= 1.
        forward: (N, widths[-1]); forward_grid: (N, widths[-1], ceil(H / 2**S), ceil(W / 2**S)), S = len(widths).

    Example:
        >>> enc = SmallCNN(in_channels=1, widths=(16, 32))
        >>> enc(torch.rand(2, 1, 8, 8)).shape, enc.forward_grid(torch.rand(2, 1, 8, 8)).shape
        (torch.Size([2, 32]), torch.Size([2, 32, 2, 2]))
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        dropout: float = 0.0,
        coords: bool = False,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ConfigError(f"cnn widths must be a non-empty list of positive ints, got {widths}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"cnn kernel_size must be odd (so padding keeps the size), got {kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"cnn dropout must be in [0, 1), got {dropout}")
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        if not isinstance(coords, bool):
            raise ConfigError(f"cnn coords must be true or false, got {coords!r}")
        self.name = "cnn"
        self.in_channels = in_channels
        self.out_features = self.grid_features = widths[-1]
        c_ins = (in_channels, *widths[:-1])  # each stage reads the previous stage's width
        self.stages = nn.Sequential(
            *(ConvStage(i, o, kernel_size, dropout, coords) for i, o in zip(c_ins, widths, strict=True))
        )
        self.pretrained_config = {"mean": (0.5,) * in_channels, "std": (0.5,) * in_channels, "input_size": None}

    def stage_modules(self) -> list[list[nn.Module]]:
        return [[stage] for stage in self.stages]

    def _forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)  # (N, D, h, w)

    def forward_grid_conditioned(self, x: torch.Tensor, films: Sequence[tuple[torch.Tensor, torch.Tensor]]
                                 ) -> torch.Tensor:
        """:meth:`forward_grid` with the first ``len(films)`` stages modulated per sample (see
        :meth:`ConvStage.forward`): a question can pick colours and parts at full resolution.

        Shape:
            - x: ``(N, C, H, W)``; films: ``(gamma, beta)`` of ``(N, widths[i])`` for stage ``i``.
            - output: like :meth:`forward_grid`'s.
        """
        self.check_input(x)
        if len(films) > len(self.stages):
            raise ConfigError(f"cnn has {len(self.stages)} stages, got FiLM parameters for {len(films)}")
        for i, stage in enumerate(self.stages):
            x = stage(x, films[i] if i < len(films) else None)
        return x  # (N, D, h, w)

    def _feature_channels(self) -> list[int]:
        return [stage.conv.out_channels for stage in self.stages]

    def _forward_stage(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.stages[: index + 1](x)  # (N, widths[index], H / 2**(index+1), W / 2**(index+1))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x).mean(dim=(2, 3))  # (N, D)
