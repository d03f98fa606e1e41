"""save_encoder / load_encoder / build_encoder(pretrained=path): the two-stage recipe (pretrain, save, load frozen)."""

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from cnnlstm.encoders import build_encoder, load_encoder, save_encoder
from cnnlstm.errors import ConfigError, WeightsError


def _trained_cnn() -> nn.Module:
    enc = build_encoder("cnn", in_channels=1, widths=(4, 8), dropout=0.1)
    enc.train()
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    for _ in range(2):  # move weights and BN statistics away from their initial values
        opt.zero_grad()
        enc(torch.rand(4, 1, 16, 16)).pow(2).sum().backward()
        opt.step()
    enc.pretrained_config = {"mean": (0.1307,), "std": (0.3081,), "input_size": (1, 16, 16)}
    return enc.eval()


def test_round_trip_through_build_encoder_and_load_encoder(tmp_path: Path) -> None:
    enc = _trained_cnn()
    path = save_encoder(enc, tmp_path / "digits" / "digit_cnn.safetensors")
    x = torch.rand(2, 1, 16, 16)

    again = build_encoder("cnn", in_channels=1, widths=(4, 8), pretrained=path, freeze="all")
    assert again.load_report.missing == [] and again.load_report.unexpected == []
    assert again.pretrained_config == enc.pretrained_config  # the normalisation the weights were trained with
    torch.testing.assert_close(again.eval()(x), enc(x), rtol=0, atol=0)

    rebuilt = load_encoder(path, freeze=1)  # options come from the file
    assert rebuilt.frozen == 1 and [s[0].conv.out_channels for s in rebuilt.stage_modules()] == [4, 8]
    torch.testing.assert_close(rebuilt.eval()(x), enc(x), rtol=0, atol=0)


def test_loaded_frozen_encoder_trains_nothing_inside_a_model(tmp_path: Path) -> None:
    path = save_encoder(_trained_cnn(), tmp_path / "digit_cnn.safetensors")
    enc = load_encoder(path, freeze="all")
    model = nn.Sequential(enc, nn.Linear(8, 3)).train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(torch.rand(4, 1, 16, 16)).sum().backward()
    opt.step()
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=k)


def test_mismatched_architecture_names_key_and_shapes(tmp_path: Path) -> None:
    path = save_encoder(_trained_cnn(), tmp_path / "digit_cnn.safetensors")
    with pytest.raises(WeightsError, match=r"'stages.0.conv.weight': file \(4, 1, 3, 3\) vs model \(4, 3, 3, 3\)"):
        build_encoder("cnn", in_channels=3, widths=(4, 8), pretrained=path)
    with pytest.raises(WeightsError, match="unset"):
        build_encoder("cnn", in_channels=1, widths=(4, 8, 16), pretrained=path)


def test_timm_encoder_round_trip_and_bare_timm_checkpoint(tmp_path: Path) -> None:
    enc = build_encoder("timm:resnet10t", in_channels=1).eval()
    x = torch.rand(2, 1, 32, 32)
    path = save_encoder(enc, tmp_path / "r10.safetensors")
    torch.testing.assert_close(load_encoder(path).eval()(x), enc(x), rtol=0, atol=0)

    # a plain timm checkpoint, classifier included, as published on the hub
    full = timm.create_model("resnet10t", in_chans=1, num_classes=10)
    torch.save(full.state_dict(), tmp_path / "pytorch_model.bin")
    from_bare = build_encoder("timm:resnet10t", in_channels=1, pretrained=tmp_path / "pytorch_model.bin").eval()
    full.reset_classifier(0)
    torch.testing.assert_close(from_bare(x), full.eval()(x))


def test_save_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=".safetensors"):
        save_encoder(build_encoder("cnn"), tmp_path / "x.pth")
    torch.save(build_encoder("cnn").state_dict(), tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="not written by save_encoder"):
        load_encoder(tmp_path / "plain.pth")


def test_encoder_built_directly_saves_weights_but_cannot_be_rebuilt_alone(tmp_path: Path) -> None:
    from cnnlstm.encoders import SmallCNN

    enc = SmallCNN(in_channels=1, widths=(4, 8)).eval()
    path = save_encoder(enc, tmp_path / "direct.safetensors")
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(build_encoder("cnn", in_channels=1, widths=(4, 8), pretrained=path).eval()(x), enc(x))
    with pytest.raises(WeightsError, match="not written by save_encoder"):
        load_encoder(path)
