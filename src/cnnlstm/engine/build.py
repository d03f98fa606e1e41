"""Building a recipe's model: the recipe's kwargs, completed with what the data fixes."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

from torch import nn

from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model, get_model_class

__all__ = ["model_kwargs_for", "build_model", "count_parameters", "allocation_guard"]

#: fragments of the allocator errors torch raises for a tensor that cannot exist (too big, or its size overflows)
_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "overflow", "negative dimension",
                        "larger than the maximum")


@contextlib.contextmanager
def allocation_guard(section: dict[str, Any], prefix: str = "model") -> Iterator[None]:
    """Turn an allocation failure while building (or measuring) a model into a ``ConfigError`` naming its sizes.

    A valid but huge size (``model.hidden_size=100000000``) passes every range check and fails only when torch
    asks for the weights' memory; the user then needs to know which recipe key to shrink.

    Args:
        section: the recipe's ``model`` section.
        prefix: the section's key in the recipe, for the message.

    Example:
        >>> with allocation_guard({"name": "lstm_fcn", "hidden_size": 8}):
        ...     pass
    """
    try:
        yield
    except (MemoryError, RuntimeError, TypeError, OverflowError) as exc:  # TypeError: a size beyond int64
        text = str(exc)
        if not isinstance(exc, MemoryError) and not any(f in text.lower() for f in _ALLOCATION_FAILURES):
            raise
        sizes = sorted(((v, k) for k, v in section.items() if isinstance(v, int) and not isinstance(v, bool)),
                       reverse=True)
        named = ", ".join(f"{prefix}.{k}={v}" for v, k in sizes if v >= 10**6 or (v, k) == sizes[0]) or "its sizes"
        reason = text.splitlines()[0].split("DefaultCPUAllocator: ")[-1] if text else "out of memory"
        raise ConfigError(f"model {section.get('name')!r} is too large to build on this machine ({reason}); "
                          f"make it smaller: check {named}") from None



def _accepted(cls: type) -> tuple[set[str], bool]:
    params = inspect.signature(cls.__init__).parameters.values()
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def model_kwargs_for(section: dict[str, Any], data_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name and kwargs: the recipe's ``model`` section, plus data-fixed kwargs it leaves out.

    A data-fixed kwarg (``bundle.info.model_kwargs``: ``num_classes``, ``in_channels``, ``vocab_size``, ...)
    is filled in only when the recipe omits it and the constructor accepts it; what the recipe says wins.

    Args:
        section: the recipe's ``model`` section (``name`` + constructor kwargs).
        data_kwargs: ``bundle.info.model_kwargs``.

    Example:
        >>> model_kwargs_for({"name": "lstm_fcn", "hidden_size": 8}, {"num_classes": 4, "in_channels": 6})
        ('lstm_fcn', {'hidden_size': 8, 'num_classes': 4, 'in_channels': 6})
    """
    kwargs = {k: v for k, v in section.items() if k != "name"}
    name = section["name"]
    names, var_kw = _accepted(get_model_class(name))
    for key, value in data_kwargs.items():
        if key not in kwargs and (var_kw or key in names):
            kwargs[key] = value
    return name, kwargs


def build_model(section: dict[str, Any], data_kwargs: dict[str, Any]) -> nn.Module:
    """Build the recipe's model (see :func:`model_kwargs_for`).

    Example:
        >>> model = build_model({"name": "lstm_fcn"}, {"num_classes": 4, "in_channels": 6})  # doctest: +SKIP
    """
    name, kwargs = model_kwargs_for(section, data_kwargs)
    try:
        with allocation_guard(section):
            return create_model(name, **kwargs)
    except TypeError as exc:  # a recipe value of the wrong type (num_classes: 3.5 or "3") deep in a constructor
        given = {k: v for k, v in section.items() if k != "name"}
        suspects = _mistyped(get_model_class(name), given) or list(given)
        keys = ", ".join(f"model.{k}={given[k]!r}" for k in suspects) or "(none set)"
        raise ConfigError(f"model {name!r} cannot be built from the recipe's model keys: {str(exc).splitlines()[0]}; "
                          f"check the type of {keys}") from None


def _mistyped(cls: type, given: dict[str, Any]) -> list[str]:
    """Recipe keys whose value's type differs from the constructor default's (an int where a float goes is fine)."""
    params = inspect.signature(cls.__init__).parameters
    out = []
    for key, value in given.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float)
        elif isinstance(default, int | str):
            ok = isinstance(value, type(default))
        elif isinstance(default, list | tuple):
            ok = isinstance(value, list | tuple)
        else:
            ok = True
        if not ok:
            out.append(key)
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
