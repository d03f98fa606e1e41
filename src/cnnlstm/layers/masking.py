"""Padding masks and sequence lengths.

A padded batch of sequences carries its true lengths as a ``(B,)`` integer tensor; layers that must ignore
padding turn it into a ``(B, T)`` boolean mask with ``True`` on valid steps. Sequences are left-aligned: step
``t`` of sample ``b`` is valid when ``t < lengths[b]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnlstm.errors import ShapeError

__all__ = ["lengths_to_mask", "mask_to_lengths", "check_lengths", "check_mask"]


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Turn sequence lengths into a padding mask.

    Args:
        lengths: true length of each sequence.
        max_len: padded length ``T`` of the batch.

    Returns:
        Boolean mask, ``True`` where the step is valid (``t < lengths[b]``).

    Shape:
        - lengths: ``(B,)`` integer.
        - output: ``(B, T)`` bool, on the device of ``lengths``.

    Example:
        >>> lengths_to_mask(torch.tensor([2, 3]), 3)
        tensor([[ True,  True, False],
                [ True,  True,  True]])
    """
    steps = torch.arange(max_len, device=lengths.device)  # (T,)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)


def mask_to_lengths(mask: Tensor) -> Tensor:
    """Count the valid steps of each sequence in a left-aligned padding mask.

    Args:
        mask: ``True`` on valid steps.

    Returns:
        The number of valid steps per sequence, int64.

    Shape:
        - mask: ``(B, T)`` bool.
        - output: ``(B,)`` int64.

    Example:
        >>> mask_to_lengths(torch.tensor([[True, False], [True, True]]))
        tensor([1, 2])
    """
    return mask.sum(dim=1, dtype=torch.int64)  # (B,)


def check_lengths(lengths: Tensor | None, batch_size: int, max_len: int, owner: str) -> Tensor | None:
    """Validate the ``lengths`` a caller passed alongside a padded batch.

    Checks that ``lengths`` is a ``(B,)`` integer tensor with every value in ``[1, max_len]``. The value checks
    read the tensor, so on a GPU they synchronise once per call; callers that must stay traceable (ONNX
    export) pass ``lengths=None``, which is returned unchanged.

    Args:
        lengths: the lengths to check, or ``None`` when the batch is not padded.
        batch_size: ``B`` of the batch the lengths belong to.
        max_len: padded length ``T`` of the batch.
        owner: name of the layer or model that received them, used in the error message.

    Returns:
        ``lengths`` as int64 on its own device (``pack_padded_sequence`` callers move it to the CPU), or ``None``.

    Raises:
        ShapeError: wrong rank, size, dtype or a length outside ``[1, max_len]``; the message names ``owner``.

    Shape:
        - lengths: ``(B,)`` integer.

    Example:
        >>> check_lengths(torch.tensor([3, 1]), batch_size=2, max_len=3, owner="frame_lstm")
        tensor([3, 1])
    """
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        raise ShapeError(f"{owner} expects lengths as a (B,) int64 tensor, got {type(lengths).__name__}")
    if lengths.dim() != 1 or lengths.shape[0] != batch_size:
        raise ShapeError(
            f"{owner} expects lengths of shape ({batch_size},) (one per sample), got {tuple(lengths.shape)}"
        )
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ShapeError(f"{owner} expects integer lengths (int64), got {lengths.dtype}")
    lengths = lengths.long()
    if batch_size > 0:
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > max_len:
            raise ShapeError(
                f"{owner} expects lengths in [1, {max_len}] (1 to the padded time size), got min {low}, max {high}"
            )
    return lengths


def check_mask(mask: Tensor | None, batch_size: int, max_len: int, owner: str) -> Tensor | None:
    """Validate a ``(B, T)`` padding mask and return it as bool (``True`` = valid step), or ``None``.

    Args:
        mask: the mask to check, or ``None``.
        batch_size: ``B`` of the batch.
        max_len: padded length ``T`` of the batch.
        owner: name of the layer or model that received it, used in the error message.

    Raises:
        ShapeError: the mask does not have shape ``(B, T)``.

    Shape:
        - mask: ``(B, T)`` bool or 0/1 numbers.

    Example:
        >>> check_mask(torch.ones(2, 3), batch_size=2, max_len=3, owner="pool").dtype
        torch.bool
    """
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch_size, max_len):
        got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ShapeError(f"{owner} expects a padding mask of shape ({batch_size}, {max_len}) (B, T), got {got}")
    return mask if mask.dtype == torch.bool else mask != 0
