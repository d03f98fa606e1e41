"""A small, strict model registry.

``@register_model("name")`` records a model class; ``create_model(name, **kwargs)`` builds it and
remembers the name and keyword arguments on the instance (``model.model_name``,
``model.model_kwargs``), so a checkpoint can store them and rebuild the model from its run directory
alone.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = ["register_model", "create_model", "list_models", "get_model_class", "model_config"]

_REGISTRY: dict[str, type[nn.Module]] = {}
M = TypeVar("M", bound=type[nn.Module])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator that registers a model under ``name``.

    The decorated class's constructor must be keyword-only. After construction the instance carries
    ``model_name`` and ``model_kwargs`` (the keyword arguments it was built with).

    Args:
        name: snake_case registry name; registering the same name twice raises ``ConfigError``.

    Example:
        >>> @register_model("my_model")  # doctest: +SKIP
        ... class MyModel(nn.Module): ...
    """
    if not name or name != name.lower() or " " in name:
        raise ConfigError(f"model names are snake_case, got {name!r}")

    def decorator(cls: M) -> M:
        if name in _REGISTRY:
            raise ConfigError(f"a model named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        original_init = cls.__init__

        @functools.wraps(original_init)
        def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            if args:
                raise TypeError(f"{cls.__name__} takes keyword arguments only, got {len(args)} positional")
            original_init(self, **kwargs)
            # Only the outermost registered class records its config (a registered subclass wins).
            if type(self) is cls:
                self.model_name = name
                self.model_kwargs = dict(kwargs)

        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.registry_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls
        return cls

    return decorator


def _ensure_loaded() -> None:
    # Importing the models package registers every built-in model.
    import cnnlstm.models  # noqa: F401


def get_model_class(name: str) -> type[nn.Module]:
    """Return the class registered as ``name``; unknown names raise ``UnknownNameError`` with suggestions.

    Args:
        name: a registered model name.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}{did_you_mean(name, _REGISTRY)}; `cnnlstm models` lists them"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: constructor arguments (``num_classes``, ``in_channels``, ``hidden_size``, ...).

    Example:
        >>> import torch
        >>> model = create_model("lstm_fcn", in_channels=3, num_classes=4)
        >>> model(torch.rand(2, 5, 3)).shape  # (B, T, F) series -> (B, num_classes) logits
        torch.Size([2, 4])
    """
    cls = get_model_class(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc) or "missing" in str(exc):
            raise ConfigError(f"{name}: {exc}") from None
        raise


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching the shell-style ``pattern``.

    Args:
        pattern: an ``fnmatch`` pattern, e.g. ``"*lstm*"``.
    """
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"name": ..., "kwargs": {...}}`` for a model built through the registry (to store in checkpoints).

    Args:
        model: a model built by a registered class.
    """
    if not hasattr(model, "model_name"):
        raise ConfigError(f"{type(model).__name__} was not built by a registered model class")
    return {"name": model.model_name, "kwargs": dict(model.model_kwargs)}
