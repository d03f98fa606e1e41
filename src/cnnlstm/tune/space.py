"""Search spaces: a mapping of recipe keys to value specs, sampled into recipe values by an Optuna trial.

A space maps a dotted recipe key (``optim.lr``, ``model.hidden_size``, ``model.encoder_kwargs.kernel_size``)
to a spec; the key is also the Optuna parameter name, so trials.csv and the importance plot read as recipe
keys. Specs, as written in Python or in a recipe's ``search.space`` YAML:

=====================================================  ==========================================================
spec                                                    meaning
=====================================================  ==========================================================
``0.2`` (a scalar)                                      fixed value, not searched
``[false, true]`` or ``{choices: [...]}``               categorical; choices may be lists (``[[16, 32], [32, 64]]``)
``{low: 8, high: 128, log: true}``                      integer range (both bounds ints), optional ``step``
``{low: 1e-4, high: 1e-2, log: true}``                  float range (a float bound, or ``type: float``)
``{type: stack, widths: KEY, depth: S, width: S, ...}`` a convolution stack: ``depth`` stages starting at ``width``
                                                        channels (see :class:`Stack`); the key names the group
``null``                                                removes the key from a space it overrides
=====================================================  ==========================================================

Example:
    >>> space = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "model.bidirectional": [0, 1]})
    >>> sorted(space)
    ['model.bidirectional', 'optim.lr']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import yaml

from cnnlstm.errors import ConfigError

__all__ = ["Dim", "Fixed", "Categorical", "IntRange", "FloatRange", "Stack", "parse_dim", "parse_space",
           "merge_specs", "sample_space", "STACK_SHAPES"]

_PRIMITIVE = (bool, int, float, str, type(None))

#: width patterns of a :class:`Stack`: each stage's channels as a multiple of ``width``
STACK_SHAPES = ("grow", "bottleneck", "flat")


class Dim(Protocol):
    """One entry of a space: draws recipe values from a trial."""

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """``{recipe_key: value}`` for this trial."""
        ...


@dataclass(frozen=True)
class Fixed:
    """A value that is set, not searched.

    Example:
        >>> Fixed("model.dropout", 0.2).sample(None)
        {'model.dropout': 0.2}
    """

    key: str
    value: Any

    def sample(self, trial: optuna.Trial | None) -> dict[str, Any]:
        return {self.key: self.value}


@dataclass(frozen=True)
class Categorical:
    """One of ``choices``. Non-scalar choices (lists, mappings) are suggested by a YAML label, since Optuna
    stores only scalars, and mapped back, so ``[16, 32]`` shows as ``"[16, 32]"`` in trials.csv.

    Example:
        >>> Categorical("model.filters", ([8, 16], [16, 32])).labels
        ('[8, 16]', '[16, 32]')
    """

    key: str
    choices: tuple[Any, ...]

    @property
    def labels(self) -> tuple[Any, ...]:
        if all(isinstance(c, _PRIMITIVE) for c in self.choices):
            return self.choices
        return tuple(yaml.safe_dump(c, default_flow_style=True).strip() for c in self.choices)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        labels = self.labels
        label = trial.suggest_categorical(self.key, labels)
        return {self.key: self.choices[labels.index(label)]}


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` (``log``: uniform in log space; ``step``: a grid).

    Example:
        >>> IntRange("model.hidden_size", 8, 128, log=True).high
        128
    """

    key: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {self.key: trial.suggest_int(self.key, self.low, self.high, step=self.step, log=self.log)}


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]`` (``log``: uniform in log space; ``step``: a grid).

    Example:
        >>> FloatRange("optim.lr", 1e-4, 1e-2, log=True).log
        True
    """

    key: str
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        return {self.key: trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)}


@dataclass(frozen=True)
class Stack:
    """A convolution stack searched by depth and width rather than as one list, so TPE learns each separately.

    Stage ``i`` of ``depth`` gets ``width * m_i`` channels, with ``m`` from ``shape``: ``grow`` doubles each
    stage (VGG-like encoders: 16, 32, 64), ``bottleneck`` doubles the inner stages only (LSTM-FCN's
    128, 256, 128), ``flat`` keeps ``width``. When ``kernels`` names a key, it gets one kernel size per stage,
    tapering linearly from ``kernel`` to 3 (LSTM-FCN's 8, 5, 3 pattern), so both lists keep the same length.

    Args:
        name: the group's name; its Optuna parameters are ``name.depth``, ``name.width``, ``name.kernel``.
        widths: the recipe key that receives the channel list, e.g. ``model.filters``.
        depth: an int spec (a fixed int, choices or a range).
        width: an int spec for the first stage's channels.
        shape: one of :data:`STACK_SHAPES`.
        kernels: the recipe key for the per-stage kernel list (``model.kernel_sizes``), or None.
        kernel: the first stage's kernel size spec (used with ``kernels``).
        max_width: cap on any stage's channels.

    Example:
        >>> Stack.build(3, 64, "bottleneck", 8, 1024)
        ([64, 128, 64], [8, 6, 3])
    """

    name: str
    widths: str
    depth: Dim
    width: Dim
    shape: str = "grow"
    kernels: str | None = None
    kernel: Dim | None = None
    max_width: int = 1024

    @staticmethod
    def build(depth: int, width: int, shape: str, kernel: int | None, max_width: int) -> tuple[list[int], list[int]]:
        """The channel list and kernel list of a stack (kernels empty when ``kernel`` is None)."""
        if shape == "grow":
            mult = [2**i for i in range(depth)]
        elif shape == "bottleneck":  # the first and last stage keep `width`, the inner ones double it
            mult = [1 if i in (0, depth - 1) else 2 for i in range(depth)]
        else:
            mult = [1] * depth
        widths = [min(max_width, width * m) for m in mult]
        if kernel is None:
            return widths, []
        # round() on .5 goes to even; floor(x + 0.5) keeps the taper monotone and matches 8 -> 6 -> 3
        kernels = [int(math.floor(kernel + (3 - kernel) * i / max(1, depth - 1) + 0.5)) if kernel > 3 else kernel
                   for i in range(depth)]
        return widths, kernels

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        depth = int(next(iter(self.depth.sample(trial).values())))
        width = int(next(iter(self.width.sample(trial).values())))
        kernel = int(next(iter(self.kernel.sample(trial).values()))) if self.kernel is not None else None
        widths, kernels = self.build(depth, width, self.shape, kernel, self.max_width)
        out: dict[str, Any] = {self.widths: widths}
        if self.kernels is not None:
            out[self.kernels] = kernels
        return out


def _number(key: str, value: Any, what: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"search space {key!r}: {what} must be a number, got {value!r}")
    return value


def parse_dim(key: str, spec: Any) -> Dim:
    """Turn one spec (see the module docstring) into a :class:`Dim`.

    Raises:
        ConfigError: a malformed spec, naming the key and what to write instead.

    Example:
        >>> parse_dim("data.batch_size", [8, 16, 32])
        Categorical(key='data.batch_size', choices=(8, 16, 32))
    """
    if isinstance(spec, list | tuple):
        if not spec:
            raise ConfigError(f"search space {key!r}: an empty list of choices; give at least one value")
        return Categorical(key, tuple(spec))
    if not isinstance(spec, dict):
        return Fixed(key, spec)
    kind = spec.get("type")
    if kind == "stack":
        return _parse_stack(key, spec)
    if "choices" in spec:
        extra = set(spec) - {"choices", "type"}
        if extra or not isinstance(spec["choices"], list | tuple) or not spec["choices"]:
            raise ConfigError(f"search space {key!r}: write {{choices: [a, b, ...]}} with a non-empty list only")
        return Categorical(key, tuple(spec["choices"]))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"search space {key!r}: a mapping needs low and high (a range), choices, or type: stack; "
                          f"got {spec!r}")
    unknown = set(spec) - {"low", "high", "log", "step", "type"}
    if unknown:
        raise ConfigError(f"search space {key!r}: unknown range field(s) {sorted(unknown)}; use low, high, log, step")
    if kind not in (None, "int", "float"):
        raise ConfigError(f"search space {key!r}: type must be int, float or stack, got {kind!r}")
    low, high = _number(key, spec["low"], "low"), _number(key, spec["high"], "high")
    log = bool(spec.get("log", False))
    step = spec.get("step")
    if low > high:
        raise ConfigError(f"search space {key!r}: low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ConfigError(f"search space {key!r}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ConfigError(f"search space {key!r}: step and log cannot be combined (Optuna samples one or the other)")
    is_int = kind == "int" or (kind is None and all(isinstance(v, int) and not isinstance(v, bool)
                                                    for v in (spec["low"], spec["high"])))
    if is_int:
        if low != int(low) or high != int(high):
            raise ConfigError(f"search space {key!r}: an int range needs integer bounds, got {low}, {high}")
        return IntRange(key, int(low), int(high), step=int(step or 1), log=log)
    return FloatRange(key, float(low), float(high), step=None if step is None else float(step), log=log)


def _parse_stack(key: str, spec: dict[str, Any]) -> Stack:
    allowed = {"type", "widths", "depth", "width", "shape", "kernels", "kernel", "max_width"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"search space {key!r}: unknown stack field(s) {sorted(unknown)}; use {sorted(allowed)}")
    for field in ("widths", "depth", "width"):
        if field not in spec:
            raise ConfigError(f"search space {key!r}: a stack needs {field} (see cnnlstm.tune.space.Stack)")
    shape = spec.get("shape", "grow")
    if shape not in STACK_SHAPES:
        raise ConfigError(f"search space {key!r}: stack shape must be one of {STACK_SHAPES}, got {shape!r}")
    if (spec.get("kernels") is None) != (spec.get("kernel") is None):
        raise ConfigError(f"search space {key!r}: give kernels (the recipe key) and kernel (the first size) together")
    kernel = parse_dim(f"{key}.kernel", spec["kernel"]) if spec.get("kernel") is not None else None
    return Stack(name=key, widths=str(spec["widths"]), depth=parse_dim(f"{key}.depth", spec["depth"]),
                 width=parse_dim(f"{key}.width", spec["width"]), shape=shape, kernels=spec.get("kernels"),
                 kernel=kernel, max_width=int(spec.get("max_width", 1024)))


def merge_specs(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Merge raw spec mappings left to right; a later ``None`` value removes the key.

    Example:
        >>> merge_specs({"optim.lr": 1e-3, "model.dropout": [0.0, 0.5]}, {"model.dropout": None})
        {'optim.lr': 0.001}
    """
    out: dict[str, Any] = {}
    for layer in layers:
        for key, spec in (layer or {}).items():
            if spec is None:
                out.pop(key, None)
            else:
                out[key] = spec
    return out


def parse_space(specs: dict[str, Any]) -> dict[str, Dim]:
    """Parse a raw spec mapping into ``{key: Dim}`` (keys keep their order: the sampling order)."""
    if not isinstance(specs, dict):
        raise ConfigError(f"a search space must be a mapping of recipe keys to specs, got {specs!r}")
    return {str(key): parse_dim(str(key), spec) for key, spec in specs.items()}


def sample_space(space: dict[str, Dim], trial: optuna.Trial) -> dict[str, Any]:
    """Draw every entry of ``space``: ``{recipe_key: value}``.

    Example:
        >>> trial = optuna.trial.FixedTrial({"optim.lr": 0.01})
        >>> sample_space(parse_space({"optim.lr": {"low": 1e-4, "high": 1e-1}}), trial)
        {'optim.lr': 0.01}
    """
    values: dict[str, Any] = {}
    for dim in space.values():
        values.update(dim.sample(trial))
    return values
