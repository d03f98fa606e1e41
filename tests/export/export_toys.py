"""Tiny models and inputs shared by the export tests (the contract test's SMALL kwargs, smaller examples)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.models import create_model

# The contract test's small constructor arguments (tests/models/test_contract.py), copied so this area runs alone.
SMALL: dict[str, dict] = {
    "frame_lstm": dict(num_classes=3, in_channels=3, hidden_size=8, encoder_kwargs={"widths": (4, 8)}),
    "multi_input": dict(num_classes=3, in_channels=3, vocab_size=11, hidden_size=8, embedding_dim=8,
                        encoder_kwargs={"widths": (4, 8)}),
    "captioner": dict(vocab_size=12, in_channels=3, embedding_dim=8, hidden_size=8, attention_size=8,
                      encoder_kwargs={"widths": (4, 8)}),
    "lstm_fcn": dict(num_classes=3, in_channels=2, hidden_size=8, filters=(8, 8, 8)),
    "mlstm_fcn": dict(num_classes=3, in_channels=2, hidden_size=8, filters=(8, 8, 8), se_reduction=4),
    "deep_conv_lstm": dict(num_classes=3, in_channels=2, hidden_size=8, filters=4),
    "crnn": dict(num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8)),
    "conv_lstm_forecaster": dict(in_channels=1, hidden_size=4, horizon=2),
    "minirocket": dict(num_classes=3, in_channels=2, num_features=840),
}


def build(name: str, **overrides: object) -> nn.Module:
    """A tiny, seeded, eval-mode model with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = create_model(name, **{**SMALL.get(name, {}), **overrides})
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # identity statistics would hide mix-ups
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def example(model: nn.Module) -> dict[str, Tensor]:
    """The model's own example, made smaller where it is large (CRNN width, forecaster frames)."""
    inputs = model.example_input(batch_size=2)
    if model.model_name == "crnn":
        inputs["x"] = inputs["x"][..., :40]  # 10 columns instead of 25
    if model.model_name == "conv_lstm_forecaster":
        inputs["x"] = inputs["x"][..., :8, :8]
    return inputs
