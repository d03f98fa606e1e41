"""Cost report: FLOPs against hand counts, memory against hand counts and the allocator's own peak."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model
from cnnlstm.profile import cost_report, count_flops, measure_allocator_peak, track_peak_memory


class _ToySeries(nn.Module):
    """x (B, T, F) -> Linear -> ReLU -> mean over T -> Linear: every live tensor is hand-countable."""

    def __init__(self, features: int = 3, width: int = 8, classes: int = 2) -> None:
        super().__init__()
        self.features = features
        self.fc1 = nn.Linear(features, width)
        self.fc2 = nn.Linear(width, classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x)).mean(dim=1))

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        return {"x": torch.randn(batch_size, 5, self.features), "lengths": torch.full((batch_size,), 5)}


class _ToyFrames(nn.Module):
    """frames (B, T, C, H, W) and a token sequence (B, L): checks how inputs are resized."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.embed = nn.Embedding(10, 4)

    def forward(self, x: Tensor, sequence: Tensor) -> Tensor:
        assert int(sequence.max()) < 10  # tiled token ids stay in the vocabulary
        return self.conv(x.flatten(0, 1)).mean() + self.embed(sequence).mean()

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        return {"x": torch.rand(batch_size, 3, 3, 8, 8), "sequence": torch.randint(0, 10, (batch_size, 4))}


def test_lstm_fcn_flops_match_hand_count() -> None:
    F_, T, H, K = 2, 16, 8, 3
    filters, kernels = (4, 8, 4), (8, 5, 3)
    model = create_model("lstm_fcn", in_channels=F_, num_classes=K, hidden_size=H, filters=filters,
                         kernel_sizes=kernels, dropout=0.0)
    widths = [F_, *filters]
    conv = [2 * widths[i] * widths[i + 1] * kernels[i] * T for i in range(3)]  # 2*Cin*Cout*k*T per layer
    lstm_matmul = T * 2 * 4 * H * (F_ + H)  # per step: 4 gates, input and hidden products
    # Per step the LSTM also adds two biases and the gates, applies 3 sigmoids and 2 tanh and updates c and h
    # (about 21H elementwise operations). FlopCounterMode counts matrix/conv multiply-adds only (no bias adds,
    # activations, BatchNorm or pooling), so elementwise work is excluded from the hand count as well.
    linear = 2 * (H + filters[-1]) * K
    hand_forward = sum(conv) + lstm_matmul + linear

    table = cost_report(model, seq_lens=(T,), optimizer=None)
    row = table.rows[0]
    assert row.flops_forward == pytest.approx(hand_forward, rel=0.05)
    assert row.flops_forward == hand_forward  # the same convention, so the counts agree exactly
    # Backward: each product yields an input and a weight gradient, except the first conv (its input, the data,
    # needs no gradient); the LSTM kernel computes both; the head also both.
    hand_backward = conv[0] + 2 * (conv[1] + conv[2]) + 2 * lstm_matmul + 2 * linear
    assert row.flops_train == hand_forward + hand_backward


def test_lstm_formula_agrees_with_packed_path_counted_by_torch() -> None:
    # Packed sequences run as per-step addmm, which torch counts itself: an independent check of the formula.
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 7, 3)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([7, 7]), batch_first=True)
    fused, _ = count_flops(lstm, {"input": x}, backward=False)
    stepwise, _ = count_flops(lstm, {"input": packed}, backward=False)
    assert fused == stepwise == 2 * 2 * 7 * 4 * 5 * ((3 + 5) + (10 + 5)) * 2  # B*T*4H*(I+H), 2 layers x 2 dirs


def test_flops_per_sample_do_not_depend_on_batch() -> None:
    model = _ToySeries()
    one = cost_report(model, seq_lens=(6,), batch_size=1, optimizer=None).rows[0]
    four = cost_report(model, seq_lens=(6,), batch_size=4, optimizer=None).rows[0]
    assert one.flops_forward == four.flops_forward == 2 * 6 * 3 * 8 + 2 * 8 * 2


def test_inference_peak_and_saved_activations_match_hand_count() -> None:
    B, T, F_, D = 2, 10, 3, 8
    model = _ToySeries(F_, D)
    row = cost_report(model, seq_lens=(T,), batch_size=B, optimizer=None).rows[0]
    params = sum(p.numel() for p in model.parameters()) * 4
    resident = params + B * T * F_ * 4
    # Inference: fc1's output and relu's output are alive together, the largest moment.
    assert row.peak_inference_bytes == resident + 2 * B * T * D * 4
    # Saved for backward: relu's output (B, T, D) and fc2's input, the mean (B, D); x and weights are resident.
    assert row.activation_bytes == (B * T * D + B * D) * 4


def test_train_peak_within_25_percent_of_allocator_peak() -> None:
    model = create_model("lstm_fcn", in_channels=3, num_classes=4, hidden_size=16, filters=(16, 32, 16))
    T, B = 64, 4
    row = cost_report(model, seq_lens=(T,), batch_size=B).rows[0]
    x = torch.randn(B, T, 3)
    resident = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers(), x])
    params = [p for p in model.parameters()]

    def step() -> None:
        for p in params:
            p.grad = None
        opt = torch.optim.Adam(params, lr=1e-3)
        model(x).sum().backward()
        opt.step()

    model.train()
    measured = resident + measure_allocator_peak(step)
    assert row.peak_train_bytes == pytest.approx(measured, rel=0.25)
    assert row.peak_train_bytes > row.peak_inference_bytes > resident


