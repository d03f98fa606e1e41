"""``build_encoder`` / ``list_encoders``: frame encoders by name, with pretrained weights and freezing."""

from __future__ import annotations

import fnmatch
import json
import os
from typing import Any

from cnnlstm.encoders.base import FrameEncoder, FreezeSpec
from cnnlstm.encoders.cnn import SmallCNN
from cnnlstm.encoders.packaged import has_packaged_weights, load_packaged_weights
from cnnlstm.encoders.timm_encoder import TimmEncoder
from cnnlstm.encoders.weights import LoadReport, load_state, read_metadata, read_state_dict
from cnnlstm.errors import ConfigError, UnknownNameError, WeightsError, did_you_mean

__all__ = ["build_encoder", "list_encoders", "load_pretrained_file", "BUILTIN_ENCODERS"]

BUILTIN_ENCODERS: dict[str, type[FrameEncoder]] = {"cnn": SmallCNN}
TIMM_PREFIX = "timm:"
Pretrained = bool | str | os.PathLike | None


def build_encoder(
    name: str = "cnn",
    *,
    in_channels: int = 3,
    pretrained: Pretrained = False,
    freeze: FreezeSpec = "none",
    **kwargs: Any,
) -> FrameEncoder:
    """Build a frame encoder by name, optionally with pretrained weights and frozen stages.

    Args:
        name: ``"cnn"`` (the built-in :class:`SmallCNN`; kwargs ``widths``, ``kernel_size``, ``dropout``,
            ``coords``) or ``"timm:<model_name>"`` (any timm model without its classifier; kwargs go to
            ``timm.create_model``).
        in_channels: C of the input images.
        pretrained: ``False``; ``True`` for the model's published weights (packaged offline weights when
            installed, e.g. ``timm:tf_efficientnet_lite0``, otherwise timm's hub download); or a path to a
            ``.safetensors`` / ``.pth`` / ``.pt`` file, loaded safely and completely (a file from
            :func:`save_encoder`, or a bare timm state dict for ``timm:`` encoders).
        freeze: ``"none"``, ``"all"``, or N to train only the last N stages (see ``FrameEncoder.freeze``).
        **kwargs: encoder-specific options.

    Returns:
        A :class:`FrameEncoder`; ``enc.load_report`` tells what a file load did (``None`` otherwise).

    Raises:
        UnknownNameError: unknown encoder or timm model (with suggestions).
        ConfigError: bad options.
        WeightsError: unsafe, unreadable, mismatched or incomplete weights.

    Example:
        >>> enc = build_encoder("cnn", in_channels=1, widths=(16, 32))
        >>> enc.out_features
        32
        >>> enc = build_encoder("timm:tf_efficientnet_lite0", pretrained=True, freeze="all")  # doctest: +SKIP
    """
    if pretrained is None:
        pretrained = False
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise ConfigError(f"pretrained must be True, False or a weights file path, got {pretrained!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive int, got {in_channels!r}")

    if name in BUILTIN_ENCODERS:
        if pretrained is True:
            raise ConfigError(
                f"encoder {name!r} has no published weights; pass pretrained=<path to a .safetensors/.pth file> "
                "(e.g. one written by save_encoder) or pretrained=False"
            )
        try:
            enc = BUILTIN_ENCODERS[name](in_channels=in_channels, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"encoder {name!r}: {exc}") from None
    elif name.startswith(TIMM_PREFIX):
        enc = _build_timm(name[len(TIMM_PREFIX) :], in_channels, pretrained is True, kwargs)
    else:
        choices = [*BUILTIN_ENCODERS, "timm:<model_name>"]
        raise UnknownNameError(
            f"unknown encoder {name!r}{did_you_mean(name, choices)}; use one of {choices} "
            "(list_encoders('pattern*') lists timm names)"
        )

    if isinstance(pretrained, (str, os.PathLike)):
        enc.load_report = load_pretrained_file(enc, pretrained)
    enc.build_config = {"name": name, "in_channels": in_channels, **kwargs}
    enc.pretrained = pretrained is not False
    return enc.freeze(freeze)


def _build_timm(model_name: str, in_channels: int, download: bool, kwargs: dict[str, Any]) -> TimmEncoder:
    packaged = download and has_packaged_weights(model_name)
    try:
        enc = TimmEncoder(model_name, in_channels=in_channels, pretrained=download and not packaged, **kwargs)
    except (UnknownNameError, ConfigError):
        raise
    except TypeError as exc:
        raise ConfigError(f"encoder 'timm:{model_name}': {exc}") from None
    except Exception as exc:
        if download:  # network or hub errors come in many types; say what to do instead
            raise WeightsError(
                f"could not get pretrained weights for timm model {model_name!r} ({type(exc).__name__}: {exc}); "
                "without internet, download them elsewhere and pass pretrained=<path to the file>"
            ) from exc
        raise
    if packaged:
        load_packaged_weights(model_name, enc.model)
    return enc


def load_pretrained_file(enc: FrameEncoder, path: str | os.PathLike) -> LoadReport:
    """Load a weights file into ``enc``: its own state dict (from :func:`save_encoder`) or a bare timm one.

    A timm checkpoint (keys without the wrapper's ``model.`` prefix) loads into the wrapped timm model, with the
    classifier's tensors dropped (the encoder has none). When the file is a cnnlstm encoder file, its stored
    ``pretrained_config`` (the normalisation the weights were trained with) replaces the default.

    Args:
        enc: the encoder to fill.
        path: the weights file.

    Returns:
        A :class:`LoadReport`.

    Example:
        >>> load_pretrained_file(build_encoder("cnn", in_channels=1), "digit_cnn.safetensors")  # doctest: +SKIP
    """
    state = read_state_dict(path)
    target: Any = enc
    if isinstance(enc, TimmEncoder) and not any(k.startswith("model.") for k in state):
        target = enc.model
        head = str(enc.model.pretrained_cfg.get("classifier") or "")
        heads = (head,) if isinstance(head, str) else tuple(head)
        state = {k: v for k, v in state.items() if not any(h and k.startswith(h + ".") for h in heads)}
    report = load_state(target, state, source=str(path))
    saved_config = read_metadata(path).get("pretrained_config")
    if saved_config:
        enc.pretrained_config = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(saved_config).items()}
    return report


def list_encoders(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """Encoder names matching a shell-style pattern: the built-ins and ``"timm:<name>"`` for timm's models.

    Args:
        pattern: e.g. ``"*"``, ``"cnn"``, ``"timm:resnet*"`` or ``"*efficientnet_lite*"``.
        pretrained: only names with published weights (built-ins have none; timm's hub or packaged ones).

    Example:
        >>> list_encoders("timm:resnet1*t")[:2]
        ['timm:resnet10t', 'timm:resnet14t']
    """
    import timm

    names = [] if pretrained else [n for n in BUILTIN_ENCODERS if fnmatch.fnmatch(n, pattern)]
    timm_pattern = pattern[len(TIMM_PREFIX) :] if pattern.startswith(TIMM_PREFIX) else pattern
    timm_names = set(timm.list_models(timm_pattern, pretrained=pretrained))
    if pretrained:  # timm lists "name.tag"; keep the architecture names
        timm_names = {n.split(".")[0] for n in timm_names}
    return names + sorted(TIMM_PREFIX + n for n in timm_names)
