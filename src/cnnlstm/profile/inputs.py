"""A model's inputs at a chosen sequence length and frame size, built from its ``example_input``.

Series ``x`` (B, T, F), frames ``x`` (B, T, C, H, W) (frames also resized to ``H x W``), token or float
``sequence``/``captions`` (B, T), images (B, C, H, W) resized to ``H x W``; a line image read column by column
(CRNN, no other sequence input) is widened so the model emits ``T`` columns. Batches are full length (``lengths``
dropped): padded batches take the packed LSTM path, which costs the same FLOPs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError

__all__ = ["InputShaper"]


def _tile(tensor: Tensor, dim: int, size: int) -> Tensor:
    # Repeating keeps values valid for the model (token ids in the vocabulary, <start> first in each copy).
    reps = [1] * tensor.dim()
    reps[dim] = -(-size // tensor.shape[dim])
    return tensor.repeat(*reps).narrow(dim, 0, size)


def _is_sequence(key: str, t: Tensor) -> bool:
    return key != "lengths" and ((t.is_floating_point() and t.dim() in (3, 5)) or (not t.is_floating_point()
                                                                                  and t.dim() == 2))


class InputShaper:
    """Builds a model's inputs at sequence length ``T`` and frame size ``(H, W)`` from its ``example_input``.

    Args:
        model: a model with ``example_input(batch_size)``.
        batch_size: batch of the inputs.

    Shape:
        - ``shaper(T, (H, W))``: the example's inputs with their time axis tiled to ``T`` and frames to ``H x W``.
    """

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        if not hasattr(model, "example_input"):
            raise ConfigError(f"cost_report needs a model with example_input(batch_size), got {type(model).__name__}")
        self.example = {k: v for k, v in model.example_input(batch_size).items() if k != "lengths"}
        images = [k for k, v in self.example.items() if v.is_floating_point() and v.dim() in (4, 5)]
        sequences = [k for k, v in self.example.items() if _is_sequence(k, v)]
        self.line_key: str | None = None
        self.stride = 1
        if not sequences:
            # A line image read column by column (CRNN): T is the number of output columns.
            line = [k for k in images if self.example[k].dim() == 4]
            if not line:
                raise ConfigError(f"cost_report found no sequence input in {type(model).__name__}.example_input")
            self.line_key = line[0]
            width = self.example[self.line_key].shape[-1]
            with torch.no_grad():
                was_training = model.training
                columns = model.eval()(**self.example).shape[1]  # (B, W', K)
                model.train(was_training)
            self.stride = max(1, round(width / columns))
        self.frame_keys = [k for k in images if k != self.line_key]

    @property
    def has_frames(self) -> bool:
        return bool(self.frame_keys)

    def default_frame_size(self) -> tuple[int, int] | None:
        return tuple(self.example[self.frame_keys[0]].shape[-2:]) if self.frame_keys else None

    def __call__(self, seq_len: int, frame_size: tuple[int, int] | None) -> dict[str, Tensor]:
        inputs = {}
        for key, t in self.example.items():
            if key == self.line_key:
                t = _tile(t, 3, seq_len * self.stride)  # (B, C, H, T * stride)
            elif _is_sequence(key, t):
                t = _tile(t, 1, seq_len)  # (B, T, ...)
            if key in self.frame_keys and frame_size is not None:
                t = _tile(_tile(t, t.dim() - 2, frame_size[0]), t.dim() - 1, frame_size[1])  # (..., H, W)
            inputs[key] = t
        return inputs
