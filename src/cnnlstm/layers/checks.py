"""Shared argument and input checks for models and layers.

Every registered model validates its constructor arguments with :func:`require_positive` (and friends) and its
forward inputs with :func:`check_input`, so a bad recipe value or a bad tensor is answered with the same
:class:`~cnnlstm.errors.ConfigError` / :class:`~cnnlstm.errors.ShapeError` wording everywhere, before torch
raises something that names no argument or layout.

Dtype policy: models do not cast. A floating input must have the dtype of the model's weights (float32 unless
the model was converted), because a silent cast would hide a full copy of the batch and a precision the caller
did not ask for; the error says which conversion to call. Inside an autocast region any float16 / bfloat16 /
float32 input is accepted (autocast chooses the compute dtype, as it does for plain torch modules). Token ids
must be an integer dtype.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError

__all__ = ["require_positive", "require_non_negative", "require_dropout", "weights_dtype", "check_input",
           "check_token_ids"]

# The method a user calls to convert a tensor to the dtype a model wants.
_CONVERSIONS = {torch.float32: ".float()", torch.float64: ".double()", torch.float16: ".half()",
                torch.bfloat16: ".bfloat16()"}
# Floating dtypes torch's autocast converts itself (it leaves float64 alone).
_AUTOCAST_INPUTS = (torch.float16, torch.bfloat16, torch.float32)
# Words for an empty dimension, by layout letter.
_EMPTY = {"B": "at least one sample", "T": "at least one time step", "L": "at least one step"}


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `num_layers: true` in a recipe is a mistake, not 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _require_ints(owner: str, minimum: int, allow_none: bool, sizes: dict[str, object]) -> None:
    for name, value in sizes.items():
        if value is None and allow_none:
            continue
        if isinstance(value, (list, tuple)):
            if not all(_is_int(v) and v >= minimum for v in value):
                raise ConfigError(f"{owner}: every entry of {name} must be an integer >= {minimum}, got {value!r}")
        elif not (_is_int(value) and value >= minimum):
            kind = "" if _is_int(value) else f" ({type(value).__name__})"
            raise ConfigError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}{kind}")


def require_positive(owner: str, *, allow_none: bool = False, **sizes: int | Sequence[int] | None) -> None:
    """Refuse sizes that are not integers >= 1 (a list or tuple: every entry).

    Recipes are YAML, so ``num_classes: 3.5``, ``"3"`` or ``true`` can reach a constructor; each is refused here
    by name rather than failing inside torch.

    Args:
        owner: the model or layer name the message starts with.
        allow_none: let ``None`` through (for optional sizes such as ``seq_len=None``).
        **sizes: argument name -> value.

    Raises:
        ConfigError: naming the first bad argument and its value.

    Example:
        >>> require_positive("frame_lstm", num_classes=3, widths=(8, 16))
        >>> require_positive("frame_lstm", num_classes=0)
        Traceback (most recent call last):
        ...
        cnnlstm.errors.ConfigError: frame_lstm: num_classes must be an integer >= 1, got 0
    """
    _require_ints(owner, 1, allow_none, sizes)


def require_non_negative(owner: str, *, allow_none: bool = False, **sizes: int | Sequence[int] | None) -> None:
    """As :func:`require_positive`, but 0 is allowed (e.g. ``head_hidden_size=0`` for a linear head).

    Args:
        owner: the model or layer name the message starts with.
        allow_none: let ``None`` through.
        **sizes: argument name -> value.

    Raises:
        ConfigError: naming the first bad argument and its value.

    Example:
        >>> require_non_negative("multi_input", head_hidden_size=0)
    """
    _require_ints(owner, 0, allow_none, sizes)


def require_dropout(owner: str, **rates: float) -> None:
    """Refuse dropout rates outside ``[0, 1)`` or that are not real numbers.

    Args:
        owner: the model or layer name the message starts with.
        **rates: argument name -> rate.

    Raises:
        ConfigError: naming the first bad rate.

    Example:
        >>> require_dropout("lstm_fcn", dropout=0.8)
    """
    for name, rate in rates.items():
        real = isinstance(rate, numbers.Real) and not isinstance(rate, bool)
        if not (real and math.isfinite(rate) and 0.0 <= rate < 1.0):
            raise ConfigError(f"{owner}: {name} must be a number in [0, 1), got {rate!r}")


def weights_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating parameter (the default dtype when it has none).

    Args:
        module: a model or layer.

    Example:
        >>> weights_dtype(nn.Linear(2, 3).double())
        torch.float64
    """
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.get_default_dtype()


