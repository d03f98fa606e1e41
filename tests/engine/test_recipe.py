"""Recipe loading, schema validation and overrides."""

import pytest

from cnnlstm.engine.recipe import apply_overrides, list_recipes, load_recipe, parse_yaml, validate_recipe
from cnnlstm.errors import ConfigError, UnknownNameError


def test_shipped_recipes_validate() -> None:
    names = list_recipes()
    assert {"basic_motions", "digit_sequences", "captcha_crnn", "sort_of_clevr", "moving_digits",
            "shape_captions"} <= set(names)
    for name in names:
        cfg = validate_recipe(load_recipe(name))
        assert cfg["data"]["spec"] and cfg["model"]["name"]


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"'trainer.max_epoch'.*did you mean 'trainer.max_epochs'"):
        apply_overrides(load_recipe("basic_motions"), ["trainer.max_epoch=1"])
    with pytest.raises(ConfigError, match="'optim.lrr'"):
        validate_recipe({**load_recipe("basic_motions"), "optim": {"lrr": 1.0}})


def test_free_sections_accept_any_key_and_values_are_yaml() -> None:
    cfg = apply_overrides(load_recipe("basic_motions"),
                          ["model.filters=[8,16,8]", "data.options.normalize=series", "optim.lr=1e-3",
                           "trainer.devices=2"])
    cfg = validate_recipe(cfg)
    assert cfg["model"]["filters"] == [8, 16, 8]
    assert cfg["data"]["options"] == {"normalize": "series"}
    assert cfg["optim"]["lr"] == pytest.approx(1e-3) and isinstance(cfg["optim"]["lr"], float)
    assert cfg["trainer"]["devices"] == 2


def test_wrong_types_and_names() -> None:
    with pytest.raises(ConfigError, match="trainer.max_epochs.*integer"):
        validate_recipe(apply_overrides(load_recipe("basic_motions"), ["trainer.max_epochs=many"]))
    with pytest.raises(UnknownNameError, match="did you mean 'basic_motions'"):
        load_recipe("basic_motoins")
    with pytest.raises(ConfigError, match="malformed YAML in x.yaml line 2"):
        parse_yaml("a: 1\n  b: [\n", "x.yaml")
    with pytest.raises(ConfigError, match="no pretrain stage"):
        apply_overrides(load_recipe("basic_motions"), ["pretrain.trainer.max_epochs=1"])
