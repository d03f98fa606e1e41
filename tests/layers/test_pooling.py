"""Temporal pooling against per-sequence references on the unpadded steps."""

import pytest
import torch

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.masking import lengths_to_mask
from cnnlstm.layers.pooling import TemporalPool, last_valid, masked_max, masked_mean

LENGTHS = torch.tensor([3, 1, 2])


def _padded() -> torch.Tensor:
    x = torch.randn(3, 3, 4)
    # Huge values on padded steps: any leak shows up immediately.
    return x.masked_fill(~lengths_to_mask(LENGTHS, 3).unsqueeze(-1), 1e6)


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("last", lambda s: s[-1]),
        ("mean", lambda s: s.mean(0)),
        ("max", lambda s: s.amax(0)),
    ],
)
def test_pool_equals_reduction_over_valid_steps(mode: str, reference) -> None:
    x = _padded()
    pool = TemporalPool(mode)
    expected = torch.stack([reference(x[b, : LENGTHS[b]]) for b in range(3)])
    torch.testing.assert_close(pool(x, lengths=LENGTHS), expected)
    torch.testing.assert_close(pool(x, mask=lengths_to_mask(LENGTHS, 3)), expected)


def test_last_takes_last_valid_step_not_last_padded_step() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1)
    assert TemporalPool("last")(x, lengths=torch.tensor([2])).item() == 1.0
    assert TemporalPool("last")(x).item() == 5.0
    assert last_valid(x, torch.tensor([4])).item() == 3.0


def test_attention_gives_padded_steps_zero_weight_and_matches_unpadded_run() -> None:
    x = _padded()
    pool = TemporalPool("attention", input_size=4)
    weights = pool.attention_weights(x, lengths=LENGTHS)
    assert torch.all(weights[~lengths_to_mask(LENGTHS, 3)] == 0)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    out = pool(x, lengths=LENGTHS)
    for b in range(3):
        alone = pool(x[b : b + 1, : LENGTHS[b]])
        torch.testing.assert_close(out[b : b + 1], alone)


def test_attention_by_hand() -> None:
    pool = TemporalPool("attention", input_size=2)
    x = torch.randn(1, 3, 2)
    scores = pool.score[2](torch.tanh(pool.score[0](x))).squeeze(-1)  # v^T tanh(W x + b)
    expected = (torch.softmax(scores, dim=1).unsqueeze(-1) * x).sum(1)
    torch.testing.assert_close(pool(x), expected)


def test_masked_helpers_give_zeros_for_empty_rows() -> None:
    x = torch.randn(2, 3, 2)
    mask = torch.tensor([[False, False, False], [True, False, True]])
    assert torch.equal(masked_mean(x, mask)[0], torch.zeros(2))
    assert torch.equal(masked_max(x, mask)[0], torch.zeros(2))
    torch.testing.assert_close(masked_max(x, mask)[1], torch.maximum(x[1, 0], x[1, 2]))


def test_pool_errors_say_what_to_change() -> None:
    with pytest.raises(ConfigError, match="did you mean 'mean'"):
        TemporalPool("meen")
    with pytest.raises(ConfigError, match="input_size"):
        TemporalPool("attention")
    with pytest.raises(ShapeError, match=r"\(B, T, D\)"):
        TemporalPool("mean")(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="lengths"):
        TemporalPool("mean")(torch.randn(2, 3, 4), lengths=torch.tensor([4, 1]))
