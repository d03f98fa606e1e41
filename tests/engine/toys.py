"""A tiny registered model and a tiny generated dataset, so engine tests do not depend on real families.

Data: class c's series drift upward with slope (c - 1), plus noise: an LSTM separates them in a few steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from cnnlstm.data import register_source
from cnnlstm.data._registry import _SOURCES
from cnnlstm.data.series_dataset import build_series_bundle
from cnnlstm.models import register_model
from cnnlstm.models._registry import _REGISTRY

__all__ = ["ToyLSTM", "toy_series", "FixedLogits"]


def make_series(n: int, seed: int, length: int = 12, channels: int = 2, classes: int = 3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.linspace(0, 1, length)[None, :, None]
    x = (y[:, None, None] - 1) * t * 3 + rng.normal(scale=0.3, size=(n, length, channels))
    return x.astype(np.float32), y


def toy_series(arg: str, *, seed: int = 0, n_train: int = 48, n_test: int = 24, classes: int = 3,
               nan: bool = False, **_: object):
    x_tr, y_tr = make_series(n_train, seed, classes=classes)
    x_te, y_te = make_series(n_test, seed + 1, classes=classes)
    if nan:
        x_tr[0, 0, 0] = np.nan
    return build_series_bundle(f"toy:{arg}", (x_tr, y_tr), (x_te, y_te))


class ToyLSTM(nn.Module):
    """LSTM over (B, T, F) series, last step -> classes.

    Shape:
        x: (B, T, F) -> (B, K)
    """

    input_names = ("x", "lengths")
    output_kind = "logits"
    supports_lengths = True

    def __init__(self, *, in_channels: int = 2, num_classes: int = 3, hidden_size: int = 8) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_channels, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)
        self.num_classes = num_classes
        self.num_features = hidden_size

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Padded series of unequal lengths: the model contract every registered model keeps (export tests use it)."""
        lengths = 12 - (3 * torch.arange(batch_size)) % 12  # 12, 9, 6, ... (all in [1, 12])
        return {"x": torch.randn(batch_size, 12, self.lstm.input_size), "lengths": lengths}

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out, _ = self.lstm(x)  # (B, T, D)
        if lengths is None:
            return self.head(out[:, -1])
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.shape[-1])  # (B, 1, D); gather traces shape-generic
        return self.head(out.gather(1, last).squeeze(1))  # (B, D) -> (B, K)


if "toy" not in _SOURCES:
    register_source("toy", kind="series", description="tiny generated series (tests only)")(toy_series)
if "toy_lstm" not in _REGISTRY:
    register_model("toy_lstm")(ToyLSTM)


class FixedLogits(nn.Module):
    """A classifier that returns the same logits whatever its input: ensemble arithmetic checked by hand.

    ``input_names`` says what it claims to read (``("sequence",)``: token ids, as a VQA model's question).
    """

    output_kind = "logits"
    num_classes = 2

    def __init__(self, logits: Tensor, input_names: tuple[str, ...] = ("x",)) -> None:
        super().__init__()
        self.logits = logits
        self.input_names = input_names

    def forward(self, **inputs: Tensor) -> Tensor:
        return self.logits