def test_memory_grows_with_sequence_length() -> None:
    model = create_model("deep_conv_lstm", in_channels=3, num_classes=4, hidden_size=16)
    rows = cost_report(model, seq_lens=(32, 8, 128), optimizer=None).rows
    assert [r.seq_len for r in rows] == [8, 32, 128]
    for a, b in zip(rows, rows[1:], strict=False):
        assert b.activation_bytes > a.activation_bytes
        assert b.peak_train_bytes > a.peak_train_bytes
        assert b.peak_inference_bytes >= a.peak_inference_bytes
        assert b.flops_forward > a.flops_forward


def test_inputs_resized_for_frames_and_tokens() -> None:
    table = cost_report(_ToyFrames(), seq_lens=(2, 7), frame_sizes=(4, (6, 10)), optimizer="sgd")
    shapes = [(r.frame_size, r.input_shapes) for r in table.rows]
    assert shapes == [
        ((4, 4), {"x": (1, 2, 3, 4, 4), "sequence": (1, 2)}),
        ((4, 4), {"x": (1, 7, 3, 4, 4), "sequence": (1, 7)}),
        ((6, 10), {"x": (1, 2, 3, 6, 10), "sequence": (1, 2)}),
        ((6, 10), {"x": (1, 7, 3, 6, 10), "sequence": (1, 7)}),
    ]
    conv = table.rows[1].flops_forward  # T frames, each 2*C_in*C_out*9 per pixel
    assert conv == 7 * 2 * 3 * 4 * 9 * 16


def test_line_image_width_follows_output_columns() -> None:
    model = create_model("crnn", num_classes=5, hidden_size=8, num_layers=1, widths=(4, 4, 8, 8, 8, 8))
    rows = cost_report(model, seq_lens=(5,), optimizer=None).rows
    assert rows[0].input_shapes["x"] == (1, 1, 32, 20)  # CRNN's width stride is 4: 5 columns need 20 pixels
    assert rows[0].frame_size is None


def test_report_leaves_model_untouched_and_formats() -> None:
    model = _ToySeries()
    model.fc1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    rng = torch.get_rng_state()
    table = cost_report(model, seq_lens=(4, 8))
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert [(b.name, b.trainable, b.frozen) for b in table.blocks] == [("fc1", 8, 24), ("fc2", 18, 0)]
    text, md = table.to_text(), table.to_markdown()
    assert "peak train step" in text and text.count("\n") >= 8
    assert md.splitlines()[2].startswith("| block | trainable | frozen |")


def test_plot_writes_png(tmp_path) -> None:
    path = cost_report(_ToySeries(), seq_lens=(4, 8), optimizer=None).plot(tmp_path / "sub" / "cost.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="optimizer"):
        cost_report(_ToySeries(), seq_lens=(4,), optimizer="lion")
    with pytest.raises(ConfigError, match="model kwargs"):
        cost_report(_ToySeries(), seq_lens=(4,), hidden_size=3)
    with pytest.raises(ConfigError, match="seq_lens"):
        cost_report(_ToySeries(), seq_lens=(0,))


def test_track_peak_memory_counts_views_once() -> None:
    x = torch.zeros(100)
    assert track_peak_memory(lambda: x.view(10, 10).t().contiguous(), resident=[x]) == 800


def test_cached_feature_bytes_per_clip_for_pooled_and_grid_frame_models() -> None:
    kwargs = dict(num_classes=2, hidden_size=4, encoder_kwargs={"widths": (4, 8)})
    pooled = cost_report("frame_lstm", seq_lens=(2,), frame_sizes=(8, 12), optimizer=None, **kwargs)
    # T float32 rows of D = 8 (the pooled vector), whatever the frame size.
    assert [r.cached_feature_bytes for r in pooled.rows] == [2 * 8 * 4] * 2
    grid = cost_report("frame_lstm", seq_lens=(3,), frame_sizes=(8,), optimizer=None, frame_features="conv_lstm",
                       feature_stage=0, grid_size=2, **kwargs)
    assert grid.rows[0].cached_feature_bytes == 3 * (4 * 2 * 2) * 4  # stage 0: 4 channels on a 2x2 grid
    assert "cached features/clip" in str(grid)
    series = cost_report("lstm_fcn", in_channels=2, num_classes=2, hidden_size=4, seq_lens=(4,), optimizer=None)
    assert series.rows[0].cached_feature_bytes is None


@pytest.mark.gpu
def test_cuda_allocator_peak_counts_what_is_live_at_once() -> None:
    resident = torch.zeros(1 << 18, device="cuda")  # allocated before: not counted

    def two_live() -> list[Tensor]:
        return [torch.zeros(1 << 20, device="cuda"), torch.zeros(1 << 19, device="cuda")]  # 4 MiB + 2 MiB

    assert measure_allocator_peak(two_live, "cuda") == (4 << 20) + (2 << 20)
    assert measure_allocator_peak(lambda: resident.add_(1), "cuda") == 0  # in place: nothing new
    assert float(resident[0]) == 1.0


@pytest.mark.gpu
def test_cost_report_on_cuda_counts_the_cpu_flops_and_leaves_the_model_there() -> None:
    model = _ToySeries()
    cpu = cost_report(model, seq_lens=(6,), batch_size=2, optimizer=None).rows[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    table = cost_report(model.cuda(), seq_lens=(6,), batch_size=2, optimizer=None)
    assert table.memory_source == "torch.cuda.max_memory_allocated" and table.device.startswith("cuda")
    assert table.rows[0].flops_forward == cpu.flops_forward == 2 * 6 * 3 * 8 + 2 * 8 * 2
    for key, value in model.state_dict().items():
        assert value.is_cuda and torch.equal(value.cpu(), state[key]), key
