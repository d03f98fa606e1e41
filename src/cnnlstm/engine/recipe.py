"""Recipes: YAML files that name the data, model, optimiser and trainer of a run, checked against a schema.

A recipe is a shipped name (``basic_motions`` -> ``cnnlstm/recipes/basic_motions.yaml``), a path to a
YAML file or a dict; :func:`resolve_config` turns any of them into a run's config. It is merged over
:data:`DEFAULTS` (the defaults of the typed sections in :mod:`cnnlstm.config`, which also give
:data:`SCHEMA`), ``--set key.path=value`` overrides are applied (values are YAML-parsed, so
``trainer.devices=2`` is an int and ``model.widths=[8,16]`` a list), and every key is checked against
:data:`SCHEMA`: an unknown or mistyped key is a :class:`~cnnlstm.errors.ConfigError` naming the closest valid key.
Keys inside ``model``, ``data.options``, ``data.augment``, ``pretrain.encoder`` and ``search`` are free: the
model constructor, the data loader, :func:`cnnlstm.data.augment.build_augmentation` and ``cnnlstm tune`` check
those.

Overfitting control lives in every recipe: ``model.dropout``, ``optim.weight_decay``, ``optim.label_smoothing``,
``optim.mixup``, ``optim.swa`` (stochastic weight averaging), ``early_stopping`` and ``data.augment``. Speed
settings: ``trainer.precision``, ``trainer.channels_last``, ``trainer.compile``, ``trainer.cuda_graphs``,
``trainer.accumulate_grad_batches``, ``data.num_workers`` / ``pin_memory`` / ``persistent_workers``,
``data.feature_cache`` and ``data.feature_cache_dtype`` (``float32``, or ``float16`` for half the cache's bytes).
Long sequences: ``trainer.tbptt_steps`` (truncated backpropagation through time, classification with
``frame_lstm``).
Fine-tuning a pretrained encoder: ``optim.encoder_lr`` and ``optim.unfreeze_at_epoch`` (frozen for that many
epochs, then ``model.freeze`` applies; :mod:`cnnlstm.engine.unfreeze`).
"""

from __future__ import annotations

import copy
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlstm.config import RecipeConfig, field_types, nested_section, section_defaults, section_from_dict
from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["SCHEMA", "DEFAULTS", "FREE", "NULLABLE", "list_recipes", "load_recipe", "apply_overrides",
           "validate_recipe", "resolve_config", "with_defaults", "check_key", "has_key", "parse_yaml",
           "read_recipe_text"]

FREE = object()  # marks a section whose keys are checked by someone else (a constructor, a loader)


def _schema_of(cls: type, prefix: str, nullable: list[str]) -> dict[str, Any]:
    """The schema of a section class: a dict per nested section, FREE for an open one, else the leaf's types."""
    out: dict[str, Any] = {}
    for key, hint in field_types(cls).items():
        path = f"{prefix}{key}"
        sub = nested_section(hint)
        if sub is not None:
            if type(None) in typing.get_args(hint):
                nullable.append(path)
            out[key] = _schema_of(sub, f"{path}.", nullable)
        elif (typing.get_origin(hint) or hint) is dict:
            out[key] = FREE
        else:
            types = tuple(typing.get_origin(t) or t for t in (typing.get_args(hint) or (hint,)))
            out[key] = types if len(types) > 1 else types[0]
    return out


_NULLABLE: list[str] = []
#: every key a recipe may hold, derived from :class:`cnnlstm.config.RecipeConfig`: a dict is a section, a type
#: (or tuple of types) a leaf, FREE an open section
SCHEMA: dict[str, Any] = _schema_of(RecipeConfig, "", _NULLABLE)

#: sections that may be null (off): ``optim.swa: null`` trains without weight averaging
NULLABLE = tuple(_NULLABLE)

#: values a recipe does not have to spell out, from :class:`cnnlstm.config.RecipeConfig` (``pretrain`` has none:
#: it exists only when a recipe names it)
DEFAULTS: dict[str, Any] = section_defaults(RecipeConfig)


def _recipe_dir() -> Path:
    return Path(str(resources.files("cnnlstm") / "recipes"))


