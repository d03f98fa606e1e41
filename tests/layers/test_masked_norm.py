"""MaskedBatchNorm1d against nn.BatchNorm1d run on the valid steps alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlstm.errors import ShapeError
from cnnlstm.layers.masked_norm import MaskedBatchNorm1d


def _pair(momentum: float | None = 0.1) -> tuple[MaskedBatchNorm1d, nn.BatchNorm1d]:
    masked, plain = MaskedBatchNorm1d(3, momentum=momentum), nn.BatchNorm1d(3, momentum=momentum)
    with torch.no_grad():
        for m in (masked, plain):
            m.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            m.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    return masked, plain


@pytest.mark.parametrize("momentum", [0.1, None])
def test_training_stats_equal_batchnorm_over_valid_steps(momentum: float | None) -> None:
    masked, plain = _pair(momentum)
    lengths = [5, 2, 4]
    x = torch.randn(3, 3, 5) * 3 + 1  # padded steps hold noise that must not count
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    for _ in range(2):  # two updates check the running-average arithmetic too
        out = masked(x, mask)
        # Reference: all valid steps side by side as one long series, through plain BatchNorm1d.
        valid = torch.cat([x[b, :, :n] for b, n in enumerate(lengths)], dim=1).unsqueeze(0)  # (1, C, sum n)
        ref = plain(valid)
        torch.testing.assert_close(torch.cat([out[b, :, :n] for b, n in enumerate(lengths)], dim=1), ref[0])
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert masked.num_batches_tracked == plain.num_batches_tracked == 2


def test_without_mask_and_in_eval_it_is_batchnorm() -> None:
    masked, plain = _pair()
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(masked(x), plain(x))
    masked.eval(), plain.eval()
    mask = torch.tensor([[True, False, False, False], [True, True, True, True]])
    torch.testing.assert_close(masked(x, mask), plain(x))  # eval uses running stats: the mask changes nothing
    assert set(masked.state_dict()) == set(plain.state_dict())


def test_gradients_flow_and_shape_errors() -> None:
    masked = MaskedBatchNorm1d(3)
    x = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = masked(x, mask)
    (out * torch.randn_like(out) * mask[:, None]).sum().backward()
    assert x.grad[0, :, 2:].abs().max() == 0  # padded inputs do not influence valid outputs
    assert masked.weight.grad.abs().sum() > 0
    with pytest.raises(ShapeError, match=r"\(B, C, T\)"):
        masked(torch.randn(2, 3))
    with pytest.raises(ShapeError, match="mask"):
        masked(x, mask[:, :3])
