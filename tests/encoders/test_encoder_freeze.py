"""Freezing: requires_grad off, frozen modules kept in eval mode through a parent's .train(), stage counting."""

import pytest
import torch
from torch import nn

from cnnlstm.encoders import build_encoder
from cnnlstm.errors import ConfigError


def _bn_stats(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in module.named_buffers() if "running" in n]


@pytest.mark.parametrize(
    ("freeze", "trainable_stages"), [("none", [0, 1, 2]), ("all", []), (0, []), (1, [2]), (2, [1, 2])]
)
def test_cnn_freeze_grads(freeze: str | int, trainable_stages: list[int]) -> None:
    enc = build_encoder("cnn", in_channels=1, widths=(4, 8, 16), freeze=freeze)
    for i, stage in enumerate(enc.stages):
        assert all(p.requires_grad == (i in trainable_stages) for p in stage.parameters())
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    enc(x).sum().backward()
    for i, stage in enumerate(enc.stages):
        assert all((p.grad is not None) == (i in trainable_stages) for p in stage.parameters())
    assert x.grad is not None  # gradients still reach the input through frozen stages (e.g. for saliency)


def test_frozen_stages_stay_in_eval_mode_inside_a_training_parent() -> None:
    enc = build_encoder("cnn", in_channels=3, widths=(4, 8, 16), dropout=0.5, freeze=1)
    parent = nn.Sequential(enc, nn.Linear(16, 2))
    parent.train()
    assert parent.training and enc.training and parent[1].training
    assert [s.training for s in enc.stages] == [False, False, True]
    assert not enc.stages[0].bn.training and not enc.stages[1].drop.training

    frozen_before = _bn_stats(enc.stages[:2])
    trained_before = _bn_stats(enc.stages[2])
    x = torch.rand(2, 3, 16, 16)
    parent(x)
    for before, after in zip(frozen_before, _bn_stats(enc.stages[:2]), strict=True):
        torch.testing.assert_close(before, after, rtol=0, atol=0)  # frozen BN statistics did not drift
    assert any(not torch.equal(b, a) for b, a in zip(trained_before, _bn_stats(enc.stages[2]), strict=True))

    # dropout is off in frozen stages: their output is deterministic even in training mode
    first_two = enc.stages[:2]
    torch.testing.assert_close(first_two(x), first_two(x))
    parent.eval()
    assert not any(m.training for m in parent.modules())
    parent.train()
    assert [s.training for s in enc.stages] == [False, False, True]


def test_freeze_all_matches_eval_even_in_training_mode() -> None:
    enc = build_encoder("cnn", in_channels=3, widths=(4, 8), dropout=0.5, freeze="all")
    nn.Sequential(enc).train()
    x = torch.rand(2, 3, 16, 16)
    y_train = enc(x)
    enc.eval()
    torch.testing.assert_close(y_train, enc(x))
    assert not any(p.requires_grad for p in enc.parameters())


def test_refreeze_replaces_the_previous_setting() -> None:
    enc = build_encoder("cnn", in_channels=3, freeze="all").train()
    enc.freeze(1)
    assert [all(p.requires_grad for p in s.parameters()) for s in enc.stages] == [False, False, True]
    enc.freeze("none")
    assert all(p.requires_grad for p in enc.parameters())
    assert all(m.training for m in enc.modules())
    assert enc.frozen == "none"


@pytest.mark.parametrize("spec", [4, -1, "some", 1.5, True])
def test_bad_freeze_specs(spec: object) -> None:
    with pytest.raises(ConfigError, match="freeze"):
        build_encoder("cnn", freeze=spec)


def test_timm_stages_follow_feature_info() -> None:
    enc = build_encoder("timm:resnet10t", in_channels=3)
    stage_names = [
        [n for n, m in enc.model.named_children() if any(m is s for s in stage)] for stage in enc.stage_modules()
    ]
    assert stage_names == [
        ["conv1", "bn1", "act1"],
        ["maxpool", "layer1"],
        ["layer2"],
        ["layer3"],
        ["layer4", "global_pool", "fc"],
    ]
    # every parameter lies in exactly one stage
    in_stages = [id(p) for stage in enc.stage_modules() for m in stage for p in m.parameters()]
    assert sorted(in_stages) == sorted(id(p) for p in enc.parameters())


def test_timm_stages_inside_a_container() -> None:
    # EfficientNet's stage boundaries (blocks.0, blocks.1, ...) lie inside the `blocks` Sequential
    enc = build_encoder("timm:tf_efficientnet_lite0")
    stages = enc.stage_modules()
    assert len(stages) == enc.num_stages == 5
    blocks = enc.model.blocks
    assert stages[3] == [blocks[3], blocks[4]]
    assert stages[4] == [blocks[5], blocks[6], enc.model.conv_head, enc.model.bn2, enc.model.global_pool,
                         enc.model.classifier]  # fmt: skip


@pytest.mark.parametrize(
    ("freeze", "frozen_prefixes"), [("none", ()), ("all", ("",)), (2, ("conv1.", "bn1.", "layer1.", "layer2."))]
)
def test_timm_freeze_through_a_parent(freeze: str | int, frozen_prefixes: tuple[str, ...]) -> None:
    enc = build_encoder("timm:resnet10t", in_channels=1, freeze=freeze)
    parent = nn.Sequential(enc, nn.Linear(enc.out_features, 2)).train()
    for name, p in enc.model.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    for name, m in enc.model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.training == (not (name + ".").startswith(frozen_prefixes)), name
    before = _bn_stats(enc.model.layer1)
    parent(torch.rand(2, 1, 32, 32)).sum().backward()
    changed = any(not torch.equal(b, a) for b, a in zip(before, _bn_stats(enc.model.layer1), strict=True))
    assert changed == (freeze == "none")


def test_parameters_outside_stage_modules_freeze_with_the_first_stage() -> None:
    enc = build_encoder("timm:vit_tiny_patch16_224", img_size=32, freeze="all")
    assert not any(p.requires_grad for p in enc.parameters())  # cls_token and pos_embed included
    enc.freeze(1)
    assert not enc.model.cls_token.requires_grad and not enc.model.pos_embed.requires_grad
    assert all(p.requires_grad for p in enc.model.blocks[-1].parameters())
    assert not any(p.requires_grad for p in enc.model.blocks[-2].parameters())
    enc.freeze("none")
    assert all(p.requires_grad for p in enc.parameters())
