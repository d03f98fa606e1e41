"""Recipe values of the wrong type reach every model's constructor as a ConfigError naming the argument."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import cnnlstm
from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model, get_model_class

TINY_CNN = {"widths": (4, 8)}
# A valid small configuration per model and the size arguments to corrupt in it.
VALID: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "frame_lstm": (dict(num_classes=3, hidden_size=8, encoder_kwargs=TINY_CNN), ("num_classes", "hidden_size")),
    "lstm_fcn": (dict(num_classes=3, in_channels=2, hidden_size=8), ("num_classes", "in_channels", "filters")),
    "mlstm_fcn": (dict(num_classes=3, in_channels=2, hidden_size=8), ("se_reduction", "kernel_sizes")),
    "deep_conv_lstm": (dict(num_classes=3, in_channels=2, hidden_size=8), ("filters", "num_conv_layers")),
    "crnn": (dict(num_classes=5, widths=(4, 8, 8, 8, 8, 8), hidden_size=8), ("num_classes", "image_height")),
    "conv_lstm_forecaster": (dict(in_channels=1, hidden_size=8, horizon=2), ("horizon", "hidden_size")),
    "multi_input": (dict(num_classes=3, vocab_size=11, hidden_size=8, encoder_kwargs=TINY_CNN),
                    ("num_classes", "embedding_dim", "head_hidden_size")),
    "captioner": (dict(vocab_size=12, hidden_size=8, encoder_kwargs=TINY_CNN), ("vocab_size", "attention_size")),
    "minirocket": (dict(num_classes=3, in_channels=2, num_features=840), ("num_classes", "num_features",
                                                                          "max_dilations")),
}


def test_every_registered_model_is_listed() -> None:
    assert set(cnnlstm.list_models()) - {"toy_lstm"} <= set(VALID)


@pytest.mark.parametrize("name", sorted(VALID))
@pytest.mark.parametrize("bad", [3.5, "3", True, None], ids=repr)
def test_a_size_of_the_wrong_type_is_a_config_error_naming_it(name: str, bad: object) -> None:
    kwargs, sizes = VALID[name]
    create_model(name, **kwargs)  # the base configuration is valid
    for size in sizes:
        with pytest.raises(ConfigError, match=rf"{name}: (every entry of )?{size} must be an integer"):
            create_model(name, **{**kwargs, size: bad})


@pytest.mark.parametrize("name", [n for n in sorted(VALID)
                                  if "dropout" in inspect.signature(get_model_class(n).__init__).parameters])
def test_a_dropout_that_is_not_a_number_is_a_config_error(name: str) -> None:
    kwargs, _ = VALID[name]
    with pytest.raises(ConfigError, match=rf"{name}: dropout must be a number in \[0, 1\), got '0.5'"):
        create_model(name, **{**kwargs, "dropout": "0.5"})
