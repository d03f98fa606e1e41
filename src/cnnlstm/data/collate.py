"""Batching samples of unequal length: pad along time (dim 0 of each sample) and record the lengths."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from cnnlstm.errors import DataError

__all__ = ["LENGTH_KEYS", "pad_collate"]

#: Sample keys that are sequences, and the batch key their true lengths go to. ``x`` and ``sequence``
#: feed the model's ``lengths`` argument; CTC targets and captions keep their own.
LENGTH_KEYS: dict[str, str] = {
    "x": "lengths",
    "sequence": "lengths",
    "targets": "target_lengths",
    "captions": "caption_lengths",
}


def pad_collate(
    samples: Sequence[Mapping[str, Any]],
    length_keys: Mapping[str, str] | None = None,
    pad_value: float = 0.0,
) -> dict[str, Any]:
    """Stack sample dicts into a batch dict, zero-padding variable-length keys along time.

    Keys named in ``length_keys`` whose samples differ in their first dimension are padded to the longest
    and their lengths are added under the mapped name (``x`` -> ``lengths``). Such keys always get their
    lengths, padded or not, for the sequence keys that models read (``sequence``, ``targets``,
    ``captions``); ``x`` gets ``lengths`` only when the batch really is ragged, so fixed-size inputs (images)
    do not grow a ``lengths`` entry. Other tensors are stacked; ints and floats become tensors; anything
    else (strings) is kept as a list.

    Args:
        samples: sample dicts with identical keys.
        length_keys: mapping ``key -> lengths key``; defaults to :data:`LENGTH_KEYS`.
        pad_value: value written into padded positions.

    Shape:
        - a key with per-sample shape (T_i, *rest) -> (B, max T_i, *rest), lengths (B,) int64.

    Example:
        >>> batch = pad_collate([{"x": torch.zeros(3, 2), "y": 0}, {"x": torch.zeros(5, 2), "y": 1}])
        >>> batch["x"].shape, batch["lengths"].tolist()
        (torch.Size([2, 5, 2]), [3, 5])
    """
    if not samples:
        raise DataError("cannot build a batch from zero samples")
    length_keys = LENGTH_KEYS if length_keys is None else length_keys
    keys = list(samples[0].keys())
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, Tensor):
            lengths_key = length_keys.get(key)
            sizes = [v.shape[0] if v.dim() > 0 else 1 for v in values]
            ragged = len(set(sizes)) > 1
            if ragged and lengths_key is None:
                raise DataError(f"samples differ in the size of {key!r} ({min(sizes)}..{max(sizes)}); "
                                "resize them to one shape or use a sequence key")
            if ragged:
                rest = values[0].shape[1:]
                if any(v.shape[1:] != rest for v in values):
                    raise DataError(f"samples of {key!r} differ beyond the time axis: "
                                    f"{sorted({tuple(v.shape) for v in values})}")
                out = first.new_full((len(values), max(sizes), *rest), pad_value)
                for i, v in enumerate(values):
                    out[i, : v.shape[0]] = v
                batch[key] = out
            else:
                batch[key] = torch.stack(values)
            if lengths_key is not None and (ragged or key != "x"):
                batch[lengths_key] = torch.tensor(sizes, dtype=torch.long)
        elif isinstance(first, bool | int):
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(first, float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = list(values)
    return batch
