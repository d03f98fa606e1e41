"""LSTM-FCN and MLSTM-FCN: shapes, gradients, exact padding (eval and training statistics), dimension shuffle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.models import create_model
from cnnlstm.models.lstm_fcn import LSTMFCN, MLSTMFCN

SMALL = dict(num_classes=3, in_channels=2, hidden_size=8, filters=(8, 16, 8), se_reduction=4)
VARIANTS = [
    ("lstm_fcn", {}),
    ("mlstm_fcn", {}),
    ("lstm_fcn", {"bidirectional": True, "num_layers": 2}),
    ("mlstm_fcn", {"shuffle": True, "seq_len": 12}),
]


def _build(name: str, **extra) -> LSTMFCN:
    return create_model(name, **{**SMALL, **extra})


def test_registry_builds_the_right_classes() -> None:
    assert type(_build("lstm_fcn")) is LSTMFCN and type(_build("mlstm_fcn")) is MLSTMFCN
    assert len(_build("lstm_fcn").excite) == 0 and len(_build("mlstm_fcn").excite) == 2
    assert _build("mlstm_fcn").model_name == "mlstm_fcn"


@pytest.mark.parametrize("name,extra", VARIANTS)
def test_shapes_and_every_parameter_learns(name: str, extra: dict) -> None:
    model = _build(name, dropout=0.0, **extra).train()
    inputs = model.example_input(batch_size=3)
    out = model(**inputs)
    directions = 2 if extra.get("bidirectional") else 1
    assert out.shape == (3, 3)
    assert model.num_features == 8 * directions + 8
    assert model.forward_features(**inputs).shape == (3, model.num_features)
    (out * torch.randn_like(out)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name,extra", VARIANTS)
def test_padding_invariance_eval(name: str, extra: dict) -> None:
    model = _build(name, **extra)
    model.train()
    for _ in range(3):  # move the running statistics away from their (0, 1) start
        model(torch.randn(4, 12, 2) * 2 + 1)
    model.eval()
    inputs = model.example_input(batch_size=3)
    with torch.no_grad():
        batched = model(**inputs)
        for b, n in enumerate(inputs["lengths"].tolist()):
            alone = model(inputs["x"][b : b + 1, :n])
            torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm_fcn", "mlstm_fcn"])
def test_training_statistics_ignore_padding(name: str) -> None:
    # Same series, once unpadded and once padded with noise: in training mode (batch statistics) the outputs
    # must agree, which holds only if BatchNorm, squeeze-excite and pooling all skip padded steps.
    model = _build(name, dropout=0.0).train()
    x = torch.randn(3, 7, 2)
    padded = torch.cat([x, torch.randn(3, 5, 2) * 10], dim=1)  # (3, 12, 2)
    torch.testing.assert_close(model(padded, lengths=torch.full((3,), 7)), model(x), rtol=1e-5, atol=1e-5)


def test_running_statistics_ignore_padding() -> None:
    a, b = _build("lstm_fcn"), _build("lstm_fcn")
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 7, 2)
    a(x)
    b(torch.cat([x, torch.randn(3, 5, 2) * 10], dim=1), lengths=torch.full((3,), 7))
    for block_a, block_b in zip(a.blocks, b.blocks, strict=True):
        torch.testing.assert_close(block_a.norm.running_mean, block_b.norm.running_mean)
        torch.testing.assert_close(block_a.norm.running_var, block_b.norm.running_var)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_even_kernel_matches_same_padding() -> None:
    block = _build("lstm_fcn").blocks[0]  # kernel 8
    x = torch.randn(2, 2, 9)
    ref = F.conv1d(x, block.conv.weight, padding="same")  # PyTorch's own "same": 3 left, 4 right
    torch.testing.assert_close(block.conv(block.pad(x)), ref)


def test_shuffle_feeds_variables_as_steps() -> None:
    model = _build("lstm_fcn", shuffle=True, seq_len=10, dropout=0.0).eval()
    assert model.lstm.input_size == 10
    x = torch.randn(2, 10, 2)
    _, (h_n, _) = model.lstm(x.transpose(1, 2))  # reference: 2 steps (variables) of 10 values
    torch.testing.assert_close(model.forward_features(x)[:, :8], h_n[-1])
    # Shorter series reach the LSTM zero-padded to seq_len.
    short = x[:, :6]
    lstm_part = model.forward_features(torch.cat([short, torch.zeros(2, 4, 2)], 1))[:, :8]
    torch.testing.assert_close(model.forward_features(short)[:, :8], lstm_part)
    with pytest.raises(ShapeError, match="seq_len=10"):
        model(torch.randn(2, 11, 2))
    with pytest.raises(ConfigError, match="seq_len"):
        _build("lstm_fcn", shuffle=True)


def test_wrong_inputs_name_the_layout() -> None:
    model = _build("mlstm_fcn")
    with pytest.raises(ShapeError, match=r"mlstm_fcn expects a series \(B, T, F\) with F=2 .*got \(2, 3\)"):
        model(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="F=2"):
        model(torch.randn(2, 5, 3))
    with pytest.raises(ShapeError, match="mlstm_fcn expects lengths"):
        model(torch.randn(2, 5, 2), lengths=torch.tensor([5, 6]))
    with pytest.raises(ConfigError, match="filters and kernel_sizes"):
        _build("lstm_fcn", kernel_sizes=(8, 5))
