"""The export rewrite of the Python-loop ConvLSTM against the eager layer it replaces."""

from __future__ import annotations

import pytest
import torch

from cnnlstm.export.conv_lstm_scan import ScanConvLSTM
from cnnlstm.layers.conv_lstm import ConvLSTM


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(
    "options",
    [dict(), dict(bidirectional=True, num_layers=2), dict(peephole=True, spatial_size=(6, 5)), dict(layer_norm=True)],
    ids=["plain", "bidirectional-2-layers", "peephole", "layer-norm"],
)
@pytest.mark.parametrize("padded", [False, True])
def test_scan_conv_lstm_equals_conv_lstm(options: dict, padded: bool) -> None:
    stack = ConvLSTM(2, 3, kernel_size=(3, 2), **options).eval()  # an even kernel: asymmetric "same" padding
    x = torch.randn(2, 4, 2, 6, 5)
    lengths = torch.tensor([4, 2]) if padded else None
    with torch.no_grad():
        expected, expected_states = stack(x, lengths=lengths)
        out, states = ScanConvLSTM.from_conv_lstm(stack)(x, lengths=lengths)
    assert type(stack) is ScanConvLSTM
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    for (h, c), (h_ref, c_ref) in zip(states, expected_states, strict=True):
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(c, c_ref, rtol=0, atol=1e-6)
