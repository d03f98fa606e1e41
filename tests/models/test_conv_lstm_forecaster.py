"""ConvLSTM encoder-forecaster against a hand-written loop over its cells (Shi et al. 2015's data flow)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.models import create_model

SMALL = dict(in_channels=2, hidden_size=[4, 3], kernel_size=3, horizon=3)


def _build(**extra):
    return create_model("conv_lstm_forecaster", **{**SMALL, **extra})


def _reference(model, x: torch.Tensor, squash=torch.sigmoid) -> torch.Tensor:
    """Encoder and forecaster as explicit loops over cell.forward; patches cut with reshape/permute."""
    B, T, C, H, W = x.shape
    p = model.patch_size
    # Space-to-depth by hand: (B, T, C, H/p, p, W/p, p) -> channels (C, p, p).
    x = x.reshape(B, T, C, H // p, p, W // p, p).permute(0, 1, 2, 4, 6, 3, 5).reshape(B, T, C * p * p, H // p, W // p)
    states = [None, None]
    for t in range(T):
        below = x[:, t]
        for k in range(2):
            states[k] = model.encoder.cells[k](below, states[k])
            below = states[k][0]
    frames = []
    for _ in range(model.horizon):
        below = None
        for k in range(2):
            states[k] = model.forecaster[k](below, states[k])
            below = states[k][0]
        maps = torch.cat([states[0][0], states[1][0]], dim=1)  # (B, 7, H/p, W/p)
        y = squash(F.conv2d(maps, model.head.weight, model.head.bias))  # (B, C*p*p, H/p, W/p)
        y = y.reshape(B, C, p, p, H // p, W // p).permute(0, 1, 4, 2, 5, 3).reshape(B, C, H, W)
        frames.append(y)
    return torch.stack(frames, dim=1)


@pytest.mark.parametrize("patch_size", [1, 2])
def test_forward_matches_hand_written_encoder_forecaster(patch_size: int) -> None:
    model = _build(patch_size=patch_size).eval()
    x = torch.rand(2, 4, 2, 8, 12)
    out = model(x)
    assert out.shape == (2, 3, 2, 8, 12)
    assert (out > 0).all() and (out < 1).all()
    torch.testing.assert_close(out, _reference(model, x))


@pytest.mark.parametrize(("height", "width"), [(7, 8), (9, 10), (5, 5)])
def test_frames_of_any_size_are_edge_padded_to_whole_patches_and_cropped_back(height: int, width: int) -> None:
    model = _build(patch_size=4).eval()
    x = torch.rand(2, 4, 2, height, width)
    out = model(x)
    assert out.shape == (2, 3, 2, height, width) and out.is_contiguous()  # metrics .view() it
    # the reference: repeat the last row and column by hand up to whole patches, run the loop, crop
    pad_h, pad_w = -height % 4, -width % 4
    padded = torch.cat([x, x[..., -1:, :].expand(-1, -1, -1, pad_h, -1)], dim=3)
    padded = torch.cat([padded, padded[..., -1:].expand(-1, -1, -1, -1, pad_w)], dim=4)
    torch.testing.assert_close(out, _reference(model, padded)[..., :height, :width])
    peep = _build(patch_size=4, peephole=True, image_size=(height, width)).eval()
    assert peep(x).shape == out.shape  # the peepholes cover the padded maps


def test_features_pool_the_encoder_states() -> None:
    model = _build().eval()
    x = torch.rand(2, 4, 2, 6, 6)
    _, states = model.encoder(x)
    want = torch.cat([states[0][0].mean(dim=(2, 3)), states[1][0].mean(dim=(2, 3))], dim=1)
    torch.testing.assert_close(model.forward_features(x), want)
    assert model.num_features == 7 and model.num_classes == 2
    assert model.forward_head(model.forecast_states(x)).shape == (2, 3, 2, 6, 6)


@pytest.mark.parametrize("extra", [{}, {"peephole": True, "image_size": 8, "layer_norm": True, "dropout": 0.1}])
def test_every_parameter_learns(extra: dict) -> None:
    model = _build(**extra).train()
    out = model(**model.example_input(batch_size=2))
    assert out.shape == (2, 3, 2, 8 if extra else 16, 8 if extra else 16)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_wrong_inputs_and_configs_say_what_to_change() -> None:
    model = _build(patch_size=2)
    with pytest.raises(ShapeError, match=r"conv_lstm_forecaster expects frames \(B, T, C, H, W\).*got \(3, 2, 8, 8\)"):
        model(torch.rand(3, 2, 8, 8))
    with pytest.raises(ShapeError, match="image_size=\\(8, 8\\)"):
        _build(peephole=True, image_size=8)(torch.rand(1, 3, 2, 6, 6))
    with pytest.raises(ConfigError, match="num_classes"):
        _build(num_classes=3)
    with pytest.raises(ConfigError, match="image_size"):
        _build(peephole=True)
    with pytest.raises(ConfigError, match="num_layers=3"):
        _build(num_layers=3)
    with pytest.raises(ConfigError, match="output='relu'; it must be one of sigmoid, clamp"):
        _build(output="relu")
    assert _build(num_classes=2).num_classes == 2


def test_clamp_output_reaches_zero_and_passes_gradients_straight_through() -> None:
    model = _build(output="clamp").eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([-0.3, 0.4]))  # channel 0 mostly below 0, channel 1 inside (0, 1)
    x = torch.rand(2, 4, 2, 6, 6)
    out = model(x)
    torch.testing.assert_close(out, _reference(model, x, squash=lambda v: v.clamp(0, 1)))
    assert (out[:, :, 0] == 0).any() and out.min() == 0 and out.max() <= 1  # exactly 0: no grey floor
    # Straight through: the gradient reaching the head is the loss's gradient, even where the clip is active,
    # so a pixel clipped to 0 where the truth is lit is pulled up (plain clamp would give it no gradient).
    states = model.forecast_states(x).detach().requires_grad_(True)
    pred = model.forward_head(states)
    target = torch.ones_like(pred)
    (grad,) = torch.autograd.grad(F.mse_loss(pred, target, reduction="sum"), states)
    maps = states.detach().flatten(0, 1).requires_grad_(True)  # the same head without the clip
    unclipped = F.pixel_shuffle(F.conv2d(maps, model.head.weight, model.head.bias), 1)
    (want,) = torch.autograd.grad((2 * (pred.detach().flatten(0, 1) - 1) * unclipped).sum(), maps)
    torch.testing.assert_close(grad.flatten(0, 1), want)
