"""A recipe's ``search:`` section: what to optimise, over which families and space, and each trial's recipe.

::

    search:
      metric: val/loss          # default: the metric that picks the recipe's checkpoint
      direction: minimize       # default: that metric's mode (or "minimize" for a loss)
      max_epochs: 15            # each trial's trainer.max_epochs (default: the recipe's)
      models: auto              # the recipe's model (default), a list of families, "auto" (every family that
                                # reads the same input), or {family: {key: spec}} with per-family overrides
      space:                    # specs over the shipped spaces, for every family; null drops a key
        optim.lr: {low: 1.0e-4, high: 3.0e-3, log: true}
        model.dropout: null

The trial's score is its best-checkpoint validation value of ``metric``; the checkpoint is chosen on the
same metric, so ``best.yaml`` trained by ``cnnlstm fit`` reports the same number.

Example:
    >>> plan = resolve_search("basic_motions")  # doctest: +SKIP
    >>> plan.metric, plan.direction  # doctest: +SKIP
    ('val/loss', 'minimize')
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

import optuna

from cnnlstm.engine.data import load_bundle
from cnnlstm.engine.recipe import check_key, resolve_config
from cnnlstm.errors import ConfigError
from cnnlstm.models import get_model_class
from cnnlstm.tasks import TASKS, task_for_kind
from cnnlstm.tune.families import FAMILIES, default_specs, family_names, freeze_choices
from cnnlstm.tune.space import Dim, Stack, merge_specs, parse_space

__all__ = ["SearchPlan", "SEARCH_KEYS", "split_search", "resolve_search", "set_path", "FAMILY_PARAM"]

#: keys a recipe's ``search:`` section may hold
SEARCH_KEYS = ("metric", "direction", "max_epochs", "models", "space")

#: the Optuna parameter that chooses the model family when several are searched
FAMILY_PARAM = "model.name"


@dataclass
class SearchPlan:
    """Everything a trial needs: the base recipe, the objective and the space of every family.

    Attributes:
        base: the validated recipe without its ``search`` section.
        metric: the validation metric to optimise (``val/...``).
        direction: ``"minimize"`` or ``"maximize"``.
        max_epochs: each trial's ``trainer.max_epochs``.
        spaces: ``{family: {key: Dim}}``; one entry unless the integration pattern itself is searched.
    """

    base: dict[str, Any]
    metric: str
    direction: str
    max_epochs: int
    spaces: dict[str, dict[str, Dim]]

    def sample(self, trial: optuna.Trial) -> tuple[str, dict[str, Any]]:
        """Draw a family and its values: ``(family, {recipe_key: value})``."""
        families = list(self.spaces)
        if len(families) == 1:
            family = families[0]
            trial_view: Any = trial
        else:
            family = trial.suggest_categorical(FAMILY_PARAM, families)
            # Architecture parameters are per family (LSTM-FCN's dropout is not DeepConvLSTM's); training ones
            # (optim.*, data.*) are shared, so TPE learns a learning rate from every trial.
            trial_view = _FamilyTrial(trial, family)
        values: dict[str, Any] = {}
        for dim in self.spaces[family].values():
            values.update(dim.sample(trial_view if _is_model_dim(dim) else trial))
        return family, values

    def trial_config(self, family: str, values: dict[str, Any]) -> dict[str, Any]:
        """The full recipe of one trial: the base recipe with ``values`` set, validated.

        A family other than the recipe's own starts from an empty model section (the recipe's model keys
        belong to its own family), so only sampled keys and constructor defaults apply.
        """
        config = copy.deepcopy(self.base)
        if family != config["model"]["name"]:
            config["model"] = {"name": family}
        for key, value in values.items():
            set_path(config, key, value)
        config["trainer"]["max_epochs"] = self.max_epochs
        config["early_stopping"]["monitor"] = self.metric
        config["early_stopping"]["mode"] = "min" if self.direction == "minimize" else "max"
        return resolve_config(config)


class _FamilyTrial:
    """A trial view that prefixes parameter names with the family (``lstm_fcn/model.dropout``)."""

    def __init__(self, trial: optuna.Trial, family: str) -> None:
        self._trial = trial
        self._prefix = f"{family}/"

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._trial.suggest_categorical(self._prefix + name, choices)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        return self._trial.suggest_int(self._prefix + name, *args, **kwargs)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        return self._trial.suggest_float(self._prefix + name, *args, **kwargs)


def _dim_keys(dim: Dim) -> list[str]:
    if isinstance(dim, Stack):
        return [k for k in (dim.widths, dim.kernels) if k]
    return [dim.key]  # type: ignore[attr-defined]


def _is_model_dim(dim: Dim) -> bool:
    return any(k.startswith("model.") for k in _dim_keys(dim))


def set_path(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``key = "a.b.c"``, creating sections on the way.

    Example:
        >>> cfg = {"model": {"name": "crnn"}}
        >>> set_path(cfg, "model.encoder_kwargs.widths", [8, 16]); cfg
        {'model': {'name': 'crnn', 'encoder_kwargs': {'widths': [8, 16]}}}
    """
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def split_search(recipe: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(recipe without search, search section)``; unknown search keys raise ``ConfigError``."""
    recipe = dict(recipe)
    search = recipe.pop("search", None) or {}
    if not isinstance(search, dict):
        raise ConfigError(f"the recipe's search section must be a mapping, got {search!r}")
    unknown = sorted(set(search) - set(SEARCH_KEYS))
    if unknown:
        raise ConfigError(f"unknown search key(s) {unknown}; valid keys: {', '.join(SEARCH_KEYS)}")
    return recipe, search


def _constructor_keys(family: str) -> set[str] | None:
    """The keyword names ``family``'s constructor takes, or None when it takes ``**kwargs``."""
    params = inspect.signature(get_model_class(family).__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != "self"} | {"name"}


def _accepts(family: str, dim: Dim) -> bool:
    names = _constructor_keys(family)
    return names is None or all(k.split(".")[1] in names for k in _dim_keys(dim) if k.startswith("model."))


def _families(search: dict[str, Any], base: dict[str, Any], inputs: str | None) -> dict[str, dict[str, Any]]:
    """``{family: per-family spec overrides}`` from ``search.models``."""
    models = search.get("models")
    if models is None:
        return {base["model"]["name"]: {}}
    if models == "auto":
        names = family_names(inputs) if inputs else []
        if not names:
            raise ConfigError(f"search.models: auto found no shipped family for {inputs!r} data; list the models")
        return {n: {} for n in names}
    if isinstance(models, str):
        models = [models]
    if isinstance(models, list):
        models = {m: {} for m in models}
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"search.models must be 'auto', a list of model names or a mapping, got {models!r}")
    for name in models:
        get_model_class(name)  # unknown names raise with suggestions
    return {str(k): dict(v or {}) for k, v in models.items()}


