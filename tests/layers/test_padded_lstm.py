"""The unpacked, length-aware LSTM against the packed run it replaces on the CPU: values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cnnlstm import create_model
from cnnlstm.layers import padded_lstm
from cnnlstm.layers.padded_lstm import masked_lstm, packed_lstm, reverse_padded, run_lstm
from cnnlstm.models._lstm_state import final_hidden


def test_reverse_padded_reverses_valid_steps_only_and_is_its_own_inverse() -> None:
    x = torch.arange(8.0).reshape(2, 4, 1)  # [[0,1,2,3], [4,5,6,7]]
    lengths = torch.tensor([3, 4])
    out = reverse_padded(x, lengths)
    assert out.squeeze(2).tolist() == [[2.0, 1.0, 0.0, 3.0], [7.0, 6.0, 5.0, 4.0]]
    torch.testing.assert_close(reverse_padded(out, lengths), x, rtol=0, atol=0)


def _packed_reference(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Written out here rather than through packed_lstm, so the reference does not share code with what it checks.
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_out, (h_n, _) = lstm(packed)
    out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
    return out, h_n[-(2 if lstm.bidirectional else 1) :].transpose(0, 1).flatten(1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_masked_lstm_equals_the_packed_run_in_values_and_gradients(bidirectional: bool, num_layers: int) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=num_layers, batch_first=True, bidirectional=bidirectional)  # training mode
    x = torch.randn(4, 7, 3)
    lengths = torch.tensor([7, 2, 5, 1])
    weight = torch.randn(4, 7, lstm.hidden_size * (2 if bidirectional else 1))  # a loss that reads every step

    def run(fn, x_in: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x_in = x_in.clone().requires_grad_(True)
        out, final = fn(lstm, x_in, lengths)
        lstm.zero_grad()
        ((out * weight).sum() + final.square().sum()).backward()
        return (out.detach(), final.detach(), x_in.grad, *(p.grad.clone() for p in lstm.parameters()))

    expected = run(_packed_reference, x)
    garbage = x.clone()
    garbage[1, 2:] = 1e3  # padded steps must not matter
    garbage[3, 1:] = -1e3
    got = run(masked_lstm, garbage)
    got_grad_x = got[2].clone()
    assert got_grad_x[1, 2:].abs().sum() == 0 and got_grad_x[3, 1:].abs().sum() == 0  # no gradient into padding
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_dropout_is_applied_between_layers_in_training(bidirectional: bool) -> None:
    # dropout=1 zeroes the second layer's input in nn.LSTM; the masked run must do the same (deterministically).
    lstm = nn.LSTM(3, 4, num_layers=2, dropout=1.0, batch_first=True, bidirectional=bidirectional)
    x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 3, 1])
    with torch.no_grad():
        expected = _packed_reference(lstm, x, lengths)
        got = masked_lstm(lstm, x, lengths)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_masked_lstm_refuses_projections() -> None:
    with pytest.raises(ValueError, match="proj_size"):
        masked_lstm(nn.LSTM(3, 5, proj_size=2, batch_first=True), torch.randn(1, 2, 3), torch.tensor([2]))


def test_run_lstm_does_not_pack_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("packed on the CPU")

    monkeypatch.setattr(padded_lstm, "pack_padded_sequence", refuse)
    lstm = nn.LSTM(3, 4, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    out, final = run_lstm(lstm, x, lengths)
    torch.testing.assert_close(final, final_hidden(lstm, x, lengths), rtol=0, atol=0)
    with pytest.raises(AssertionError, match="packed"):
        packed_lstm(lstm, x, lengths)  # the packed path is still there for CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("bidirectional", [False, True])
def test_run_lstm_on_cuda_packs_and_matches_the_cpu_reference(bidirectional: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare float32 with float32
    monkeypatch.setattr(padded_lstm, "masked_lstm", lambda *args: pytest.fail("CUDA took the masked path"))
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=bidirectional).eval()
    x, lengths = torch.randn(4, 7, 3), torch.tensor([7, 2, 5, 1])
    with torch.no_grad():
        expected = _packed_reference(lstm, x, lengths)  # on the CPU
        garbage = x.clone()
        garbage[1, 2:], garbage[3, 1:] = 1e3, -1e3  # padded steps must not matter on the GPU either
        got = run_lstm(lstm.cuda(), garbage.cuda(), lengths)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e, rtol=1e-4, atol=1e-5)


def test_run_lstm_without_lengths_is_the_plain_call() -> None:
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(2, 5, 3)
    out, final = run_lstm(lstm, x)
    expected_out, (h_n, _) = lstm(x)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
    torch.testing.assert_close(final, torch.cat([h_n[2], h_n[3]], dim=1), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["lstm_fcn", "deep_conv_lstm"])
def test_series_models_with_lengths_equal_each_series_alone(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_channels=2, hidden_size=4, bidirectional=True).eval()
    x, lengths = torch.randn(2, 9, 2), torch.tensor([9, 6])
    with torch.no_grad():
        batch = model(x, lengths=lengths)
        alone = torch.cat([model(x[b : b + 1, : int(n)]) for b, n in enumerate(lengths)])
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
