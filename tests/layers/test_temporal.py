"""TimeDistributed against a per-frame Python loop and against BatchNorm run on the valid frames by hand."""

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.masking import lengths_to_mask
from cnnlstm.layers.temporal import TimeDistributed

LENGTHS = torch.tensor([3, 1])


def _frame_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    )


def _clip() -> torch.Tensor:
    return torch.randn(2, 3, 3, 8, 8)  # (B, T, C, H, W)


def test_equals_per_frame_loop() -> None:
    cnn = _frame_cnn().eval()
    x = _clip()
    expected = torch.stack([torch.stack([cnn(x[b, t : t + 1])[0] for t in range(3)]) for b in range(2)])
    torch.testing.assert_close(TimeDistributed(cnn)(x), expected, rtol=0, atol=1e-6)


def test_chunked_equals_unchunked() -> None:
    cnn = _frame_cnn().eval()
    x = _clip()
    full = TimeDistributed(cnn)(x)
    for chunk in (1, 2, 4, 100):
        torch.testing.assert_close(TimeDistributed(cnn, chunk_size=chunk)(x), full, rtol=0, atol=1e-6)
        torch.testing.assert_close(
            TimeDistributed(cnn, chunk_size=chunk)(x, lengths=LENGTHS),
            TimeDistributed(cnn)(x, lengths=LENGTHS),
            rtol=0,
            atol=1e-6,
        )


def test_padded_frames_are_zero_and_never_computed_or_leaked() -> None:
    cnn = _frame_cnn().eval()
    x = _clip()
    x[1, 1:] = float("nan")  # padding content must not matter at all
    seen: list[int] = []
    cnn.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    out = TimeDistributed(cnn)(x, lengths=LENGTHS)
    assert seen == [4]  # 3 + 1 valid frames, not B*T = 6
    assert torch.equal(out[1, 1:], torch.zeros(2, 5))
    torch.testing.assert_close(out[0], TimeDistributed(cnn)(x[:1])[0])
    torch.testing.assert_close(out[1, :1], TimeDistributed(cnn)(x[1:, :1])[0])
    mask_out = TimeDistributed(cnn)(x, mask=lengths_to_mask(LENGTHS, 3))
    assert torch.equal(mask_out, out)


def test_gradient_reaches_valid_frames_only() -> None:
    x = _clip().requires_grad_()
    TimeDistributed(_frame_cnn().eval())(x, lengths=LENGTHS).sum().backward()
    assert x.grad[1, 1:].abs().sum() == 0
    assert x.grad[1, 0].abs().sum() > 0


def test_batchnorm_statistics_come_from_valid_frames_only() -> None:
    torch.manual_seed(0)
    bn_td = nn.BatchNorm1d(4)
    bn_ref = nn.BatchNorm1d(4)
    x = torch.randn(2, 3, 4) * 3 + 1
    x[1, 1:] = 1e3  # padding would shift the statistics enormously if it leaked in
    out = TimeDistributed(bn_td)(x, lengths=LENGTHS)
    valid = torch.cat([x[0], x[1, :1]])  # the 4 valid frames, by hand
    expected = bn_ref(valid)
    torch.testing.assert_close(out[0], expected[:3])
    torch.testing.assert_close(out[1, 0], expected[3])
    torch.testing.assert_close(bn_td.running_mean, bn_ref.running_mean)
    torch.testing.assert_close(bn_td.running_var, bn_ref.running_var)


def test_output_keeps_extra_dims() -> None:
    conv = nn.Conv2d(3, 2, 1)
    out = TimeDistributed(conv)(_clip(), lengths=LENGTHS)
    assert out.shape == (2, 3, 2, 8, 8)


def test_errors() -> None:
    with pytest.raises(ShapeError, match=r"\(B, T, \.\.\.\)"):
        TimeDistributed(nn.Identity())(torch.randn(4, 5))
    with pytest.raises(ShapeError, match="no valid step"):
        TimeDistributed(nn.Identity())(torch.randn(2, 3, 4), mask=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="chunk_size"):
        TimeDistributed(nn.Identity(), chunk_size=0)


@pytest.mark.gpu
def test_cuda_frames_with_lengths_on_the_cpu_equal_the_all_cuda_call() -> None:
    # Packing wants lengths on the CPU, so callers (the feature cache among them) may keep them there.
    torch.manual_seed(0)
    td = TimeDistributed(_frame_cnn()).cuda().eval()
    x = _clip().cuda()
    with torch.no_grad():
        torch.testing.assert_close(td(x, lengths=LENGTHS), td(x, lengths=LENGTHS.cuda()))