def list_recipes() -> dict[str, str]:
    """``{name: description}`` of the recipes shipped with cnnlstm.

    Example:
        >>> "basic_motions" in list_recipes()  # doctest: +SKIP
        True
    """
    out = {}
    for path in sorted(_recipe_dir().glob("*.yaml")):
        raw = parse_yaml(read_recipe_text(path), str(path))
        out[path.stem] = str(raw.get("description", "")).strip()
    return out


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse a recipe's YAML text into a dict, turning YAML errors into one-line ``ConfigError`` messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"malformed YAML in {source}{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of sections (data:, model:, ...), got {type(data).__name__}")
    return data


def with_defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` over the defaults of its sections (:mod:`cnnlstm.config`), not yet validated.

    Nested sections are filled too: a recipe's ``pretrain`` stage over the section defaults (not over the recipe's
    own values), ``optim.swa`` over the weight-averaging defaults when it is on. Values that are not mappings
    where a section belongs are kept as they are, for :func:`validate_recipe` to name.

    Args:
        recipe: a partial recipe, e.g. ``{"model": {"name": "lstm_fcn"}, "data": {"spec": "ucr:GunPoint"}}``.

    Example:
        >>> with_defaults({"data": {"spec": "ucr:GunPoint"}})["data"]["batch_size"]
        32
    """
    return _fill(recipe, RecipeConfig)


def _fill(node: dict[str, Any], cls: type) -> dict[str, Any]:
    out = section_defaults(cls)
    hints = field_types(cls)
    for key, value in node.items():
        sub = nested_section(hints[key]) if key in hints else None
        if sub is not None and value is None and type(None) not in typing.get_args(hints[key]):
            value = {}  # `pretrain:` with nothing under it: the section with its defaults
        out[key] = _fill(value, sub) if sub is not None and isinstance(value, dict) else copy.deepcopy(value)
    return out


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """Read a recipe (shipped name or YAML path), merged over :data:`DEFAULTS` but not yet validated.

    Args:
        name_or_path: ``"basic_motions"`` or ``"path/to/recipe.yaml"``.

    Example:
        >>> cfg = load_recipe("basic_motions")  # doctest: +SKIP
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"recipe file {name_or_path!r} does not exist")
        raw = parse_yaml(read_recipe_text(path), str(path))
        raw.setdefault("name", path.stem)
    else:
        shipped = _recipe_dir() / f"{name_or_path}.yaml"
        if not shipped.is_file():
            names = [p.stem for p in _recipe_dir().glob("*.yaml")]
            raise UnknownNameError(f"unknown recipe {name_or_path!r}{did_you_mean(name_or_path, names)}; "
                                   "`cnnlstm recipes` lists them, or pass a path to a .yaml file")
        raw = parse_yaml(read_recipe_text(shipped), str(shipped))
        raw.setdefault("name", name_or_path)
    return with_defaults(raw)


def resolve_config(recipe: str | dict[str, Any], *, data: str | None = None,
                   overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The validated recipe a run trains with: loaded, merged with the defaults, overridden and checked.

    The one way a recipe becomes a run's config: ``fit``, ``resume``, ``cnnlstm tune``, ``cnnlstm summary`` and
    the benchmarks all call it. A dict goes through the same steps as a YAML file, so a partial dict works.

    Args:
        recipe: a shipped recipe name, a YAML path, or a recipe dict (partial or whole).
        data: a dataset spec replacing ``data.spec``.
        overrides: ``key.path=value`` strings (see :func:`apply_overrides`).

    Raises:
        ConfigError: an unknown key (with the closest valid one), a wrong type or a value out of range.

    Example:
        >>> resolve_config({"model": {"name": "lstm_fcn"}, "data": {"spec": "ucr:GunPoint"}})["optim"]["lr"]
        0.001
    """
    if isinstance(recipe, str):
        config = load_recipe(recipe)
    elif isinstance(recipe, dict):
        config = with_defaults(recipe)
    else:
        raise ConfigError(f"a recipe is a name, a YAML path or a dict, got {type(recipe).__name__}")
    if data is not None:
        config["data"] = {**(config["data"] if isinstance(config.get("data"), dict) else {}), "spec": data}
    return validate_recipe(apply_overrides(config, list(overrides)))


def read_recipe_text(path: Path) -> str:
    """A recipe file's text, decoded as UTF-8; any other encoding is a ``ConfigError`` naming the bad byte.

    Args:
        path: the YAML file.

    Example:
        >>> text = read_recipe_text(Path("recipe.yaml"))  # doctest: +SKIP
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start
    raise ConfigError(f"{path} is not UTF-8 text (invalid byte at offset {offset}); re-save it as UTF-8")


def _schema_at(path: list[str]) -> Any:
    """The schema entry for a dotted key path, or a ConfigError naming the closest valid key."""
    node: Any = SCHEMA
    for i, key in enumerate(path):
        if node is FREE:
            return FREE
        if not isinstance(node, dict) or key not in node:
            where = ".".join(path[:i])
            choices = [f"{where}.{k}" if where else k for k in node] if isinstance(node, dict) else []
            full = ".".join(path[: i + 1])
            hint = did_you_mean(full, choices) or (f" (valid keys: {', '.join(choices)})" if choices else "")
            raise ConfigError(f"unknown recipe key {full!r}{hint}")
        node = node[key]
    return node


def _check_leaf(key: str, value: Any, expected: Any) -> Any:
    types = expected if isinstance(expected, tuple) else (expected,)
    if float in types and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in types else value
    if isinstance(value, bool) and bool not in types:
        raise ConfigError(f"recipe key {key!r} must be {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"recipe key {key!r} must be {_type_names(types)}, got {value!r}")
    return value


def _type_names(types: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
             type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _validate(node: Any, schema: Any, prefix: str) -> Any:
    if schema is FREE:
        if not isinstance(node, dict):
            raise ConfigError(f"recipe section {prefix!r} must be a mapping, got {node!r}")
        return node
    if isinstance(schema, dict):
        if node is None and prefix in NULLABLE:
            return None
        if not isinstance(node, dict):
            raise ConfigError(f"recipe section {prefix!r} must be a mapping, got {node!r}")
        out = {}
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            sub = _schema_at(path.split("."))
            out[key] = _validate(value, sub, path)
        return out
    return _check_leaf(prefix, node, schema)


def validate_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Check every key, value type and value range of a recipe; return it merged with the defaults, numbers
    normalised (``1`` for a float key becomes ``1.0``, YAML 1.1's ``"1e-3"`` becomes ``0.001``).

    Raises:
        ConfigError: unknown key (with the closest valid one), wrong type, or a missing required entry.

    Example:
        >>> validate_recipe(load_recipe("basic_motions"))["data"]["spec"]  # doctest: +SKIP
        'ucr:BasicMotions'
    """
    out = _validate(with_defaults(recipe) if isinstance(recipe, dict) else recipe, SCHEMA, "")
    if not out["data"].get("spec"):
        raise ConfigError("the recipe names no data: set data.spec (or pass --data SPEC)")
    if not out.get("model", {}).get("name"):
        raise ConfigError("the recipe names no model: set model.name (`cnnlstm models` lists them)")
    section_from_dict(RecipeConfig, out)  # each section's own range checks (data.batch_size >= 1, ...)
    _check_tbptt(out, pretrain=False)
    _check_cuda_graphs(out["trainer"])
    _check_refit(out)
    if "pretrain" in out:
        _check_tbptt(out["pretrain"], pretrain=True)
        if not out["pretrain"]["data"].get("spec"):
            raise ConfigError("pretrain.data.spec is missing: name the data the encoder is pretrained on")
    return out


def _check_refit(recipe: dict[str, Any]) -> None:
    """``trainer.refit``: the refit has no validation split, so nothing in it may read one."""
    if (recipe.get("pretrain") or {}).get("trainer", {}).get("refit"):
        raise ConfigError("pretrain.trainer.refit: only the main stage refits; set trainer.refit instead")
    if not recipe["trainer"].get("refit"):
        return
    if recipe["optim"]["scheduler"] == "plateau":
        raise ConfigError("trainer.refit with optim.scheduler: plateau: the refit has no validation loss to reduce "
                          "on; use cosine or none, or drop trainer.refit")
    if recipe["optim"]["swa"]:
        raise ConfigError("trainer.refit with optim.swa: whether the average is kept is decided on validation, "
                          "which the refit trains on; drop one of them")


def _check_tbptt(section: dict[str, Any], pretrain: bool) -> None:
    """``trainer.tbptt_steps``: a positive int, on the main stage only, without the automatic-optimisation
    features it replaces (gradient accumulation, weight averaging); the model and task are checked at build."""
    steps = section["trainer"]["tbptt_steps"]
    if steps is None:
        return
    if pretrain:
        raise ConfigError("pretrain.trainer.tbptt_steps: the pretraining stage trains on single images; set "
                          "trainer.tbptt_steps (the sequence stage) instead")
    if steps < 1:
        raise ConfigError(f"trainer.tbptt_steps must be >= 1 (time steps per chunk) or null, got {steps}")
    if section["trainer"]["accumulate_grad_batches"] > 1:
        raise ConfigError("trainer.tbptt_steps steps the optimiser after every chunk, so it cannot accumulate "
                          "gradients over batches: set trainer.accumulate_grad_batches=1 or drop tbptt_steps")
    if section["optim"]["swa"]:
        raise ConfigError("optim.swa does not run with trainer.tbptt_steps (weight averaging needs Lightning's "
                          "automatic optimisation): drop one of them")


def _check_cuda_graphs(trainer: dict[str, Any]) -> None:
    """``trainer.cuda_graphs`` replays one model's forward and backward on one GPU, step by step: refuse the
    settings that change what a step is (compile, TBPTT chunks, accumulated gradients) or spread it over devices."""
    if not trainer.get("cuda_graphs"):
        return
    clash = [(trainer.get("compile"), "trainer.compile (compile or graph, not both)"),
             (trainer.get("tbptt_steps") is not None, "trainer.tbptt_steps"),
             (trainer["accumulate_grad_batches"] > 1, "trainer.accumulate_grad_batches > 1 (a replayed backward "
              "writes its gradients in place)"),
             (trainer["num_nodes"] > 1 or _device_count(trainer["devices"]) > 1, "more than one device "
              "(trainer.devices / num_nodes)")]
    for bad, what in clash:
        if bad:
            raise ConfigError(f"trainer.cuda_graphs does not run with {what}: drop one of them")


def _device_count(devices: int | str | list) -> int:
    """Devices a ``trainer.devices`` value names (``auto`` and ``-1`` count as one here: known only at run time)."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        return max(1, int(devices))
    except ValueError:
        return 1


def check_key(key: str, recipe: dict[str, Any] | None = None) -> None:
    """Check that a dotted key path is a recipe key; keys inside open sections (``model.*``) always are.

    Args:
        key: e.g. ``"trainer.max_epochs"`` or ``"model.hidden_size"``.
        recipe: when given, a ``pretrain.*`` key also needs the recipe to have a pretraining stage.

    Raises:
        ConfigError: an unknown key, naming the closest valid one (``did you mean 'trainer.max_epochs'``).

    Example:
        >>> check_key("optim.lr")  # a recipe key: nothing to say
        >>> check_key("optim.lrr")
        Traceback (most recent call last):
        ...
        cnnlstm.errors.ConfigError: unknown recipe key 'optim.lrr' (did you mean 'optim.lr', 'optim.loss', 'optim.swa'?)
    """
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"recipe key {key!r} has an empty part")
    _schema_at(path)
    if recipe is not None and path[0] == "pretrain" and len(path) > 1 and "pretrain" not in recipe:
        raise ConfigError(f"recipe key {key!r}: recipe {recipe.get('name', '')!r} has no pretrain stage")


def has_key(key: str) -> bool:
    """Whether a dotted key path is a recipe key (see :func:`check_key`).

    Example:
        >>> has_key("model.hidden_size"), has_key("optim.lr"), has_key("optim.lrr")
        (True, True, False)
    """
    try:
        check_key(key)
    except ConfigError:
        return False
    return True


def apply_overrides(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values YAML-parsed); unknown keys raise ``ConfigError``.

    Args:
        recipe: a merged recipe.
        overrides: e.g. ``["trainer.max_epochs=1", "optim.lr=3e-3", "data.options.n_train=20"]``.

    Example:
        >>> apply_overrides({"trainer": {"max_epochs": 5}}, ["trainer.max_epochs=1"])["trainer"]["max_epochs"]
        1
    """
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value, e.g. trainer.max_epochs=5")
        key, text = item.split("=", 1)
        path = key.strip().split(".")
        if not all(path):
            raise ConfigError(f"override {item!r} has an empty key")
        check_key(key, out)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # a plain string that is not valid YAML, e.g. "a: b: c"
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return out
