"""Loader options: reject the ones a source does not know, so a typo is an error rather than a silent default."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cnnlstm.errors import UnknownNameError, did_you_mean

__all__ = ["reject_unknown_options"]


def reject_unknown_options(source: str, unknown: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise :class:`UnknownNameError` naming the first unknown option and the valid ones.

    Args:
        source: the source prefix, e.g. ``"npz"``.
        unknown: the options the loader's signature did not take.
        valid: the options it takes.

    Example:
        >>> reject_unknown_options("npz", {}, ["normalize"])
    """
    if unknown:
        valid = sorted(valid)
        name = next(iter(unknown))
        raise UnknownNameError(
            f"{source}: unknown option {name!r}{did_you_mean(name, valid)}; valid options: {', '.join(valid)}"
        )
