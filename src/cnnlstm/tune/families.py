"""The search spaces shipped for each model family, in the spec format of :mod:`cnnlstm.tune.space`.

Each family has an architecture space (CNN depth/width/kernels, LSTM size, layers, direction, dropout,
fusion), the training space every family shares (learning rate, weight decay, batch size), and, for models
with a frame encoder, a transfer space used instead of the encoder architecture when the encoder is
pretrained: then the architecture is fixed by the weights and the question is how many of its stages to
train (``freeze``: ``"all"``, ``"none"`` or N = train the last N stages).

Families are grouped by the input they read (``inputs``), so ``search.models: auto`` can search the
integration pattern itself among the families that read the recipe's data, e.g. LSTM-FCN (parallel CNN and
LSTM) vs DeepConvLSTM (CNN then LSTM) on a series.

Example:
    >>> sorted(family_names("series"))
    ['deep_conv_lstm', 'lstm_fcn', 'mlstm_fcn']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnlstm.errors import UnknownNameError, did_you_mean

__all__ = ["Family", "TRAINING_SPACE", "FAMILIES", "family_names", "get_family", "default_specs", "freeze_choices"]

#: training settings every family searches
TRAINING_SPACE: dict[str, Any] = {
    "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "optim.weight_decay": {"low": 1e-5, "high": 1e-1, "log": True},
    "data.batch_size": [8, 16, 32],
}

_LSTM = {
    "model.hidden_size": {"low": 8, "high": 128, "log": True},
    "model.num_layers": {"low": 1, "high": 2},
    "model.bidirectional": [False, True],
}

#: how many stages of a pretrained encoder to train ("all" frozen ... "none" frozen)
_TRANSFER = {"model.freeze": ["all", 1, 2, "none"]}

#: the small built-in CNN (encoders/cnn.py): depth x width doubling per stage, one odd kernel size
_CNN_ENCODER = {
    "cnn": {"type": "stack", "widths": "model.encoder_kwargs.widths", "shape": "grow",
            "depth": {"low": 2, "high": 4}, "width": [8, 16, 32], "max_width": 256},
    "model.encoder_kwargs.kernel_size": [3, 5],
}


@dataclass(frozen=True)
class Family:
    """A model family's shipped search space.

    Args:
        inputs: what the family reads (``series``, ``frames``, ``vqa``, ``text_image``, ``forecast``,
            ``captions``); families with equal ``inputs`` can replace each other in a search.
        space: architecture specs (recipe keys under ``model.``).
        encoder_space: specs of the frame encoder's architecture, searched when it is not pretrained.
        transfer_space: specs searched instead of ``encoder_space`` when the encoder is pretrained.

    Example:
        >>> get_family("lstm_fcn").inputs
        'series'
    """

    inputs: str
    space: dict[str, Any]
    encoder_space: dict[str, Any] = field(default_factory=dict)
    transfer_space: dict[str, Any] = field(default_factory=dict)


_FCN = {
    **_LSTM,
    "model.dropout": {"low": 0.0, "high": 0.8},
    # LSTM-FCN's three blocks are (128, 256, 128) with kernels (8, 5, 3); search depth and width around them
    "conv": {"type": "stack", "widths": "model.filters", "shape": "bottleneck", "depth": {"low": 2, "high": 4},
             "width": {"low": 16, "high": 128, "log": True}, "kernels": "model.kernel_sizes", "kernel": [3, 5, 8]},
}

FAMILIES: dict[str, Family] = {
    "lstm_fcn": Family("series", _FCN),
    "mlstm_fcn": Family("series", _FCN),
    "deep_conv_lstm": Family("series", {
        **_LSTM,
        "model.dropout": {"low": 0.0, "high": 0.6},
        "model.num_conv_layers": {"low": 1, "high": 4},
        "model.filters": {"low": 16, "high": 128, "log": True},
        "model.kernel_size": [3, 5, 7],
    }),
    "frame_lstm": Family("frames", {
        **_LSTM,
        "model.dropout": {"low": 0.0, "high": 0.5},
        "model.pooling": ["last", "mean", "attention"],
    }, encoder_space=_CNN_ENCODER, transfer_space=_TRANSFER),
    "multi_input": Family("vqa", {
        # multiples of 8: cross-attention splits the fused width over its heads
        "model.hidden_size": [16, 32, 64, 128],
        "model.embedding_dim": [16, 32, 64],
        "model.bidirectional": [False, True],
        "model.dropout": {"low": 0.0, "high": 0.5},
        "model.fusion": ["concat", "gated", "bilinear", "film", "cross_attention", "relation"],
    }, encoder_space=_CNN_ENCODER, transfer_space=_TRANSFER),
    "captioner": Family("captions", {
        "model.hidden_size": {"low": 32, "high": 256, "log": True},
        "model.embedding_dim": [16, 32, 64],
        "model.attention_size": [16, 32, 64],
        "model.dropout": {"low": 0.0, "high": 0.5},
    }, encoder_space=_CNN_ENCODER, transfer_space=_TRANSFER),
    "crnn": Family("text_image", {
        "model.hidden_size": {"low": 32, "high": 256, "log": True},
        "model.num_layers": {"low": 1, "high": 2},
        "model.dropout": {"low": 0.0, "high": 0.5},
        # the six convolutions' widths are fixed in count by the (2, 1) pooling plan; scale them together
        "model.widths": [[16, 32, 48, 48, 64, 64], [32, 64, 96, 96, 128, 128], [64, 128, 256, 256, 512, 512]],
    }),
    "conv_lstm_forecaster": Family("forecast", {
        "model.hidden_size": [16, 32, 64],
        "model.num_layers": {"low": 1, "high": 3},
        "model.kernel_size": [3, 5],
        "model.layer_norm": [False, True],
    }),
}


def family_names(inputs: str) -> list[str]:
    """Families that read ``inputs`` (the candidates of ``search.models: auto``)."""
    return [name for name, fam in FAMILIES.items() if fam.inputs == inputs]


def get_family(name: str) -> Family:
    """The shipped space of model family ``name``.

    Raises:
        UnknownNameError: no space is shipped for ``name``.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownNameError(f"no search space is shipped for model {name!r}{did_you_mean(name, list(FAMILIES))}; "
                               "declare one in the recipe's search.space") from None


