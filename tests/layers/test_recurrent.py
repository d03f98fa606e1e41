"""SequenceLSTM against nn.LSTM run on each sequence alone."""

import pytest
import torch

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.recurrent import SequenceLSTM

LENGTHS = torch.tensor([2, 4, 1])  # unsorted on purpose: the packed path must restore the batch order


def _padded(F: int = 3) -> torch.Tensor:
    x = torch.randn(3, 4, F)
    for b, length in enumerate(LENGTHS.tolist()):
        x[b, length:] = 7.0  # padding content must not matter
    return x


def test_bidirectional_last_joins_forward_end_and_backward_start() -> None:
    rnn = SequenceLSTM(3, 5, num_layers=2, bidirectional=True)
    x = _padded()
    out = rnn(x, LENGTHS)
    assert out.shape == (3, 10) and rnn.out_features == 10
    for b, length in enumerate(LENGTHS.tolist()):
        steps, _ = rnn.lstm(x[b : b + 1, :length])  # (1, length, 10), by hand on the unpadded sequence
        expected = torch.cat([steps[0, -1, :5], steps[0, 0, 5:]])  # forward after the end, backward after step 0
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_equals_each_sequence_alone(pooling: str, bidirectional: bool) -> None:
    rnn = SequenceLSTM(3, 4, bidirectional=bidirectional, pooling=pooling)
    x = _padded()
    out = rnn(x, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(out[b : b + 1], rnn(x[b : b + 1, :length]), rtol=1e-5, atol=1e-6)


def test_outputs_are_zero_after_each_end() -> None:
    outputs, _ = SequenceLSTM(3, 4).forward_sequence(_padded(), LENGTHS)
    assert outputs.shape == (3, 4, 4)
    assert torch.equal(outputs[0, 2:], torch.zeros(2, 4)) and torch.equal(outputs[2, 1:], torch.zeros(3, 4))


def test_errors() -> None:
    with pytest.raises(ShapeError, match=r"\(B, T, F\) with F=3"):
        SequenceLSTM(3, 4)(torch.randn(2, 5, 2))
    with pytest.raises(ConfigError, match="did you mean 'mean'"):
        SequenceLSTM(3, 4, pooling="meen")
    with pytest.raises(ConfigError, match="dropout"):
        SequenceLSTM(3, 4, dropout=1.5)
