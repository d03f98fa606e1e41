"""Conv blocks and squeeze-excite against hand-written references."""

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.blocks import ConvNormAct1d, ConvNormAct2d, SqueezeExcite1d, make_activation
from cnnlstm.layers.masking import lengths_to_mask


def test_conv_norm_act_2d_matches_reference_composition() -> None:
    block = ConvNormAct2d(3, 4, 3, norm="batch", act="relu").eval()
    x = torch.randn(2, 3, 8, 8)
    expected = torch.relu(block.norm(nn.functional.conv2d(x, block.conv.weight, None, padding=1)))
    torch.testing.assert_close(block(x), expected)
    assert block.conv.bias is None  # the norm re-centres
    assert ConvNormAct2d(3, 4, norm="none").conv.bias is not None


def test_masked_1d_stack_equals_unpadded_run_on_valid_steps() -> None:
    stack = [ConvNormAct1d(2, 4, 5).eval(), ConvNormAct1d(4, 4, 3, dilation=2).eval()]
    se = SqueezeExcite1d(4, reduction=2)
    x = torch.randn(2, 2, 7)
    lengths = torch.tensor([7, 4])
    mask = lengths_to_mask(lengths, 7)
    x[1, :, 4:] = 5.0  # padding content must not reach valid steps
    h = x
    for block in stack:
        h = block(h, mask=mask)
    h = se(h, mask=mask)
    alone = x[1:, :, :4]
    for block in stack:
        alone = block(alone)
    alone = se(alone)
    torch.testing.assert_close(h[1:, :, :4], alone)
    assert torch.equal(h[1, :, 4:], torch.zeros(4, 3))


def test_squeeze_excite_by_hand() -> None:
    se = SqueezeExcite1d(4, reduction=2)
    x = torch.randn(2, 4, 5)
    lin1, lin2 = se.gate[0], se.gate[2]
    gate = torch.sigmoid(lin2(torch.relu(lin1(x.mean(2)))))
    torch.testing.assert_close(se(x), x * gate.unsqueeze(2))


def test_group_norm_and_shapes() -> None:
    block = ConvNormAct1d(3, 12, 3, norm="group", act="gelu")
    assert isinstance(block.norm, nn.GroupNorm) and block.norm.num_groups == 4
    assert block(torch.randn(1, 3, 9)).shape == (1, 12, 9)
    assert ConvNormAct2d(3, 8, stride=2)(torch.randn(2, 3, 16, 16)).shape == (2, 8, 8, 8)


def test_errors_say_what_to_change() -> None:
    with pytest.raises(ConfigError, match="did you mean 'relu'"):
        make_activation("rellu")
    with pytest.raises(ConfigError, match="norm"):
        ConvNormAct1d(3, 4, norm="layer_norm")
    with pytest.raises(ConfigError, match="odd kernel"):
        ConvNormAct1d(3, 4, 4)
    with pytest.raises(ShapeError, match=r"\(B, C, T\) with C=3"):
        ConvNormAct1d(3, 4)(torch.randn(2, 5, 9))
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        ConvNormAct2d(3, 4)(torch.randn(3, 8, 8))
