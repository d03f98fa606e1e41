"""Search-space specs: parsing, known stacks, list choices, and every shipped family's samples build its model."""

from __future__ import annotations

import optuna
import pytest
import torch

from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model
from cnnlstm.tune.families import FAMILIES, TRAINING_SPACE, default_specs
from cnnlstm.tune.space import (
    Categorical,
    FloatRange,
    IntRange,
    Stack,
    merge_specs,
    parse_dim,
    parse_space,
    sample_space,
)


def test_spec_forms() -> None:
    assert parse_dim("model.dropout", 0.2).sample(None) == {"model.dropout": 0.2}
    assert parse_dim("model.hidden_size", {"low": 8, "high": 64, "log": True}) == IntRange(
        "model.hidden_size", 8, 64, log=True)
    # YAML 1.1 reads 1e-4 as a string; a float bound makes a float range
    assert parse_dim("optim.lr", {"low": "1e-4", "high": 1e-2, "log": True}) == FloatRange("optim.lr", 1e-4, 1e-2,
                                                                                            log=True)
    assert parse_dim("optim.lr", {"low": 0, "high": 1, "type": "float"}) == FloatRange("optim.lr", 0.0, 1.0)
    assert parse_dim("data.batch_size", {"choices": [8, 16]}) == Categorical("data.batch_size", (8, 16))


@pytest.mark.parametrize("spec, message", [
    ({"low": 0.0, "high": 1.0, "log": True}, "log range needs low > 0"),
    ({"low": 2, "high": 1}, "above high"),
    ({"low": 1}, "needs low and high"),
    ({"low": 1, "high": 2, "lg": True}, "unknown range field"),
    ([], "empty list"),
    ({"type": "stack", "widths": "model.filters", "depth": 2}, "needs width"),
    ({"type": "stack", "widths": "model.filters", "depth": 2, "width": 4, "shape": "wide"}, "shape must be"),
])
def test_malformed_specs_say_what_to_write(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_dim("model.x", spec)


def test_stack_known_answers() -> None:
    assert Stack.build(3, 128, "bottleneck", 8, 1024) == ([128, 256, 128], [8, 6, 3])  # LSTM-FCN's pattern
    assert Stack.build(4, 16, "grow", None, 64) == ([16, 32, 64, 64], [])  # capped at max_width
    assert Stack.build(2, 8, "flat", 3, 1024) == ([8, 8], [3, 3])
    assert Stack.build(1, 8, "bottleneck", 5, 1024) == ([8], [5])


def test_stack_and_list_choices_sample_recipe_values() -> None:
    space = parse_space({
        "conv": {"type": "stack", "widths": "model.filters", "shape": "bottleneck", "depth": {"low": 2, "high": 4},
                 "width": [16, 32], "kernels": "model.kernel_sizes", "kernel": [3, 8]},
        "model.encoder_kwargs.widths": [[8, 16], [16, 32, 64]],
    })
    trial = optuna.trial.FixedTrial({"conv.depth": 3, "conv.width": 32, "conv.kernel": 8,
                                     "model.encoder_kwargs.widths": "[16, 32, 64]"})
    assert sample_space(space, trial) == {"model.filters": [32, 64, 32], "model.kernel_sizes": [8, 6, 3],
                                          "model.encoder_kwargs.widths": [16, 32, 64]}


def test_merge_specs_drops_null_keys() -> None:
    merged = merge_specs(TRAINING_SPACE, {"optim.weight_decay": None, "optim.lr": 1e-3})
    assert merged == {"optim.lr": 1e-3, "data.batch_size": [8, 16, 32]}


_REQUIRED = {  # what the data would fix for each family
    "lstm_fcn": {"num_classes": 3, "in_channels": 2},
    "mlstm_fcn": {"num_classes": 3, "in_channels": 2},
    "deep_conv_lstm": {"num_classes": 3, "in_channels": 2},
    "frame_lstm": {"num_classes": 3, "in_channels": 1},
    "multi_input": {"num_classes": 3, "vocab_size": 12},
    "captioner": {"vocab_size": 12},
    "crnn": {"num_classes": 5},
    "conv_lstm_forecaster": {"in_channels": 1, "horizon": 2},
}


def _set(kwargs: dict, key: str, value: object) -> None:
    parts = key.split(".")[1:]
    for part in parts[:-1]:
        kwargs = kwargs.setdefault(part, {})
    kwargs[parts[-1]] = value


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("pretrained", [False, True])
def test_every_shipped_space_builds_its_model(family: str, pretrained: bool) -> None:
    space = parse_space(default_specs(family, pretrained=pretrained))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(2):
        values = sample_space(space, study.ask())
        kwargs = dict(_REQUIRED[family])
        for key, value in values.items():
            if key.startswith("model."):
                _set(kwargs, key, value)
        if pretrained and "freeze" in kwargs:
            kwargs.setdefault("encoder_kwargs", {})["widths"] = [4, 8]  # the freeze choices need >= 2 stages
        model = create_model(family, **kwargs).eval()
        assert all(model.model_kwargs[k] == v for k, v in kwargs.items())  # the sample reached the constructor
        if i == 0 and not pretrained:  # one forward per architecture keeps the test fast
            with torch.no_grad():
                out = model(**model.example_input(batch_size=2))
            assert out.shape[0] == 2 and torch.isfinite(out).all()
