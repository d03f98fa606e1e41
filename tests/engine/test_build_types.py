"""A recipe value of the wrong type never reaches the user as a constructor's raw TypeError.

The registered models check their own arguments; this is the engine's net under any constructor that does
not: a stand-in model whose ``nn.Linear`` fails on a float size, exactly as torch does.
"""

from __future__ import annotations

import pytest
from torch import nn

import cnnlstm.engine.build as build
from cnnlstm.errors import ConfigError


class Unchecked(nn.Module):
    """Passes its sizes straight to torch, like a model without argument checks."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, dropout: float = 0.1, act: str = "relu") -> None:
        super().__init__()
        self.head = nn.Linear(in_channels, num_classes)
        self.drop = nn.Dropout(dropout)


@pytest.fixture(autouse=True)
def unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "get_model_class", lambda name: Unchecked)
    monkeypatch.setattr(build, "create_model", lambda name, **kwargs: Unchecked(**kwargs))


def test_the_stand_in_really_raises_type_error() -> None:
    with pytest.raises(TypeError):
        Unchecked(num_classes=3.5)


@pytest.mark.parametrize("value", [3.5, "3"])
def test_a_mistyped_recipe_key_is_a_config_error_naming_it(value: object) -> None:
    section = {"name": "unchecked", "num_classes": value, "dropout": 0, "act": "gelu"}
    with pytest.raises(ConfigError) as info:
        build.build_model(section, {"in_channels": 4})
    message = str(info.value)
    assert f"model.num_classes={value!r}" in message
    assert "model.dropout" not in message and "model.act" not in message  # int for a float is fine


def test_without_a_default_to_compare_every_recipe_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(**kwargs: object) -> nn.Module:
        raise TypeError("unsupported operand")

    monkeypatch.setattr(build, "create_model", lambda name, **kwargs: fails(**kwargs))
    with pytest.raises(ConfigError, match=r"model.num_classes=3, model.in_channels=4"):
        build.build_model({"name": "unchecked", "num_classes": 3, "in_channels": 4}, {})


def test_well_typed_keys_build() -> None:
    model = build.build_model({"name": "unchecked", "num_classes": 3}, {"in_channels": 4})
    assert model.head.out_features == 3 and model.head.in_features == 4
