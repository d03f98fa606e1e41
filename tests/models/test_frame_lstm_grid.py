"""frame_lstm's grid frame features ("grid", "conv_lstm") against a per-frame, per-step loop written here.

The reference runs each valid frame of each clip through the encoder's stages alone, pools the map to the
grid with plain averaging, and steps an LSTM (or a ConvLSTM) by its textbook equations, one step at a time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model

TINY = dict(num_classes=3, in_channels=3, hidden_size=6, encoder_kwargs={"widths": (4, 8)}, image_size=16)


def _model(mode: str, **overrides) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("frame_lstm", **{**TINY, "frame_features": mode, "feature_stage": 0, "grid_size": 4,
                                          **overrides})
    with torch.no_grad():  # a learned scale and shift that are not the identity
        model.frame_norm.norm.weight.uniform_(0.5, 1.5)
        model.frame_norm.norm.bias.uniform_(-0.2, 0.2)
    for module in model.modules():  # non-trivial BatchNorm statistics, so an eval/train mix-up shows
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _grid(model: nn.Module, frame: Tensor, stage: int, size: int) -> Tensor:
    """(C, H, W) -> (D, size, size): the encoder's stages up to ``stage``, block averaging, then each position's
    channels normalised (mean 0, variance 1, then the learned scale and shift)."""
    fmap = model.encoder.stages[: stage + 1](frame[None])[0]  # (D, h, w)
    k = fmap.shape[-1] // size
    grid = fmap.unfold(1, k, k).unfold(2, k, k).mean(dim=(-2, -1))  # (D, size, size)
    norm = model.frame_norm.norm
    mean = grid.mean(dim=0, keepdim=True)
    var = grid.var(dim=0, unbiased=False, keepdim=True)
    return (grid - mean) / torch.sqrt(var + norm.eps) * norm.weight[:, None, None] + norm.bias[:, None, None]


def _lstm_reference(model: nn.Module, grids: list[Tensor]) -> Tensor:
    lstm = model.rnn.lstm
    h = torch.zeros(lstm.hidden_size)
    c = torch.zeros(lstm.hidden_size)
    for g in grids:
        gates = lstm.weight_ih_l0 @ g.flatten() + lstm.bias_ih_l0 + lstm.weight_hh_l0 @ h + lstm.bias_hh_l0
        i, f, cand, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h  # pooling "last"


def _conv_lstm_reference(model: nn.Module, grids: list[Tensor], pooling: str) -> Tensor:
    cell = model.rnn.conv_lstm.cells[0]
    hidden = cell.hidden_channels
    h = torch.zeros(hidden, *grids[0].shape[1:])
    c = torch.zeros_like(h)
    per_step = []
    for g in grids:
        gates = F.conv2d(torch.cat([g, h])[None], cell.conv.weight, cell.conv.bias, padding=1)[0]
        i, f, cand, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
        per_step.append(torch.cat([h.mean(dim=(1, 2)), h.amax(dim=(1, 2))]))  # spatial mean and max
    steps = torch.stack(per_step)  # (T, 2 C_h)
    return steps[-1] if pooling == "last" else steps.mean(0) if pooling == "mean" else steps.amax(0)


@pytest.mark.parametrize(("mode", "pooling", "difference"), [
    ("grid", "last", False), ("grid", "last", True), ("conv_lstm", "last", False), ("conv_lstm", "mean", True),
    ("conv_lstm", "max", False)])
def test_padded_batch_matches_a_per_frame_per_step_loop(mode: str, pooling: str, difference: bool) -> None:
    model = _model(mode, pooling=pooling, frame_difference=difference)
    inputs = model.example_input(batch_size=3, num_frames=4)  # lengths 4, 3, 2, zero-padded
    with torch.no_grad():
        out = model(**inputs)
        for b, length in enumerate(inputs["lengths"].tolist()):
            grids = [_grid(model, inputs["x"][b, t], 0, 4) for t in range(length)]  # each (4, 4, 4)
            if difference:  # [g_t; g_t - g_{t-1}] per position, nothing before the first frame
                grids = [torch.cat([g, g - grids[max(t - 1, 0)]]) for t, g in enumerate(grids)]
            if mode == "grid":
                feats = _lstm_reference(model, grids)
            else:
                feats = _conv_lstm_reference(model, grids, pooling)
            expected = model.head(feats[None])  # (1, K)
            torch.testing.assert_close(out[b : b + 1], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["grid", "conv_lstm"])
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_padding_invariance_and_chunked_encoding(mode: str, pooling: str) -> None:
    model = _model(mode, pooling=pooling, num_layers=2, frame_difference=True)
    chunked = _model(mode, pooling=pooling, num_layers=2, chunk_size=2, frame_difference=True)
    inputs = model.example_input(batch_size=3, num_frames=5)
    with torch.no_grad():
        out = model(**inputs)
        torch.testing.assert_close(chunked(**inputs), out, rtol=0, atol=1e-6)
        for b, length in enumerate(inputs["lengths"].tolist()):
            torch.testing.assert_close(model(inputs["x"][b : b + 1, :length]), out[b : b + 1], rtol=1e-5, atol=1e-5)
        # Garbage in the padding changes nothing.
        noisy = inputs["x"].clone()
        noisy[1, 4:] = 5.0
        noisy[2, 3:] = -3.0
        torch.testing.assert_close(model(noisy, inputs["lengths"]), out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["grid", "conv_lstm"])
def test_cached_feature_path_equals_frames_and_trains_only_the_recurrence(mode: str) -> None:
    model = _model(mode, freeze="all", pooling="mean")
    inputs = model.example_input(batch_size=2, num_frames=3)
    with torch.no_grad():
        feats = model.forward_sequence_features(**inputs)
    assert feats.shape == (2, 3, 4 * 4 * 4) and model.frame_dim == 64  # stage 0: 4 channels on a 4x4 grid
    assert feats[1, 2].abs().sum() == 0  # padded frame
    torch.testing.assert_close(model.forward_from_features(feats, inputs["lengths"]), model(**inputs))


def test_grid_pools_any_frame_size_to_the_grid_and_stage_picks_the_map() -> None:
    model = _model("grid", feature_stage=-1, grid_size=(2, 3))
    assert model.frame_dim == 8 * 2 * 3  # last stage: 8 channels
    assert model(torch.rand(2, 3, 3, 24, 40)).shape == (2, 3)


def test_bad_settings_say_what_to_change() -> None:
    with pytest.raises(ConfigError, match="frame_features must be one of"):
        _model("grids")
    with pytest.raises(ConfigError, match="feature stages 0..1"):
        _model("grid", feature_stage=2)
    with pytest.raises(ConfigError, match="bidirectional: false"):
        _model("conv_lstm", bidirectional=True)
    with pytest.raises(ConfigError, match="truncated BPTT"):
        _model("conv_lstm").forward_chunk(torch.rand(2, 2, 3, 16, 16))
    with pytest.raises(ConfigError, match="frame_difference"):
        _model("grid", frame_difference=True).forward_chunk(torch.rand(2, 2, 3, 16, 16))
    with pytest.raises(ConfigError, match="frame_difference needs"):
        _model("pooled", frame_difference=True)


def test_grid_mode_chunks_for_truncated_bptt_like_the_whole_clip() -> None:
    model = _model("grid")
    x = torch.rand(2, 5, 3, 16, 16)
    with torch.no_grad():
        _, state = model.forward_chunk(x[:, :3])
        _, (h, _) = model.forward_chunk(x[:, 3:], state)
        torch.testing.assert_close(h[-1], model.forward_features(x), rtol=0, atol=1e-5)
