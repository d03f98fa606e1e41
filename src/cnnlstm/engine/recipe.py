"""Recipes: YAML files that name the data, model, optimiser and trainer of a run, checked against a schema.

A recipe is a shipped name (``basic_motions`` -> ``cnnlstm/recipes/basic_motions.yaml``) or a path to a
YAML file. It is merged over :data:`DEFAULTS`, ``--set key.path=value`` overrides are applied (values are
YAML-parsed, so ``trainer.devices=2`` is an int and ``model.widths=[8,16]`` a list), and every key is
checked against :data:`SCHEMA`: an unknown or mistyped key is a :class:`~cnnlstm.errors.ConfigError`
naming the closest valid key. Keys inside ``model``, ``data.options``, ``data.augment``, ``pretrain.encoder``
and ``search`` are free: the model constructor, the data loader, :func:`cnnlstm.data.augment.build_augmentation`
and ``cnnlstm tune`` check those.

Overfitting control lives in every recipe: ``model.dropout``, ``optim.weight_decay``, ``optim.label_smoothing``,
``optim.swa`` (stochastic weight averaging), ``early_stopping`` and ``data.augment``. Speed settings:
``trainer.precision``, ``trainer.channels_last``, ``trainer.compile``, ``trainer.accumulate_grad_batches``,
``data.num_workers`` / ``pin_memory`` / ``persistent_workers``, ``data.feature_cache`` and
``data.feature_cache_dtype`` (``float32``, or ``float16`` for half the cache's bytes). Long sequences:
``trainer.tbptt_steps`` (truncated backpropagation through time, classification with ``frame_lstm``).
Fine-tuning a pretrained encoder: ``optim.encoder_lr`` and ``optim.unfreeze_at_epoch`` (frozen for that many
epochs, then ``model.freeze`` applies; :mod:`cnnlstm.engine.unfreeze`).
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["SCHEMA", "DEFAULTS", "FREE", "list_recipes", "load_recipe", "apply_overrides", "validate_recipe",
           "parse_yaml", "read_recipe_text"]

FREE = object()  # marks a section whose keys are checked by someone else (a constructor, a loader)
_NUM = (int, float)
_OPT_STR = (str, type(None))

_DATA = {"spec": str, "val_fraction": float, "batch_size": int, "num_workers": int, "pin_memory": bool,
         "persistent_workers": bool, "options": FREE, "augment": FREE, "feature_cache": (bool, str),
         "feature_cache_dtype": str}
_SWA = {"lr": float, "start_epoch": _NUM, "annealing_epochs": int}
_OPTIM = {"lr": float, "weight_decay": float, "scheduler": str, "label_smoothing": float,
          "swa": _SWA, "loss": _OPT_STR, "encoder_lr": (float, type(None)),
          "unfreeze_at_epoch": (int, type(None))}
_TRAINER = {
    "max_epochs": int, "min_epochs": int, "accelerator": str, "devices": (int, str, list), "strategy": str,
    "num_nodes": int, "precision": (int, str), "gradient_clip_val": (float, str, type(None)),
    "accumulate_grad_batches": int, "deterministic": (bool, str), "limit_train_batches": _NUM,
    "limit_val_batches": _NUM, "limit_test_batches": _NUM, "log_every_n_steps": int, "enable_progress_bar": bool,
    "channels_last": bool, "compile": bool, "checkpoint_every_n_steps": (int, type(None)),
    "tbptt_steps": (int, type(None)), "ddp_timeout": _NUM, "logger": (str, list, type(None)),
    "ensemble": (int, type(None)),
}
_EARLY = {"monitor": _OPT_STR, "mode": _OPT_STR, "patience": int, "min_delta": float, "enabled": bool}

#: sections that may be null (off): ``optim.swa: null`` trains without weight averaging
NULLABLE = ("optim.swa", "pretrain.optim.swa")

#: every key a recipe may hold; a dict is a section, a type (or tuple of types) a leaf, FREE an open section
SCHEMA: dict[str, Any] = {
    "name": str,
    "description": str,
    "seed": int,
    "task": _OPT_STR,
    "data": _DATA,
    "model": FREE,
    "optim": _OPTIM,
    "trainer": _TRAINER,
    "early_stopping": _EARLY,
    "pretrain": {"data": _DATA, "encoder": FREE, "optim": _OPTIM, "trainer": _TRAINER, "early_stopping": _EARLY},
    "search": FREE,  # read by `cnnlstm tune` (cnnlstm.tune.search); `fit` ignores it
}

#: values a recipe does not have to spell out (``pretrain`` has none: it exists only when a recipe names it)
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "task": None,
    "data": {"val_fraction": 0.2, "batch_size": 32, "num_workers": 0, "pin_memory": False,
             "persistent_workers": True, "options": {}, "augment": {}, "feature_cache": "auto"},
    "optim": {"lr": 1e-3, "weight_decay": 1e-2, "scheduler": "cosine", "label_smoothing": 0.0,
              "swa": None, "loss": None},
    "trainer": {"max_epochs": 20, "accelerator": "auto", "devices": 1, "strategy": "auto", "num_nodes": 1,
                "precision": "32-true", "gradient_clip_val": "auto", "accumulate_grad_batches": 1,
                "deterministic": False, "log_every_n_steps": 1, "channels_last": False, "compile": False,
                "checkpoint_every_n_steps": None, "tbptt_steps": None, "ensemble": None,
                "ddp_timeout": 1800},
    "early_stopping": {"monitor": None, "mode": None, "patience": 10, "min_delta": 0.0, "enabled": True},
}


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


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
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
    recipe = _merge(DEFAULTS, raw)
    if "pretrain" in raw:  # a pretraining stage inherits the recipe's optimiser, trainer and data defaults
        pretrain = raw["pretrain"] or {}
        if not isinstance(pretrain, dict):  # merging needs a mapping; say so before _merge trips over it
            raise ConfigError(f"recipe section 'pretrain' must be a mapping (data:, encoder:, ...), got {pretrain!r}")
        recipe["pretrain"] = _merge({k: DEFAULTS[k] for k in ("data", "optim", "trainer", "early_stopping")},
                                    pretrain)
    return recipe


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
    """Check every key and value type of a merged recipe; return it with numbers normalised.

    Raises:
        ConfigError: unknown key (with the closest valid one), wrong type, or a missing required entry.

    Example:
        >>> validate_recipe(load_recipe("basic_motions"))["data"]["spec"]  # doctest: +SKIP
        'ucr:BasicMotions'
    """
    out = _validate(recipe, SCHEMA, "")
    if not out.get("data", {}).get("spec"):
        raise ConfigError("the recipe names no data: set data.spec (or pass --data SPEC)")
    if not out.get("model", {}).get("name"):
        raise ConfigError("the recipe names no model: set model.name (`cnnlstm models` lists them)")
    for section in [out, out.get("pretrain")]:
        if not section:
            continue
        data = section["data"]
        if not 0.0 < data["val_fraction"] < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {data['val_fraction']}")
        if data["batch_size"] < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {data['batch_size']}")
        if data.get("num_workers", 0) < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {data['num_workers']}")
        epochs = section["trainer"].get("max_epochs")
        if epochs is not None and epochs != -1 and epochs < 1:  # Lightning reads -1 as "no limit"
            raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1 for no limit), got {epochs}")
        _check_swa(section["optim"].get("swa") or {})
        every = section["trainer"].get("checkpoint_every_n_steps")
        if every is not None and every < 1:
            raise ConfigError(f"trainer.checkpoint_every_n_steps must be >= 1 or null, got {every}")
        _check_tbptt(section, pretrain=section is not out)
    if "pretrain" in out and not out["pretrain"].get("data", {}).get("spec"):
        raise ConfigError("pretrain.data.spec is missing: name the data the encoder is pretrained on")
    return out


def _check_tbptt(section: dict[str, Any], pretrain: bool) -> None:
    """``trainer.tbptt_steps``: a positive int, on the main stage only, without the automatic-optimisation
    features it replaces (gradient accumulation, weight averaging); the model and task are checked at build."""
    steps = section["trainer"].get("tbptt_steps")
    if steps is None:
        return
    if pretrain:
        raise ConfigError("pretrain.trainer.tbptt_steps: the pretraining stage trains on single images; set "
                          "trainer.tbptt_steps (the sequence stage) instead")
    if steps < 1:
        raise ConfigError(f"trainer.tbptt_steps must be >= 1 (time steps per chunk) or null, got {steps}")
    if section["trainer"].get("accumulate_grad_batches", 1) > 1:
        raise ConfigError("trainer.tbptt_steps steps the optimiser after every chunk, so it cannot accumulate "
                          "gradients over batches: set trainer.accumulate_grad_batches=1 or drop tbptt_steps")
    if section["optim"].get("swa"):
        raise ConfigError("optim.swa does not run with trainer.tbptt_steps (weight averaging needs Lightning's "
                          "automatic optimisation): drop one of them")


def _check_swa(swa: dict[str, Any]) -> None:
    start = swa.get("start_epoch", 0.8)
    if isinstance(start, float) and not 0.0 < start <= 1.0:
        raise ConfigError(f"optim.swa.start_epoch is an epoch (int >= 1) or a fraction of max_epochs in (0, 1], "
                          f"got {start}")
    if isinstance(start, int) and start < 1:
        raise ConfigError(f"optim.swa.start_epoch must be >= 1 (1-based epoch), got {start}")
    if not swa.get("lr", 1.0) > 0:
        raise ConfigError(f"optim.swa.lr must be > 0, got {swa.get('lr')}")


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
        _schema_at(path)
        if path[0] == "pretrain" and len(path) > 1 and "pretrain" not in out:
            raise ConfigError(f"override {key!r}: recipe {out.get('name', '')!r} has no pretrain stage")
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
