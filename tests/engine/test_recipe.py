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


def test_defaults_and_types_come_from_the_typed_sections() -> None:
    from cnnlstm.config import OptimConfig, RecipeConfig, TrainerConfig, section_defaults, section_to_dict
    from cnnlstm.engine.recipe import DEFAULTS, SCHEMA
    from cnnlstm.tasks import OptimConfig as TaskOptimConfig

    assert TaskOptimConfig is OptimConfig  # the tasks take the recipe's own optim section
    assert DEFAULTS == section_defaults(RecipeConfig)
    assert DEFAULTS["optim"] == section_to_dict(OptimConfig()) and DEFAULTS["trainer"]["max_epochs"] == 20
    assert "min_epochs" not in DEFAULTS["trainer"] and "pretrain" not in DEFAULTS  # no default: left out
    assert SCHEMA["trainer"]["devices"] == (int, str, list) and SCHEMA["optim"]["encoder_lr"] == (float, type(None))
    assert SCHEMA["trainer"]["min_epochs"] is int and set(SCHEMA["trainer"]) == set(TrainerConfig.__annotations__)


def test_a_partial_dict_resolves_like_the_same_yaml_file(tmp_path) -> None:
    import yaml

    from cnnlstm.engine.recipe import resolve_config, with_defaults

    partial = {"model": {"name": "lstm_fcn"}, "data": {"spec": "ucr:GunPoint"},
               "optim": {"lr": 3e-3, "swa": {"start_epoch": 2}}}
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(partial))
    sets = ["trainer.max_epochs=1", "optim.weight_decay=0"]
    from_dict = resolve_config(partial, overrides=sets)
    from_file = resolve_config(str(path), overrides=sets)
    assert from_file.pop("name") == "partial" and from_dict == from_file
    assert from_dict["optim"] == {"lr": 3e-3, "weight_decay": 0.0, "scheduler": "cosine", "label_smoothing": 0.0,
                                  "swa": {"lr": 1e-4, "start_epoch": 2, "annealing_epochs": 1}, "loss": None,
                                  "encoder_lr": None, "unfreeze_at_epoch": None, "mixup": 0.0}
    assert from_dict["data"]["batch_size"] == 32 and from_dict["trainer"]["max_epochs"] == 1
    assert partial == yaml.safe_load(path.read_text())  # the caller's dict is not modified
    # a `pretrain:` with nothing under it is the stage with the section defaults, so it must name its data
    stage = with_defaults({**partial, "pretrain": None})["pretrain"]
    assert stage["trainer"]["max_epochs"] == 20 and "spec" not in stage["data"] and "encoder" not in stage
    with pytest.raises(ConfigError, match="pretrain.data.spec is missing"):
        resolve_config({**partial, "pretrain": None})


def test_section_range_checks_run_on_resolve() -> None:
    from cnnlstm.engine.recipe import resolve_config

    with pytest.raises(ConfigError, match="^data.batch_size must be >= 1, got 0$"):
        resolve_config("basic_motions", overrides=["data.batch_size=0"])
    with pytest.raises(ConfigError, match="^optim.scheduler must be one of cosine, plateau, none, got 'step'$"):
        resolve_config("basic_motions", overrides=["optim.scheduler=step"])
    with pytest.raises(ConfigError, match="^trainer.ddp_timeout must be > 0 seconds, got 0$"):
        resolve_config("basic_motions", overrides=["trainer.ddp_timeout=0"])
    with pytest.raises(ConfigError, match="must be a number or null, got 'fast'"):
        resolve_config("basic_motions", overrides=["optim.encoder_lr=fast"])


def test_check_key_names_the_closest_key() -> None:
    from cnnlstm.engine.recipe import check_key, has_key

    assert has_key("model.hidden_size") and has_key("optim.swa.lr") and has_key("pretrain.trainer.max_epochs")
    assert not has_key("optim.lrr") and not has_key("trainer..max_epochs")
    with pytest.raises(ConfigError, match=r"^unknown recipe key 'optim.weight_decy' \(did you mean 'optim.weight_d"):
        check_key("optim.weight_decy")
    with pytest.raises(ConfigError, match="'data.batch_sise'.*did you mean 'data.batch_size'"):
        check_key("data.batch_sise", load_recipe("basic_motions"))
    with pytest.raises(ConfigError, match="'basic_motions' has no pretrain stage"):
        check_key("pretrain.optim.lr", load_recipe("basic_motions"))
    check_key("pretrain.optim.lr", load_recipe("digit_sequences"))
