"""Any timm backbone as a frame encoder (``build_encoder("timm:<model_name>")``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import timm
import torch
from torch import nn

from cnnlstm.encoders.base import FrameEncoder
from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["TimmEncoder"]


class TimmEncoder(FrameEncoder):
    """A timm model without its classifier: pooled pre-logits from ``forward``, the last feature map from
    ``forward_grid``.

    Stages (for ``freeze=N``) follow the model's ``feature_info``: stage k ends at the k-th module where the
    resolution drops (for a ResNet: stem, layer1, ..., layer4); what comes after the last one (an EfficientNet's
    ``conv_head``/``bn2``) belongs to the last stage.

    Args:
        model_name: a name from ``timm.list_models()``.
        in_channels: C of the input images (timm adapts pretrained first-conv weights when C != 3).
        pretrained: passed to ``timm.create_model`` (True downloads from timm's hub).
        **kwargs: further ``timm.create_model`` arguments (``drop_rate``, ``drop_path_rate``, ``img_size``, ...).

    Shape:
        x: (N, C, H, W).
        forward: (N, out_features); forward_grid: (N, grid_features, h, w).

    Example:
        >>> enc = TimmEncoder("resnet10t", in_channels=1)
        >>> enc(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 512])
    """

    def __init__(self, model_name: str, *, in_channels: int = 3, pretrained: bool = False, **kwargs: Any) -> None:
        super().__init__()
        if not timm.is_model(model_name):
            raise UnknownNameError(
                f"unknown timm model {model_name!r}{did_you_mean(model_name, timm.list_models())}; "
                "timm.list_models('pattern*') lists them"
            )
        self.name = f"timm:{model_name}"
        self.in_channels = in_channels
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, in_chans=in_channels, **kwargs)
        self.grid_features = int(self.model.num_features)
        # Some heads (MobileNetV3, GhostNet) widen the pooled vector past the last map's channels.
        self.out_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self._output_fmt = str(getattr(self.model, "output_fmt", "NCHW"))
        self._tokens = self._output_fmt == "NLC"  # forward_features gives (N, L, D) tokens, not a map
        self.pretrained_config = _data_config(self.model.pretrained_cfg, in_channels)

    def stage_modules(self) -> list[list[nn.Module]]:
        boundaries = [info["module"] for info in getattr(self.model, "feature_info", None) or []]
        units = list(_units(self.model, "", boundaries))
        found = {n for n, _ in units}
        if not boundaries or not set(boundaries) <= found:
            # No usable feature_info: each top-level child holding parameters is a stage.
            return [[m] for _, m in self.model.named_children() if any(True for _ in m.parameters())]
        stages: list[list[nn.Module]] = [[] for _ in boundaries]
        k = 0
        for unit_name, module in units:
            if unit_name in boundaries:
                k = boundaries.index(unit_name)
                stages[k].append(module)
                k += 1
            else:
                stages[min(k, len(stages) - 1)].append(module)  # between boundaries: part of the next stage
        return [s for s in stages if s]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (N, D): timm pools and applies any pre-logits head when num_classes=0

    def _forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        if self._tokens:
            return self._grid_from_intermediates(x)
        y = self.model.forward_features(x)
        if y.ndim == 3:  # tokens (ViT-style): ask timm for the spatial layout, now and from now on
            self._tokens = True
            return self._grid_from_intermediates(x)
        if self._output_fmt == "NHWC":
            y = y.permute(0, 3, 1, 2)  # (N, D, h, w)
        return y

    def _feature_channels(self) -> list[int]:
        info = getattr(self.model, "feature_info", None) or []
        return [int(i["num_chs"]) for i in info] or [self.grid_features]

    def _forward_stage(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if not hasattr(self.model, "forward_intermediates"):
            if index == self.num_feature_stages - 1:
                return self._forward_grid(x)
            raise ConfigError(f"encoder {self.name!r} cannot return intermediate feature maps; use stage -1")
        # stop_early: the stages after `index` are never run (and never cost time).
        maps = self.model.forward_intermediates(x, indices=[index], output_fmt="NCHW", intermediates_only=True,
                                                stop_early=True)
        return maps[-1]  # (N, D_index, h, w)

    def _grid_from_intermediates(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.model, "forward_intermediates"):
            raise ConfigError(f"encoder {self.name!r} has no spatial feature map; use forward() for pooled vectors")
        maps = self.model.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)
        return maps[-1]  # (N, D, h, w), prefix tokens removed by timm


def _units(module: nn.Module, prefix: str, boundaries: list[str]) -> Iterator[tuple[str, nn.Module]]:
    """Children in registration (= forward, for timm) order, expanded where a stage boundary lies inside."""
    for name, child in module.named_children():
        full = prefix + name
        if full not in boundaries and any(b.startswith(full + ".") for b in boundaries):
            yield from _units(child, full + ".", boundaries)
        else:
            yield full, child


def _data_config(cfg: Any, in_channels: int) -> dict[str, Any]:
    """mean/std/input_size/interpolation/crop_pct from timm's pretrained_cfg, with one mean/std per channel."""
    cfg = dict(cfg or {})
    out: dict[str, Any] = {}
    for key, default in (("mean", (0.485, 0.456, 0.406)), ("std", (0.229, 0.224, 0.225))):
        values = tuple(cfg.get(key) or default)
        if len(values) != in_channels:  # e.g. grey input on an RGB model: the first conv sums over RGB weights
            values = (sum(values) / len(values),) * in_channels
        out[key] = values
    size = tuple(cfg.get("input_size") or (3, 224, 224))
    out["input_size"] = (in_channels, *size[1:])
    out["interpolation"] = cfg.get("interpolation", "bilinear")
    out["crop_pct"] = cfg.get("crop_pct", 0.875)
    return out