def check_input(
    x: object,
    layout: str,
    owner: str,
    *,
    what: str = "x",
    hint: str = "",
    dtype: torch.dtype | None = None,
    **sizes: int,
) -> None:
    """Check one forward input: a tensor of ``layout``, no empty dimension, the fixed ``sizes`` and the dtype.

    Args:
        x: the input to check.
        layout: its dimensions as letters, e.g. ``"B, T, C, H, W"``; every one must be >= 1.
        owner: the model or layer name the message starts with.
        what: what the input is called in messages (``"frames"``, ``"a series"``, ``"images"``).
        hint: appended to the expected layout in shape messages, e.g. ``" (in_channels)"``.
        dtype: a floating dtype (the model's :func:`weights_dtype`) that a floating input must have, or an
            integer dtype (token ids: any integer dtype passes); ``None`` skips the dtype check.
        **sizes: letters of ``layout`` whose size is fixed, e.g. ``C=3``.

    Raises:
        ShapeError: not a tensor, wrong rank, an empty dimension, a fixed size that differs, or a wrong dtype;
            the message names the layout and what to change.

    Shape:
        - x: as ``layout``.

    Example:
        >>> check_input(torch.rand(2, 3, 3, 8, 8), "B, T, C, H, W", "frame_lstm", what="frames", C=3)
        >>> check_input(torch.rand(2, 0, 3, 8, 8), "B, T, C, H, W", "frame_lstm", what="frames", C=3)
        Traceback (most recent call last):
        ...
        cnnlstm.errors.ShapeError: frame_lstm expects frames (B, T, C, H, W) with at least one time step, \
got (2, 0, 3, 8, 8)
    """
    letters = [letter.strip() for letter in layout.split(",")]
    fixed = "".join(f" with {k}={v}" if i == 0 else f", {k}={v}" for i, (k, v) in enumerate(sizes.items()))
    expected = f"{owner} expects {what} ({layout}){fixed}{hint}"
    if not isinstance(x, Tensor):
        raise ShapeError(f"{expected}, got {type(x).__name__}")
    if x.dim() != len(letters) or any(x.shape[letters.index(k)] != v for k, v in sizes.items()):
        raise ShapeError(f"{expected}, got {tuple(x.shape)}")
    empty = [letter for letter, size in zip(letters, x.shape, strict=True) if size == 0]
    if empty:
        need = _EMPTY.get(empty[0], f"{empty[0]} >= 1")
        raise ShapeError(f"{owner} expects {what} ({layout}) with {need}, got {tuple(x.shape)}")
    if dtype is None or x.dtype == dtype:
        return
    if dtype.is_floating_point:
        autocast = torch.is_autocast_enabled(x.device.type) and x.dtype in _AUTOCAST_INPUTS
        if not autocast:
            call = _CONVERSIONS.get(dtype, f".to({dtype})")
            raise ShapeError(
                f"{owner} expects {what} as {dtype} (the dtype of its weights), got {x.dtype}; convert the input "
                f"with {call} first"
            )
    elif x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ShapeError(f"{expected}, got dtype {x.dtype}; pass integer token ids (int64)")


def check_token_ids(ids: Tensor, vocab_size: int, owner: str, *, what: str = "token ids") -> None:
    """Refuse token ids outside ``[0, vocab_size)``, which ``nn.Embedding`` would answer with an IndexError.

    Reads the tensor (one device sync on a GPU).

    Args:
        ids: integer token ids, already checked by :func:`check_input`.
        vocab_size: the model's vocabulary size.
        owner: the model name the message starts with.
        what: what the ids are called in messages.

    Raises:
        ShapeError: an id is negative or ``>= vocab_size``.

    Shape:
        - ids: any shape.

    Example:
        >>> check_token_ids(torch.tensor([[1, 4, 2]]), vocab_size=5, owner="captioner")
    """
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ShapeError(
            f"{owner} got {what} in [{low}, {high}] but vocab_size is {vocab_size} (ids 0..{vocab_size - 1}); "
            "build the model with the data's vocab_size"
        )
