"""The built-in CNN: shapes from 8x8 up, odd and 1-pixel sides, and each stage against a hand-built reference."""

import pytest
import torch
import torch.nn.functional as F

from cnnlstm.encoders import ConvStage, FrameEncoder, SmallCNN, build_encoder, list_encoders
from cnnlstm.errors import ConfigError, ShapeError, UnknownNameError


@pytest.mark.parametrize(
    ("size", "grid"),
    [((32, 32), (4, 4)), ((8, 8), (1, 1)), ((7, 5), (1, 1)), ((4, 4), (1, 1)), ((1, 9), (1, 2)), ((64, 48), (8, 6))],
)
def test_shapes(size: tuple[int, int], grid: tuple[int, int]) -> None:
    enc = build_encoder("cnn", in_channels=3)
    x = torch.rand(2, 3, *size)
    assert isinstance(enc, FrameEncoder)
    assert enc.out_features == enc.grid_features == 128
    assert enc(x).shape == (2, 128)
    assert enc.forward_grid(x).shape == (2, 128, *grid)


def test_pooled_vector_is_the_mean_of_the_grid() -> None:
    enc = build_encoder("cnn", in_channels=1, widths=(8, 16)).eval()
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(enc(x), enc.forward_grid(x).mean(dim=(2, 3)))


def test_stage_matches_a_hand_built_conv_bn_relu_pool() -> None:
    stage = ConvStage(3, 4, kernel_size=5).eval()
    with torch.no_grad():  # non-trivial BN statistics so the reference has to apply them
        stage.bn.running_mean.uniform_(-1, 1)
        stage.bn.running_var.uniform_(0.5, 2)
        stage.bn.weight.uniform_(0.5, 1.5)
        stage.bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 9, 6)
    bn = stage.bn
    y = F.conv2d(x, stage.conv.weight, padding=2)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    y = torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])
    y = F.pad(y, (0, 0, 0, 1), value=float("-inf"))  # ceil_mode: the odd last row is pooled on its own
    expected = y.unflatten(2, (5, 2)).unflatten(4, (3, 2)).amax(dim=(3, 5))  # (2, 4, 5, 3)
    torch.testing.assert_close(stage(x), expected)


def test_stage_skips_pooling_on_one_pixel_sides() -> None:
    stage = ConvStage(2, 3, kernel_size=1).eval()
    x = torch.randn(2, 2, 1, 1)
    expected = torch.relu(stage.bn(stage.conv(x)))
    torch.testing.assert_close(stage(x), expected)


def test_in_channels_and_widths() -> None:
    enc = build_encoder("cnn", in_channels=1, widths=(4, 8, 16, 24), kernel_size=5, dropout=0.1)
    assert isinstance(enc, SmallCNN) and enc.num_stages == 4
    assert enc(torch.rand(2, 1, 32, 32)).shape == (2, 24)
    assert enc.forward_grid(torch.rand(2, 1, 32, 32)).shape == (2, 24, 2, 2)
    assert enc.pretrained_config["mean"] == (0.5,) and enc.pretrained_config["std"] == (0.5,)
    assert build_encoder("cnn").pretrained_config["mean"] == (0.5, 0.5, 0.5)


def test_wrong_input_shapes_raise_shape_error() -> None:
    enc = build_encoder("cnn", in_channels=3)
    with pytest.raises(ShapeError, match=r"encoder 'cnn' expects images \(N, C, H, W\) with C=3, got \(2, 1, 32, 32\)"):
        enc(torch.rand(2, 1, 32, 32))
    with pytest.raises(ShapeError, match=r"got \(2, 3, 3, 32, 32\)"):
        enc.forward_grid(torch.rand(2, 3, 3, 32, 32))
    with pytest.raises(ShapeError, match="floating-point"):
        enc(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs",
    [{"widths": ()}, {"widths": (8, 0)}, {"kernel_size": 4}, {"dropout": 1.0}, {"depth": 3}, {"in_channels": 0}],
)
def test_bad_options_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_encoder("cnn", **kwargs)


def test_unknown_names() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'cnn'"):
        build_encoder("cn")
    with pytest.raises(UnknownNameError, match="resnet18"):
        build_encoder("timm:resnet_18")
    with pytest.raises(ConfigError, match="no published weights"):
        build_encoder("cnn", pretrained=True)


def test_list_encoders() -> None:
    assert list_encoders("cnn") == ["cnn"]
    names = list_encoders("*efficientnet_lite0")
    assert "timm:tf_efficientnet_lite0" in names and "cnn" not in names
    assert list_encoders("timm:resnet10t") == ["timm:resnet10t"]


def test_coords_stage_is_a_conv_over_the_input_and_hand_built_coordinate_maps() -> None:
    stage = ConvStage(2, 3, kernel_size=3, coords=True).eval()
    x = torch.randn(2, 2, 4, 6)
    xs = torch.tensor([-1.0, -0.6, -0.2, 0.2, 0.6, 1.0])  # 6 columns evenly over [-1, 1]
    ys = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])  # 4 rows
    coords = torch.stack([xs.expand(4, 6), ys[:, None].expand(4, 6)]).expand(2, 2, 4, 6)
    expected = F.max_pool2d(torch.relu(stage.bn(F.conv2d(torch.cat([x, coords], 1), stage.conv.weight, padding=1))), 2)
    torch.testing.assert_close(stage(x), expected)
    assert stage.conv.in_channels == 4 and ConvStage(2, 3).conv.in_channels == 2


def test_coords_let_the_pooled_vector_tell_left_from_right() -> None:
    # The same blob on the left or on the right: without coordinates the conv stack is translation-equivariant
    # and zero padding is all that separates the pooled vectors; with coordinates they differ by design.
    left, right = torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    left[..., 6:10, 2:6] = 1.0
    right[..., 6:10, 10:14] = 1.0
    torch.manual_seed(0)
    enc = build_encoder("cnn", in_channels=1, widths=(4,), kernel_size=1, coords=True).eval()
    plain = build_encoder("cnn", in_channels=1, widths=(4,), kernel_size=1).eval()
    assert not torch.allclose(enc(left), enc(right), atol=1e-3)
    torch.testing.assert_close(plain(left), plain(right))  # 1x1 convs see no padding: identical vectors
    with pytest.raises(ConfigError, match="coords must be true or false"):
        build_encoder("cnn", coords="yes")