def default_specs(name: str, *, pretrained: bool) -> dict[str, Any]:
    """The shipped raw specs of family ``name``: training + architecture + encoder or transfer space.

    A model without a shipped family gets the training space only, so any registered model can be tuned
    once its recipe declares the architecture keys it wants searched.

    Example:
        >>> "model.freeze" in default_specs("frame_lstm", pretrained=True)
        True
    """
    fam = FAMILIES.get(name)
    if fam is None:
        return dict(TRAINING_SPACE)
    return {**TRAINING_SPACE, **fam.space, **(fam.transfer_space if pretrained else fam.encoder_space)}


def freeze_choices(family: str, model: dict[str, Any]) -> list[Any] | None:
    """The transfer space's ``model.freeze`` choices for a model that reads an early encoder stage, else ``None``.

    ``freeze: N`` trains the encoder's last N stages; a model that reads stage ``s`` (``frame_lstm``'s grid frame
    features, ``multi_input`` with ``feature_stage``) never runs the stages after it and refuses an N that trains
    only those. The choices then count from the stage it reads: all frozen, the read stage trained, the two last
    read stages trained, none frozen.

    Args:
        family: the model family.
        model: the recipe's ``model`` section.

    Example:
        >>> freeze_choices("frame_lstm", {"encoder": "cnn", "encoder_kwargs": {"widths": [8, 16, 32, 64]},
        ...                               "frame_features": "grid", "feature_stage": 1})
        ['all', 3, 4, 'none']
        >>> freeze_choices("frame_lstm", {"frame_features": "pooled"}) is None
        True
    """
    from cnnlstm.encoders import build_encoder

    stage = model.get("feature_stage", -1)
    reads = (family == "frame_lstm" and model.get("frame_features", "pooled") != "pooled") or (
        family == "multi_input" and stage != -1)
    if not reads:
        return None
    encoder = build_encoder(model.get("encoder", "cnn"), in_channels=int(model.get("in_channels", 3)),
                            **(model.get("encoder_kwargs") or {}))  # no weights: only its stages are counted
    first = encoder.num_stages - encoder.feature_stage_index(int(stage))  # trains exactly the stage read
    return ["all", *range(first, min(first + 2, encoder.num_stages + 1)), "none"]
