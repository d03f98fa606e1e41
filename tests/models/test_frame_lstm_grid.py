"""frame_lstm's grid frame features ("grid", "conv_lstm", "attention") against a per-frame, per-step loop here.

The reference runs each valid frame of each clip through the encoder's stages alone, pools the map to the
grid with plain averaging, and steps an LSTM (or a ConvLSTM, or an LSTM that attends over the grid from its
previous hidden state) by its textbook equations, one step at a time.
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
    return _pool(torch.stack(per_step), pooling)  # per step (2 C_h,)


def _pool(steps: Tensor, pooling: str) -> Tensor:
    return steps[-1] if pooling == "last" else steps.mean(0) if pooling == "mean" else steps.amax(0)


def _attention_reference(model: nn.Module, grids: list[Tensor], pooling: str) -> Tensor:
    """One step at a time: location score W_a h + b_a (Sharma et al. 2015) plus content score x_i . (W_q h + b_q)
    / sqrt(C); the LSTM reads the weighted features and the weighted (row, column) in [-1, 1]."""
    cell, attend, query = model.rnn.cell, model.rnn.attend, model.rnn.query
    h = torch.zeros(cell.hidden_size)
    c = torch.zeros(cell.hidden_size)
    per_step = []
    for g in grids:  # (C, gh, gw)
        C, gh, gw = g.shape
        q = query.weight @ h + query.bias  # (C,)
        scores = [attend.weight[r * gw + k] @ h + attend.bias[r * gw + k] + g[:, r, k] @ q / C**0.5
                  for r in range(gh) for k in range(gw)]  # row-major positions
        weights = torch.softmax(torch.stack(scores), dim=0)
        read = sum(weights[r * gw + k] * g[:, r, k] for r in range(gh) for k in range(gw))  # (C,)
        where = sum(weights[r * gw + k] * torch.tensor([-1 + 2 * r / (gh - 1), -1 + 2 * k / (gw - 1)])
                    for r in range(gh) for k in range(gw))  # (2,)
        gates = cell.weight_ih @ torch.cat([read, where]) + cell.bias_ih + cell.weight_hh @ h + cell.bias_hh
        i, f, cand, o = gates.chunk(4)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
        per_step.append(h)
    return _pool(torch.stack(per_step), pooling)


@pytest.mark.parametrize(("mode", "pooling", "difference"), [
    ("grid", "last", False), ("grid", "last", True), ("conv_lstm", "last", False), ("conv_lstm", "mean", True),
    ("conv_lstm", "max", False), ("attention", "last", False), ("attention", "mean", True),
    ("attention", "max", True)])
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
            elif mode == "attention":
                feats = _attention_reference(model, grids, pooling)
            else:
                feats = _conv_lstm_reference(model, grids, pooling)
            expected = model.head(feats[None])  # (1, K)
            torch.testing.assert_close(out[b : b + 1], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["grid", "conv_lstm", "attention"])
@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_padding_invariance_and_chunked_encoding(mode: str, pooling: str) -> None:
    layers = 1 if mode == "attention" else 2  # the attention LSTM has one layer
    model = _model(mode, pooling=pooling, num_layers=layers, frame_difference=True)
    chunked = _model(mode, pooling=pooling, num_layers=layers, chunk_size=2, frame_difference=True)
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


@pytest.mark.parametrize("mode", ["grid", "conv_lstm", "attention"])
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
    with pytest.raises(ConfigError, match=r"freeze=1 trains encoder stages 1-1, but .* reads stage 0"):
        _model("conv_lstm", freeze=1)  # stage 0's grid never runs stage 1: freeze=2 would train stage 0
    _model("conv_lstm", freeze=2)
    for bad in ({"num_layers": 2}, {"bidirectional": True}):
        with pytest.raises(ConfigError, match="one LSTM layer forward in time"):
            _model("attention", **bad)
    with pytest.raises(ConfigError, match="truncated BPTT"):
        _model("attention").forward_chunk(torch.rand(2, 2, 3, 16, 16))


def test_attention_weights_are_a_distribution_over_the_grid_on_valid_steps_only() -> None:
    model = _model("attention", frame_difference=True)
    inputs = model.example_input(batch_size=3, num_frames=4)  # lengths 4, 3, 2
    with torch.no_grad():
        feats = model.recurrent_input(model.forward_sequence_features(**inputs))
        out, weights = model.rnn.forward_sequence(feats, inputs["lengths"])
    assert weights.shape == (3, 4, 16) and out.shape == (3, 4, 6)
    valid = torch.arange(4)[None] < inputs["lengths"][:, None]  # (B, T)
    torch.testing.assert_close(weights.sum(-1), valid.float())
    assert (weights[valid] > 0).all() and not (weights[valid] == weights[valid][:1]).all()  # not uniform
    assert out[~valid].abs().sum() == 0
    # Streaming one frame at a time gives the same hidden states as the whole clip.
    state = None
    for t in range(4):
        step, state = model.rnn.step(feats[0, t][None], state)
        torch.testing.assert_close(step[0], out[0, t], rtol=0, atol=1e-6)


def test_grid_mode_chunks_for_truncated_bptt_like_the_whole_clip() -> None:
    model = _model("grid")
    x = torch.rand(2, 5, 3, 16, 16)
    with torch.no_grad():
        _, state = model.forward_chunk(x[:, :3])
        _, (h, _) = model.forward_chunk(x[:, 3:], state)
        torch.testing.assert_close(h[-1], model.forward_features(x), rtol=0, atol=1e-5)
