"""Save an encoder to ``.safetensors`` with what is needed to rebuild it, and rebuild it from the file alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cnnlstm.encoders.base import FrameEncoder, FreezeSpec
from cnnlstm.encoders.weights import read_metadata
from cnnlstm.errors import ConfigError, WeightsError

__all__ = ["save_encoder", "load_encoder", "ENCODER_FORMAT"]

ENCODER_FORMAT = "cnnlstm.encoder"


def save_encoder(enc: FrameEncoder, path: str | os.PathLike) -> Path:
    """Write ``enc``'s weights to a ``.safetensors`` file, with its build config and ``pretrained_config``.

    The file loads back with ``build_encoder(name, ..., pretrained=path)`` or, without repeating the options,
    :func:`load_encoder` (when the encoder came from ``build_encoder`` with plain-data options). Typical use:
    pretrain a digit CNN on single digits, save it, then load it frozen as the frame encoder of a frame_lstm.

    Args:
        enc: the encoder to save.
        path: the output file; must end in ``.safetensors``. Parent folders are created.

    Returns:
        The path written.

    Example:
        >>> save_encoder(build_encoder("cnn", in_channels=1), "digit_cnn.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"save_encoder writes .safetensors files, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors wants contiguous CPU tensors and no shared storage; clone() gives each its own
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in enc.state_dict().items()}
    metadata = {"format": ENCODER_FORMAT, "pretrained_config": json.dumps(enc.pretrained_config, default=str)}
    try:  # options that are not plain data (a norm_layer class, ...) cannot be stored: load_encoder then refuses
        if enc.build_config is not None:
            metadata["config"] = json.dumps(enc.build_config)
    except TypeError:
        pass
    save_file(state, str(path), metadata=metadata)
    return path


def load_encoder(path: str | os.PathLike, *, freeze: FreezeSpec = "none") -> FrameEncoder:
    """Rebuild an encoder written by :func:`save_encoder` from the file alone.

    Args:
        path: a ``.safetensors`` file from :func:`save_encoder`.
        freeze: ``"none"``, ``"all"`` or N (train the last N stages).

    Example:
        >>> enc = load_encoder("digit_cnn.safetensors", freeze="all")  # doctest: +SKIP
    """
    from cnnlstm.encoders.factory import build_encoder

    meta = read_metadata(path)
    if meta.get("format") != ENCODER_FORMAT or "config" not in meta:
        raise WeightsError(
            f"{path} was not written by save_encoder (no encoder config inside); use "
            "build_encoder(name, pretrained=path, ...) with the encoder's options instead"
        )
    config = json.loads(meta["config"])
    name = config.pop("name")
    return build_encoder(name, pretrained=path, freeze=freeze, **config)
