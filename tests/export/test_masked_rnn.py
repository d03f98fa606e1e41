"""The export rewrites against the eager layers they replace: packed LSTMs and the Python-loop ConvLSTM."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlstm.export.conv_lstm_scan import ScanConvLSTM
from cnnlstm.export.masked_rnn import masked_lstm, reverse_padded
from cnnlstm.layers.conv_lstm import ConvLSTM


def test_reverse_padded_reverses_valid_steps_only_and_is_its_own_inverse() -> None:
    x = torch.arange(8.0).reshape(2, 4, 1)  # [[0,1,2,3], [4,5,6,7]]
    lengths = torch.tensor([3, 4])
    out = reverse_padded(x, lengths)
    assert out.squeeze(2).tolist() == [[2.0, 1.0, 0.0, 3.0], [7.0, 6.0, 5.0, 4.0]]
    torch.testing.assert_close(reverse_padded(out, lengths), x, rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_masked_lstm_equals_the_packed_run(bidirectional: bool, num_layers: int) -> None:
    lstm = nn.LSTM(3, 5, num_layers=num_layers, batch_first=True, bidirectional=bidirectional).eval()
    x = torch.randn(4, 7, 3)
    lengths = torch.tensor([7, 2, 5, 1])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        packed_out, (h_n, _) = lstm(packed)
        expected_out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=7)
        expected_final = h_n[-(2 if bidirectional else 1) :].transpose(0, 1).flatten(1)
        x[0, :] = x[0, :]  # (full row untouched)
        x[1, 2:] = 1e3  # garbage in padded steps must not matter
        out, final = masked_lstm(lstm, x, lengths)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-6)
    torch.testing.assert_close(final, expected_final, rtol=0, atol=1e-6)


def test_masked_lstm_refuses_projections() -> None:
    with pytest.raises(ValueError, match="proj_size"):
        masked_lstm(nn.LSTM(3, 5, proj_size=2, batch_first=True), torch.randn(1, 2, 3), torch.tensor([2]))


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
