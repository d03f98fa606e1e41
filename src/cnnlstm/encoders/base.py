"""The frame-encoder contract: images in, a pooled vector or a spatial map out, with stage-wise freezing.

Every encoder (the built-in CNN, the timm wrapper) is a :class:`FrameEncoder`. Models that embed one
(frame_lstm, multi_input, captioner) rely only on this class: ``out_features``/``forward`` for a pooled vector,
``grid_features``/``forward_grid`` for the last stage's map, ``forward_stage``/``stage_channels`` for the map of
an earlier stage (finer, more positional), ``pretrained_config`` for input normalisation and ``freeze`` for
transfer learning.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnlstm.encoders.weights import LoadReport
from cnnlstm.errors import ConfigError, ShapeError

__all__ = ["FrameEncoder", "FreezeSpec"]

FreezeSpec = str | int  # "none" | "all" | N (all but the last N stages)


class FrameEncoder(nn.Module):
    """Base class of every frame encoder: (N, C, H, W) images -> (N, D) vectors or (N, D_grid, h, w) maps.

    Subclasses build their layers, set ``out_features``, ``grid_features`` and ``pretrained_config``, and
    implement :meth:`_forward`, :meth:`_forward_grid` and :meth:`stage_modules`. The base class checks input shapes,
    and implements freezing: frozen parameters get ``requires_grad=False`` and frozen modules stay in eval mode
    even when a parent module calls ``.train()``, so BatchNorm running statistics do not drift and dropout is off.

    Args:
        None: the base constructor takes no arguments; subclasses take their own and set the attributes below.

    Attributes:
        name: the name the encoder was built with (``"cnn"``, ``"timm:resnet18"``).
        in_channels: C of the input images.
        out_features: D of the pooled vector returned by ``forward``.
        grid_features: channels of the map returned by ``forward_grid``.
        pretrained_config: what the weights expect: ``mean``, ``std`` (one value per channel), ``input_size``
            (``(C, H, W)``, or ``None`` when any size works) and, for timm models, ``interpolation``/``crop_pct``.
        frozen: the current freeze setting (``"none"``, ``"all"`` or an int).
        build_config: ``build_encoder``'s name and options (``None`` when built directly).
        load_report: the :class:`LoadReport` of a weights file given as ``pretrained``, else ``None``.
        pretrained: True when the weights came from a published or given file (``build_encoder(pretrained=...)``),
            so inputs must be normalised as ``pretrained_config`` says.
    """

    name: str
    in_channels: int
    out_features: int
    grid_features: int
    pretrained_config: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.frozen: FreezeSpec = "none"
        self._frozen_modules: tuple[str, ...] = ()  # names, not modules: keeps the module tree clean
        self.build_config: dict[str, Any] | None = None  # set by build_encoder; lets save_encoder rebuild it
        self.load_report: LoadReport | None = None  # what loading a weights file did, if one was loaded
        self.pretrained = False  # set by build_encoder when weights were loaded

    # ----------------------------------------------------------------- to implement
    def stage_modules(self) -> list[list[nn.Module]]:
        """The encoder's stages in forward order, each a list of modules.

        Parameters outside every listed module (a ViT's ``cls_token``) count as part of the first stage.
        """
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, out_features), input already checked."""
        raise NotImplementedError

    def _forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, grid_features, h, w), input already checked."""
        raise NotImplementedError

    def _feature_channels(self) -> list[int]:
        """Channels of each feature stage's map, in forward order (see :meth:`forward_stage`)."""
        raise NotImplementedError

    def _forward_stage(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """(N, C, H, W) -> the map of feature stage ``index`` (non-negative), input already checked."""
        raise NotImplementedError

    # ----------------------------------------------------------------- public
    @property
    def num_feature_stages(self) -> int:
        """How many feature stages :meth:`forward_stage` can return (timm's ``feature_info``)."""
        return len(self._feature_channels())

    def feature_stage_index(self, index: int) -> int:
        """``index`` (negative counts from the end) as a non-negative stage index; ``ConfigError`` if out of range."""
        n = self.num_feature_stages
        if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
            raise ConfigError(f"encoder {self.name!r} has feature stages 0..{n - 1} (or -{n}..-1); got {index!r}")
        return index % n

    def stage_channels(self, index: int = -1) -> int:
        """Channels of the map :meth:`forward_stage` returns for ``index``."""
        return self._feature_channels()[self.feature_stage_index(index)]

    def forward_stage(self, x: torch.Tensor, index: int = -1) -> torch.Tensor:
        """The feature map of one encoder stage, computing no later stage.

        Earlier stages keep more of where things are (stride 8 or 16 instead of 32): at 64x64 the last stage of an
        ImageNet network is a 2x2 map, the third an 8x8 one.

        Args:
            x: a batch of images.
            index: feature stage (timm ``feature_info`` order, one per resolution drop); negative counts from
                the end, ``-1`` is the last.

        Shape:
            x: (N, C, H, W) with C = ``in_channels``.
            returns: (N, ``stage_channels(index)``, h, w), h and w the input size divided by that stage's stride.

        Example:
            >>> from cnnlstm.encoders import build_encoder
            >>> enc = build_encoder("cnn", widths=(8, 16, 32))
            >>> enc.forward_stage(torch.rand(2, 3, 32, 32), 1).shape
            torch.Size([2, 16, 8, 8])
        """
        self.check_input(x)
        return self._forward_stage(x, self.feature_stage_index(index))

    @property
    def num_stages(self) -> int:
        """How many stages ``freeze=N`` counts from the end."""
        return len(self.stage_modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images into pooled feature vectors.

        Args:
            x: a batch of images.

        Shape:
            x: (N, C, H, W) with C = ``in_channels``.
            returns: (N, ``out_features``).

        Example:
            >>> from cnnlstm.encoders import build_encoder
            >>> enc = build_encoder("cnn", in_channels=1)
            >>> enc(torch.rand(2, 1, 32, 32)).shape
            torch.Size([2, 128])
        """
        self.check_input(x)
        return self._forward(x)  # (N, D)

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map before pooling (for attention, FiLM and other spatial consumers).

        Args:
            x: a batch of images.

        Shape:
            x: (N, C, H, W) with C = ``in_channels``.
            returns: (N, ``grid_features``, h, w), h and w the input size divided by the encoder's stride.

        Example:
            >>> from cnnlstm.encoders import build_encoder
            >>> enc = build_encoder("cnn")
            >>> enc.forward_grid(torch.rand(2, 3, 32, 32)).shape
            torch.Size([2, 128, 4, 4])
        """
        self.check_input(x)
        return self._forward_grid(x)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ShapeError`` unless ``x`` is a floating (N, C, H, W) batch with C = ``in_channels``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"encoder {self.name!r} expects images (N, C, H, W) with C={self.in_channels}, got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ShapeError(f"encoder {self.name!r} expects floating-point images, got dtype {x.dtype}")

    def freeze(self, spec: FreezeSpec = "all") -> FrameEncoder:
        """Freeze stages: ``"all"``, ``"none"`` (unfreeze everything) or N = all but the last N stages.

        Calling it again replaces the previous setting, e.g. ``freeze("all")`` for warm-up, then
        ``freeze(1)`` to fine-tune the last stage.

        Args:
            spec: ``"none"``, ``"all"`` or an int 0 <= N <= ``num_stages`` (0 is the same as ``"all"``).

        Returns:
            self, for chaining.

        Example:
            >>> from cnnlstm.encoders import build_encoder
            >>> enc = build_encoder("cnn").freeze(1)  # only the last stage trains
            >>> [any(p.requires_grad for m in stage for p in m.parameters()) for stage in enc.stage_modules()]
            [False, False, True]
        """
        stages = self.stage_modules()
        n_frozen = _frozen_stage_count(spec, len(stages), self.name)
        frozen = [m for stage in stages[:n_frozen] for m in stage]
        for p in self.parameters():
            p.requires_grad_(True)
        for m in frozen:
            m.requires_grad_(False)
        if n_frozen:
            # Parameters held directly by a container (a ViT's cls_token, pos_embed) are input-side embeddings:
            # they freeze with the first stage.
            in_stages = {id(p) for stage in stages for m in stage for p in m.parameters()}
            for p in self.parameters():
                if id(p) not in in_stages:
                    p.requires_grad_(False)
        names = {id(m): n for n, m in self.named_modules()}
        self._frozen_modules = tuple(names[id(m)] for m in frozen)
        self.frozen = spec
        return self.train(self.training)  # re-apply eval mode to the frozen modules now

    def train(self, mode: bool = True) -> FrameEncoder:
        """Set train/eval mode, keeping frozen modules in eval mode (BatchNorm statistics fixed, dropout off)."""
        super().train(mode)
        for name in self._frozen_modules:
            self.get_submodule(name).eval()
        return self

    def extra_repr(self) -> str:
        parts = (f"name={self.name!r}", f"in_channels={self.in_channels}", f"out_features={self.out_features}")
        return ", ".join((*parts, f"frozen={self.frozen!r}"))


def _frozen_stage_count(spec: FreezeSpec, num_stages: int, name: str) -> int:
    """How many leading stages ``spec`` freezes."""
    if spec == "none":
        return 0
    if spec == "all":
        return num_stages
    if isinstance(spec, bool) or not isinstance(spec, int):
        raise ConfigError(f"freeze must be 'none', 'all' or an int (train the last N stages), got {spec!r}")
    if not 0 <= spec <= num_stages:
        raise ConfigError(
            f"freeze={spec} asks to train the last {spec} stages, but encoder {name!r} has {num_stages}; "
            f"use 0..{num_stages}, 'all' or 'none'"
        )
    return num_stages - spec
