"""DeepConvLSTM against the paper's formulation: (k, 1) Conv2d kernels over the (T, F) sensor "image"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.models import create_model

SMALL = dict(num_classes=3, in_channels=4, hidden_size=8, filters=6)


def _build(**extra):
    return create_model("deep_conv_lstm", **{**SMALL, **extra})


def test_matches_conv2d_with_time_only_kernels() -> None:
    model = _build().eval()
    x = torch.randn(2, 10, 4)
    # Reference: Ordóñez & Roggen's layout, the series as a one-channel (T, F) image, kernels (5, 1).
    z = x.unsqueeze(1)  # (B, 1, T, F)
    for block in model.convs:
        z = F.relu(F.conv2d(z, block.conv.weight.unsqueeze(-1), block.conv.bias, padding=(2, 0)))  # (B, 6, T, F)
    z = z.permute(0, 2, 3, 1).flatten(2)  # (B, T, F*6), channel-major as the model orders it
    _, (h_n, _) = model.lstm(z)
    torch.testing.assert_close(model.forward_features(x), h_n[-1])
    torch.testing.assert_close(model(x), model.head(h_n[-1]))


@pytest.mark.parametrize("extra", [{}, {"bidirectional": True}, {"num_layers": 1}])
def test_shapes_gradients_and_padding_invariance(extra: dict) -> None:
    model = _build(**extra).train()
    inputs = model.example_input(batch_size=3)
    out = model(**inputs)
    assert out.shape == (3, 3)
    assert model.forward_features(**inputs).shape == (3, model.num_features)
    assert model.num_features == 8 * (2 if extra.get("bidirectional") else 1)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.eval()
    with torch.no_grad():
        batched = model(**inputs)
        for b, n in enumerate(inputs["lengths"].tolist()):
            torch.testing.assert_close(batched[b : b + 1], model(inputs["x"][b : b + 1, :n]), rtol=1e-5, atol=1e-5)


def test_wrong_inputs_name_the_layout() -> None:
    model = _build()
    with pytest.raises(ShapeError, match=r"deep_conv_lstm expects a series \(B, T, F\) with F=4 .*got \(2, 3\)"):
        model(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="deep_conv_lstm expects lengths"):
        model(torch.randn(2, 5, 4), lengths=torch.tensor([0, 5]))
    with pytest.raises(ConfigError, match="odd"):
        _build(kernel_size=4)
