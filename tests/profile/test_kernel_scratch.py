"""Kernel scratch rules against the CPU allocator's own peak (torch profiler), one operator at a time.

Each case compares the tracker's estimate (live tensors + modelled scratch) with what the allocator measured, the
way ``benchmarks/bench_cost_memory.py`` does, and also checks that the rule closes most of the gap that live
tensors alone leave, so every case needs its rule to pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from cnnlstm.models import create_model
from cnnlstm.profile import cost_report, measure_allocator_peak, track_peak_memory
from cnnlstm.profile.kernel_scratch import kernel_scratch_bytes

TOL = 0.25  # the cost report's promise


def _ratios(fn: Callable[[], Any], resident: list[Tensor]) -> tuple[float, float]:
    """(estimate / measured, live tensors alone / measured) for ``fn``'s peak, resident tensors included."""
    fn()  # oneDNN builds and caches its primitive on the first call; measure a steady-state call
    measured = sum(t.numel() * t.element_size() for t in resident) + measure_allocator_peak(fn)
    estimate = track_peak_memory(fn, resident)
    bare = track_peak_memory(fn, resident, scratch=False)
    return estimate / measured, bare / measured


def _check(ratio: float, bare: float) -> None:
    assert ratio == pytest.approx(1.0, abs=TOL)
    assert abs(ratio - 1) < abs(bare - 1) / 3  # the scratch rule, not luck, brings the estimate close


def _backend(conv: nn.Conv2d, x: Tensor) -> Any:
    return torch._C._select_conv_backend(x, conv.weight, conv.bias, list(conv.stride), list(conv.padding),
                                         list(conv.dilation), False, [0, 0], conv.groups, None)


def _inference(module: nn.Module, x: Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            module(x)

    return run


def _train_step(module: nn.Module, x: Tensor) -> Callable[[], None]:
    def run() -> None:
        for p in module.parameters():
            p.grad = None
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()

    return run


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_mkldnn_conv_forward_counts_blocked_copies() -> None:
    # 16 -> 32 channels: oneDNN reorders input and weights to nChw16c and computes into a blocked output.
    conv = nn.Conv2d(16, 32, 3, padding=1)
    x = torch.randn(4, 16, 16, 16)
    if _backend(conv, x) != torch._C._ConvBackend.Mkldnn:
        pytest.skip("torch picks no oneDNN convolution here")
    ratio, bare = _ratios(_inference(conv, x), [*conv.parameters(), x])
    _check(ratio, bare)
    assert bare < 1 - TOL  # the blocked output alone is as large as the output


def test_mkldnn_conv_backward_counts_blocked_gradients() -> None:
    conv = nn.Conv1d(24, 32, 5, padding=2)  # a 1-D convolution runs as a (1, k) 2-D one
    x = torch.randn(8, 24, 40, requires_grad=True)
    ratio, bare = _ratios(_train_step(conv, x), [*conv.parameters(), x])
    _check(ratio, bare)
    assert bare < 1 - TOL


def test_slow_conv_counts_im2col_columns() -> None:
    # Batch 1 with a 3x3 kernel takes PyTorch's own convolution, which unfolds the input (im2col) first.
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(1, 3, 16, 16)
    if _backend(conv, x) != torch._C._ConvBackend.Slow2d:
        pytest.skip("torch picks another convolution backend here")
    ratio, bare = _ratios(_inference(conv, x), [*conv.parameters(), x])
    _check(ratio, bare)
    assert bare < 1 - TOL  # the columns (3*9 values per output pixel) dwarf the 8-channel output


@pytest.mark.parametrize(("batch", "train"), [(4, False), (1, False), (4, True)],
                         ids=["inference", "inference-one-sequence", "train"])
def test_onednn_lstm_counts_weights_and_scratchpad(batch: int, train: bool) -> None:
    # One sequence: oneDNN also keeps every step's gates (its input GEMM runs over all steps at once).
    lstm = nn.LSTM(48, 32, batch_first=True)
    x = torch.randn(batch, 64, 48)
    step = _train_step(lstm, x) if train else _inference(lstm.eval(), x)
    ratio, bare = _ratios(step, [*lstm.parameters(), x])
    _check(ratio, bare)  # training keeps the states in the returned workspace: a smaller gap, still closed


def test_deep_conv_lstm_report_within_tolerance_of_allocator() -> None:
    model = create_model("deep_conv_lstm", in_channels=3, num_classes=4, hidden_size=32, filters=16)
    row = cost_report(model, seq_lens=(48,), batch_size=4, measure=True).rows[0]
    assert row.peak_inference_bytes == pytest.approx(row.measured_inference_bytes, rel=TOL)
    assert row.peak_train_bytes == pytest.approx(row.measured_train_bytes, rel=TOL)


def test_scratch_rules_by_hand() -> None:
    # Independent hand counts of the layouts (f32, 16-channel blocks), as the docstring states them.
    conv = torch.ops.aten.convolution.default
    x, w = torch.randn(2, 20, 8, 8), torch.randn(24, 20, 3, 3)
    args = (x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
    out = conv(*args)
    if _backend(nn.Conv2d(20, 24, 3, padding=1), x) == torch._C._ConvBackend.Mkldnn:
        blocked_in, blocked_out = 2 * 32 * 64 * 4, 2 * 32 * 64 * 4  # 20 and 24 channels padded to 32
        weights = 32 * 32 * 9 * 4
        dense_out = 2 * 24 * 64 * 4
        assert kernel_scratch_bytes(conv, args, {}, out) == blocked_out + blocked_in + weights - dense_out
    assert kernel_scratch_bytes(torch.ops.aten.add.Tensor, (x, x), {}, x + x) == 0  # no rule, no scratch
    meta = x.to("meta")
    assert kernel_scratch_bytes(conv, (meta, w.to("meta"), *args[2:]), {}, out.to("meta")) == 0
