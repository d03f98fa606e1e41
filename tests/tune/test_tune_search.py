"""The recipe's search section: objective defaults, families, the trial recipe, and errors up front."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from tune_toys import toy_recipe

from cnnlstm.engine import resolve_config
from cnnlstm.errors import ConfigError, UnknownNameError
from cnnlstm.models import create_model
from cnnlstm.tune.search import FAMILY_PARAM, resolve_search


def test_defaults_follow_the_recipes_checkpoint_metric(tmp_path: Path) -> None:
    plan = resolve_search(toy_recipe(tmp_path))
    assert (plan.metric, plan.direction, plan.max_epochs) == ("val/loss", "minimize", 2)
    recipe = toy_recipe(tmp_path)
    del recipe["early_stopping"]
    plan = resolve_search(recipe, max_epochs=5)  # classification: the task picks checkpoints on val/acc
    assert (plan.metric, plan.direction, plan.max_epochs) == ("val/acc", "maximize", 5)


def test_trial_recipe_is_a_fit_recipe_with_the_sampled_values(tmp_path: Path) -> None:
    plan = resolve_search(toy_recipe(tmp_path, metric="val/acc", max_epochs=3))
    trial = optuna.trial.FixedTrial({"optim.lr": 0.002, "optim.weight_decay": 0.001, "data.batch_size": 16,
                                     "model.hidden_size": 5, "model.bidirectional": True, "model.dropout": 0.1,
                                     "conv.depth": 3, "conv.width": 8, "conv.kernel": 5})
    family, values = plan.sample(trial)
    config = plan.trial_config(family, values)
    assert config == resolve_config(config)  # cnnlstm fit takes it as it is
    assert config["model"] == {"name": "lstm_fcn", "hidden_size": 5, "filters": [8, 16, 8], "kernel_sizes": [5, 4, 3],
                               "dropout": 0.1, "num_layers": 1, "bidirectional": True}
    assert config["optim"]["lr"] == 0.002 and config["data"]["batch_size"] == 16
    assert config["trainer"]["max_epochs"] == 3
    assert config["early_stopping"] == {**config["early_stopping"], "monitor": "val/acc", "mode": "max"}
    assert "search" not in config


def test_auto_searches_every_series_family_with_its_own_parameters(tmp_path: Path) -> None:
    recipe = toy_recipe(tmp_path, models="auto")
    recipe["search"]["space"] = {"optim.lr": {"low": 1e-3, "high": 1e-2, "log": True}, "model.filters": [8, 16]}
    with pytest.raises(ConfigError, match="model.filters is set by both 'conv' and 'model.filters'"):
        resolve_search(recipe)  # LSTM-FCN's filters come from its conv stack: the shared key is ambiguous
    recipe["search"]["space"] = {"optim.lr": {"low": 1e-3, "high": 1e-2, "log": True}}
    plan = resolve_search(recipe)
    assert sorted(plan.spaces) == ["deep_conv_lstm", "lstm_fcn", "mlstm_fcn"]
    recipe["search"]["models"] = {"lstm_fcn": None, "deep_conv_lstm": {"model.filters": [8, 16]}}
    assert resolve_search(recipe).spaces["deep_conv_lstm"]["model.filters"].choices == (8, 16)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(8):
        trial = study.ask()
        family, values = plan.sample(trial)
        config = plan.trial_config(family, values)
        seen.add(family)
        assert config["model"]["name"] == family == trial.params[FAMILY_PARAM]
        assert f"{family}/model.hidden_size" in trial.params and "optim.lr" in trial.params  # shared training dims
        # the recipe's LSTM-FCN keys do not leak into another family: every key is the family's own argument
        create_model(family, num_classes=2, in_channels=2, **{k: v for k, v in config["model"].items() if k != "name"})
        study.tell(trial, 0.0)
    assert len(seen) >= 2


@pytest.mark.parametrize("search, error, message", [
    ({"metrc": "val/acc"}, ConfigError, "unknown search key"),
    ({"metric": "test/acc"}, ConfigError, "validation metric"),
    ({"metric": "val/f1"}, ConfigError, "direction"),
    ({"space": {"model.hiden_size": [4, 8]}}, ConfigError, "fits none of the searched models"),
    ({"space": {"optim.learning_rate": [0.1]}}, ConfigError, "optim.lr"),
    ({"models": ["lstm_fcm"]}, UnknownNameError, "lstm_fcn"),
])
def test_bad_search_sections_fail_before_any_trial(tmp_path: Path, search: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_search(toy_recipe(tmp_path, **search))


def test_multi_device_trials_are_refused(tmp_path: Path) -> None:
    recipe = toy_recipe(tmp_path)
    recipe["trainer"]["devices"] = 2
    with pytest.raises(ConfigError, match="one device"):
        resolve_search(recipe)


def test_a_grid_frame_model_searches_only_freeze_values_it_can_train(tmp_path: Path) -> None:
    # freeze N trains the last N encoder stages; a grid that reads stage 1 of four never runs stages 2-3, so the
    # shipped choices 1 and 2 would fail every such trial. They count from the stage read instead.
    import sys

    from cnnlstm.encoders import build_encoder, save_encoder

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from user_images import random_clips

    random_clips(tmp_path / "clips")
    widths = [4, 8, 8, 8]
    weights = save_encoder(build_encoder("cnn", widths=widths), tmp_path / "enc.safetensors")
    recipe = {"seed": 0, "data": {"spec": f"frames:{tmp_path / 'clips'}", "options": {"num_frames": 2}},
              "model": {"name": "frame_lstm", "encoder_kwargs": {"widths": widths}, "pretrained": str(weights),
                        "frame_features": "grid", "feature_stage": 1, "grid_size": 2, "hidden_size": 4},
              "search": {"max_epochs": 1}}
    space = resolve_search(recipe).spaces["frame_lstm"]
    assert space["model.freeze"].choices == ("all", 3, 4, "none")
    kwargs = {k: v for k, v in recipe["model"].items() if k != "name"}
    for choice in space["model.freeze"].choices:  # each one builds
        create_model("frame_lstm", num_classes=2, **{**kwargs, "freeze": choice})
    with pytest.raises(ConfigError, match="never runs them"):  # as the shipped choice 2 would have
        create_model("frame_lstm", num_classes=2, **{**kwargs, "freeze": 2})
