"""The library's own exception types.

Every error a user can cause (a wrong shape, a bad recipe, unreadable data, unsafe weights) is raised as
a subclass of :class:`CnnLstmError`, with a message that says what to change. The CLI catches
``CnnLstmError``, prints its message on one line and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CnnLstmError",
    "ShapeError",
    "ConfigError",
    "UnknownNameError",
    "DataError",
    "WeightsError",
    "PeerLostError",
    "did_you_mean",
]


class CnnLstmError(Exception):
    """Base class of every error cnnlstm raises on purpose."""


class ShapeError(CnnLstmError, ValueError):
    """An input tensor has the wrong rank, size or dtype for the layer or model."""


class ConfigError(CnnLstmError, ValueError):
    """A recipe, override or constructor argument is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A model, recipe, dataset or option name is not known; the message suggests close names."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataError(CnnLstmError, ValueError):
    """Data is missing, unreadable or inconsistent (NaN, empty split, mismatched labels, ...)."""


class WeightsError(CnnLstmError):
    """A weights or checkpoint file cannot be loaded safely or completely."""


class PeerLostError(CnnLstmError, RuntimeError):
    """Another process of a distributed run died or stopped answering; this one stopped too (resume the run)."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ``" (did you mean 'a', 'b'?)"`` suffix naming the closest valid choices, or ``""``.

    Args:
        name: the name the user gave.
        choices: the valid names.
        n: how many suggestions at most.
    """
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"
