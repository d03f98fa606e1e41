"""The frozen-encoder feature path of a frame model, as the feature cache encodes it and trains on it.

A frame model (``frame_lstm``) whose encoder is frozen computes the same per-frame features every epoch.
:class:`FrameFeatures` is that part of the model (frames -> per-frame features, with what identifies them for a
cache key); :class:`CachedFeaturesModel` is the rest (features -> logits), which trains on the stored features.
The storage itself is :class:`cnnlstm.data.feature_cache.FeatureCache`; the engine joins the two
(:func:`cnnlstm.engine.feature_cache.use_feature_cache`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError

__all__ = [
    "CachedFeaturesModel",
    "FrameFeatures",
    "encoder_fingerprint",
    "feature_path_problem",
    "weights_digest",
]

_FEATURE_PATH = ("encoder", "forward_sequence_features", "forward_from_features")
_TRAIN_SENSITIVE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every ``state_dict`` entry's name, dtype, shape and bytes (parameters and buffers).

    Args:
        module: the module whose weights identify the features (a frame encoder).

    Example:
        >>> len(weights_digest(nn.Linear(2, 3)))
        64
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # uint8 view: bfloat16 has no numpy type
    return h.hexdigest()


def encoder_fingerprint(encoder: nn.Module) -> dict[str, Any]:
    """What identifies an encoder's features: its class, name, build config and weights digest.

    Args:
        encoder: the frame encoder.

    Example:
        >>> sorted(encoder_fingerprint(nn.Linear(2, 3)))
        ['build_config', 'class', 'name', 'weights']
    """
    cls = type(encoder)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "name": getattr(encoder, "name", None),
        "build_config": getattr(encoder, "build_config", None),
        "weights": weights_digest(encoder),
    }


def _trains_differently(module: nn.Module) -> bool:
    return isinstance(module, _TRAIN_SENSITIVE) or type(module).__name__ in ("DropPath", "DropBlock2d")


def feature_path_problem(model: nn.Module) -> str | None:
    """Why ``model``'s per-frame features cannot be cached, or ``None`` when they can.

    Caching needs a model with ``encoder``, ``forward_sequence_features`` and ``forward_from_features``
    (``frame_lstm``) and an encoder with no trainable parameter whose train-sensitive modules (dropout, batch
    norm, drop-path) stay in eval mode while the model trains.

    Args:
        model: the model to train.

    Example:
        >>> from cnnlstm import create_model
        >>> feature_path_problem(create_model("frame_lstm", num_classes=2, freeze="none"))
        "the encoder has trainable parameters (freeze='none'); use model.freeze: all to cache its features"
    """
    if not all(hasattr(model, n) for n in _FEATURE_PATH):
        return (f"{getattr(model, 'model_name', type(model).__name__)} has no frozen-encoder feature path "
                "(needs encoder, forward_sequence_features and forward_from_features, as frame_lstm has)")
    encoder = model.encoder
    frozen = getattr(encoder, "frozen", "?")
    if any(p.requires_grad for p in encoder.parameters()):
        return f"the encoder has trainable parameters (freeze={frozen!r}); use model.freeze: all to cache its features"
    was_training = encoder.training
    encoder.train(True)  # what the trainer will do; a frozen FrameEncoder keeps its frozen modules in eval
    active = [n for n, m in encoder.named_modules() if m.training and _trains_differently(m)]
    encoder.train(was_training)
    if active:
        return (f"encoder modules {active[:3]} behave differently in training (dropout / batch statistics) and "
                f"are not frozen (freeze={frozen!r}); use model.freeze: all")
    return None


def _require_feature_path(model: nn.Module) -> None:
    problem = feature_path_problem(model)
    if problem:
        raise ConfigError(f"cannot cache features: {problem}")


class FrameFeatures(nn.Module):
    """The per-frame part of a frame model with a frozen encoder: frames -> the rows a feature cache stores.

    It shares the model's modules (moving it moves the model). :meth:`cache_identity` says what the features
    depend on, for the cache key: the encoder's class, name, build config and weights, and for grid features the
    stage and grid size.

    Args:
        model: a frame model with a frozen encoder (see :func:`feature_path_problem`).

    Shape:
        - x: ``(B, T, C, H, W)``; lengths: ``(B,)`` int64, optional.
        - output: ``(B, T, D_frame)`` per-frame features.

    Example:
        >>> from cnnlstm import create_model
        >>> model = create_model("frame_lstm", num_classes=2, encoder_kwargs={"widths": (8,)}, freeze="all")
        >>> FrameFeatures(model)(torch.rand(2, 3, 3, 32, 32)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _require_feature_path(model)
        self.model = model

    def cache_identity(self) -> dict[str, Any]:
        """What the features depend on on the model side (hashed into the cache key with the data's identity)."""
        _require_feature_path(self.model)  # the encoder may have been unfrozen since
        parts: dict[str, Any] = {"encoder": encoder_fingerprint(self.model.encoder)}
        # Pooled features keep the keys they had before grids existed.
        if getattr(self.model, "frame_features", "pooled") != "pooled":  # a stage's grid, not the pooled vector
            parts["frame_features"] = {k: getattr(self.model, k, None) for k in ("frame_features", "frame_dim")}
            parts["grid"] = {k: getattr(self.model._per_frame, k, None) for k in ("stage", "grid_size")}
        return parts

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-frame features; see the class docstring for shapes."""
        return self.model.forward_sequence_features(x, lengths)  # (B, T, D_frame)


class CachedFeaturesModel(nn.Module):
    """Runs only the recurrent part and head of a frame model, on cached per-frame features.

    It holds the full model (so checkpoints keep every weight and the encoder stays available) but never
    calls the encoder: ``forward(x, lengths) = model.forward_from_features(x, lengths)``. Save and export the
    wrapped :attr:`model`, which gives the same logits from frames.

    Args:
        model: a frame model with ``forward_from_features`` (``frame_lstm``).

    Shape:
        - x: ``(B, T, D)`` features; lengths: ``(B,)`` int64, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> from cnnlstm import create_model
        >>> model = create_model("frame_lstm", num_classes=4, encoder_kwargs={"widths": (8,)}, freeze="all")
        >>> CachedFeaturesModel(model)(torch.randn(2, 3, 8), torch.tensor([3, 2])).shape
        torch.Size([2, 4])
    """

    input_names = ("x", "lengths")
    supports_lengths = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not all(hasattr(model, n) for n in _FEATURE_PATH):
            raise ConfigError(feature_path_problem(model) or "model has no feature path")
        self.model = model
        self.output_kind = getattr(model, "output_kind", "logits")
        self.num_classes = model.num_classes
        self.num_features = model.num_features
        self.model_name = getattr(model, "model_name", type(model).__name__)

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, D)`` features -> ``(B, num_features)``."""
        return self.model.forward_recurrent(x, lengths)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, num_features) -> (B, K)``."""
        return self.model.forward_head(features)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits from cached features; see the class docstring for shapes."""
        return self.model.forward_from_features(x, lengths)  # (B, K)

    def forward_chunk(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One chunk of the LSTM from ``state``, for truncated BPTT (:mod:`cnnlstm.tasks.tbptt`).

        Shape:
            - x: ``(B, k, D)`` features; lengths: ``(B,)`` valid steps in this chunk (0..k), optional.
            - output: ``(B, k, H)`` and ``(h, c)``, each ``(num_layers, B, H)``.
        """
        return self.model.recurrent_chunk(x, state, lengths)
