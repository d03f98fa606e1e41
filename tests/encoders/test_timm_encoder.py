"""The timm wrapper: pooled vectors equal timm's own pre-logits, grids in NCHW whatever the backbone's layout."""

import pytest
import timm
import torch

from cnnlstm.encoders import TimmEncoder, build_encoder
from cnnlstm.errors import ConfigError, ShapeError


def test_resnet_pooled_and_grid_match_timm() -> None:
    enc = build_encoder("timm:resnet10t", in_channels=3).eval()
    assert isinstance(enc, TimmEncoder)
    ref = timm.create_model("resnet10t", num_classes=0).eval()
    ref.load_state_dict(enc.model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref(x))
        grid = enc.forward_grid(x)
        torch.testing.assert_close(grid, ref.forward_features(x))
        torch.testing.assert_close(enc(x), grid.mean(dim=(2, 3)))  # resnet pools by averaging the grid
    assert enc.out_features == enc.grid_features == 512
    assert grid.shape == (2, 512, 1, 1)


def test_grey_input_and_pretrained_config() -> None:
    enc = build_encoder("timm:resnet10t", in_channels=1)
    assert enc.model.conv1[0].weight.shape[1] == 1
    assert enc(torch.rand(2, 1, 64, 64)).shape == (2, 512)
    assert enc.forward_grid(torch.rand(2, 1, 64, 64)).shape == (2, 512, 2, 2)
    cfg = enc.pretrained_config
    assert cfg["input_size"][0] == 1 and len(cfg["mean"]) == len(cfg["std"]) == 1
    assert cfg["mean"][0] == pytest.approx(sum((0.485, 0.456, 0.406)) / 3)
    with pytest.raises(ShapeError, match=r"encoder 'timm:resnet10t' expects images .* C=1, got \(2, 3, 32, 32\)"):
        enc(torch.rand(2, 3, 32, 32))


def test_pre_logits_head_wider_than_the_grid() -> None:
    # MobileNetV3 applies a 1x1 conv after pooling: the pooled vector is wider than the grid's channels
    enc = build_encoder("timm:mobilenetv3_small_050").eval()
    x = torch.rand(2, 3, 32, 32)
    assert enc(x).shape == (2, enc.out_features)
    assert enc.forward_grid(x).shape[1] == enc.grid_features
    assert enc.out_features != enc.grid_features


def test_token_model_grid_is_nchw() -> None:
    enc = build_encoder("timm:vit_tiny_patch16_224", img_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    assert enc(x).shape == (2, 192)
    grid = enc.forward_grid(x)
    assert grid.shape == (2, 192, 2, 2)
    tokens = enc.model.forward_features(x)  # (N, 1 + 4, D): class token, then patches in row-major order
    torch.testing.assert_close(grid.flatten(2).transpose(1, 2), tokens[:, 1:])
    torch.testing.assert_close(enc.forward_grid(x), grid)  # later calls go straight to the spatial layout


def test_timm_kwargs_are_passed_and_checked() -> None:
    enc = build_encoder("timm:resnet10t", drop_rate=0.3)
    assert enc.model.drop_rate == 0.3
    with pytest.raises(ConfigError, match="not_an_option"):
        build_encoder("timm:resnet10t", not_an_option=1)