def _objective(search: dict[str, Any], base: dict[str, Any], kind: str) -> tuple[str, str]:
    task = TASKS[base.get("task") or task_for_kind(kind)]
    monitor = base["early_stopping"].get("monitor") or task.monitor
    metric = search.get("metric") or monitor
    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise ConfigError(f"search.metric must be a validation metric (val/...), got {metric!r}; tuning on "
                          "training or test scores would bias the result")
    direction = search.get("direction")
    if direction is None:
        if metric == monitor:
            mode = base["early_stopping"].get("mode") or (task.monitor_mode if monitor == task.monitor else "min")
        elif metric == task.monitor:
            mode = task.monitor_mode
        elif metric.endswith("loss"):
            mode = "min"
        else:
            raise ConfigError(f"search.direction: say whether {metric} should be minimize'd or maximize'd")
        direction = "minimize" if mode == "min" else "maximize"
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"search.direction must be 'minimize' or 'maximize', got {direction!r}")
    return metric, direction


def resolve_search(recipe: str | dict[str, Any], *, data: str | None = None, overrides: list[str] | None = None,
                   models: str | list[str] | None = None, max_epochs: int | None = None) -> SearchPlan:
    """Load a recipe and its ``search`` section into a :class:`SearchPlan`, checking the space up front.

    Args:
        recipe: a shipped recipe name, a YAML path or a recipe dict (with or without ``search``).
        data: a dataset spec replacing ``data.spec``.
        overrides: ``key.path=value`` overrides of the base recipe.
        models: replaces ``search.models`` (``"auto"``, or a list of model names).
        max_epochs: replaces ``search.max_epochs``.

    Raises:
        ConfigError: a bad search section, a space key no searched model accepts, or a multi-device trainer.

    Example:
        >>> plan = resolve_search("basic_motions", models="auto", max_epochs=10)  # doctest: +SKIP
        >>> sorted(plan.spaces)  # doctest: +SKIP
        ['deep_conv_lstm', 'lstm_fcn', 'mlstm_fcn']
    """
    base, search = split_search(resolve_config(recipe, data=data, overrides=list(overrides or [])))
    if models is not None:
        search["models"] = models
    if max_epochs is not None:
        search["max_epochs"] = max_epochs
    if base["trainer"]["devices"] not in (1, "1") or base["trainer"]["num_nodes"] != 1:
        raise ConfigError("cnnlstm tune runs each trial on one device: set trainer.devices=1, and start several "
                          "`cnnlstm tune` processes on one --storage to use more devices")
    bundle = load_bundle(base["data"], seed=base["seed"])  # its kind decides the task, metric and families
    metric, direction = _objective(search, base, bundle.kind)
    epochs = int(search.get("max_epochs") or base["trainer"]["max_epochs"])
    if epochs < 1:
        raise ConfigError(f"search.max_epochs must be >= 1, got {epochs}")
    inputs = FAMILIES[base["model"]["name"]].inputs if base["model"]["name"] in FAMILIES else None
    pretrained = bool(base["model"].get("pretrained")) or bool(base.get("pretrain"))
    user_space = search.get("space") or {}
    common = parse_space({k: s for k, s in user_space.items() if s is not None})
    spaces: dict[str, dict[str, Dim]] = {}
    for family, own in _families(search, base, inputs).items():
        # Keys of search.space that this family's constructor does not take are someone else's (a list of
        # filters for LSTM-FCN, an int for DeepConvLSTM); they are checked below to fit at least one family.
        extra = {k: s for k, s in user_space.items() if s is None or _accepts(family, common[k])}
        specs = merge_specs(default_specs(family, pretrained=pretrained), extra, own)
        choices = freeze_choices(family, base["model"]) if "model.freeze" in specs else None
        if choices is not None and "model.freeze" not in extra and "model.freeze" not in (own or {}):
            specs["model.freeze"] = choices  # the shipped 1 and 2 would train only stages the model never runs
        space = parse_space(specs)
        bad = [k for k, d in space.items() if not _accepts(family, d)]
        if bad:
            raise ConfigError(f"search space for {family}: {bad} are not arguments of {family} "
                              f"(see `cnnlstm models` and the model's docstring)")
        writers: dict[str, str] = {}
        for key, dim in space.items():
            for target in _dim_keys(dim):
                if target in writers:
                    raise ConfigError(f"search space for {family}: {target} is set by both {writers[target]!r} and "
                                      f"{key!r}; drop one (key: null), or give per-model spaces under search.models")
                writers[target] = key
        for dim in space.values():
            for target in _dim_keys(dim):
                if not target.startswith("model."):
                    check_key(target, base)  # raises ConfigError naming the closest valid key
        spaces[family] = space
    for key in common:
        if not any(key in s for s in spaces.values()):
            raise ConfigError(f"search.space {key!r} fits none of the searched models ({', '.join(spaces)})")
    return SearchPlan(base=base, metric=metric, direction=direction, max_epochs=epochs, spaces=spaces)
