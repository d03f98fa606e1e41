"""StreamingSession: after t steps its output equals the model run on the first t steps (a full re-run)."""

from __future__ import annotations

import pytest
import torch
from export_toys import build

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.export import StreamingSession


def _assert_streams_exactly(model: torch.nn.Module, x: torch.Tensor) -> None:
    session = StreamingSession(model)
    for t in range(x.shape[1]):
        streamed = session.step(x[:, t])
        with torch.no_grad():
            full = model(x[:, : t + 1])  # the reference: the whole prefix, recomputed
        torch.testing.assert_close(streamed, full, rtol=0, atol=1e-5, msg=f"step {t + 1}")


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_frame_lstm_streams_frames(pooling: str) -> None:
    model = build("frame_lstm", pooling=pooling, num_layers=2)
    _assert_streams_exactly(model, torch.rand(2, 5, 3, 32, 32))


def test_deep_conv_lstm_streams_despite_look_ahead_convolutions() -> None:
    # 3 convs of kernel 5 read 6 steps ahead: the last 6 steps' features stay provisional.
    model = build("deep_conv_lstm", num_conv_layers=3, num_layers=2)
    _assert_streams_exactly(model, torch.randn(2, 15, 2))


def test_lstm_fcn_streams_with_the_papers_even_kernel() -> None:
    model = build("lstm_fcn", kernel_sizes=(8, 5, 3))  # kernel 8: 3 steps back, 4 ahead
    _assert_streams_exactly(model, torch.randn(2, 16, 2))


def test_forecaster_streams_frames_and_forecasts_from_its_state() -> None:
    model = build("conv_lstm_forecaster", patch_size=2)
    _assert_streams_exactly(model, torch.rand(2, 4, 1, 8, 8))


def test_push_then_output_equals_step_and_reset_starts_over() -> None:
    model = build("deep_conv_lstm")
    x = torch.randn(1, 9, 2)
    session = StreamingSession(model)
    for x_t in x[:, :8].unbind(1):
        session.push(x_t)
    with torch.no_grad():
        torch.testing.assert_close(session.output(), model(x[:, :8]), rtol=0, atol=1e-5)
    session.reset()
    with torch.no_grad():
        torch.testing.assert_close(session.step(x[:, 8]), model(x[:, 8:9]), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "overrides", "reason"),
    [
        ("mlstm_fcn", {}, "squeeze-excite"),
        ("crnn", {}, "bidirectional"),
        ("captioner", {}, "generate"),
        ("multi_input", {}, "image"),
        ("deep_conv_lstm", {"bidirectional": True}, "backward direction"),
        ("frame_lstm", {"pooling": "attention"}, "attention"),
        ("lstm_fcn", {"shuffle": True, "seq_len": 12}, "variables"),
    ],
)
def test_models_that_cannot_stream_say_why(name: str, overrides: dict, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        StreamingSession(build(name, **overrides))


def test_wrong_step_shapes_and_empty_streams_raise_shape_errors() -> None:
    session = StreamingSession(build("lstm_fcn"))
    with pytest.raises(ShapeError, match="at least one step"):
        session.output()
    with pytest.raises(ShapeError, match=r"\(B, F\)"):
        session.step(torch.randn(1, 3, 2))


@pytest.mark.parametrize(("mode", "pooling", "difference"), [("grid", "last", True), ("conv_lstm", "mean", False),
                                                             ("conv_lstm", "max", True), ("attention", "mean", True)])
def test_frame_lstm_grid_modes_stream_frames(mode: str, pooling: str, difference: bool) -> None:
    model = build("frame_lstm", frame_features=mode, feature_stage=0, grid_size=4, pooling=pooling,
                  num_layers=1 if mode == "attention" else 2, frame_difference=difference)
    _assert_streams_exactly(model, torch.rand(2, 4, 3, 32, 32))
