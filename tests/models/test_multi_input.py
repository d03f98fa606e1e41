"""multi_input: every fusion mode, tokens and series, padding invariance, grid routing, freezing, errors."""

import pytest
import torch
from torch import nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.fusion import FUSION_MODES, SPATIAL_FUSION_MODES
from cnnlstm.models import create_model

TINY = dict(
    num_classes=4, hidden_size=8, embedding_dim=6, encoder_kwargs={"widths": (4, 8)}, image_size=16, head_hidden_size=16
)


def _model(**overrides) -> nn.Module:
    kwargs = {**TINY, **overrides}
    if "sequence_features" not in kwargs:
        kwargs.setdefault("vocab_size", 10)
    return create_model("multi_input", **kwargs)


def _check_padding_invariance(model: nn.Module) -> None:
    inputs = model.example_input(batch_size=3)
    with torch.no_grad():
        out = model(**inputs)
        assert out.shape == (3, 4)
        for b, length in enumerate(inputs["lengths"].tolist()):
            alone = model(inputs["image"][b : b + 1], inputs["sequence"][b : b + 1, :length])
            torch.testing.assert_close(out[b : b + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", FUSION_MODES)
def test_every_fusion_mode_with_tokens(fusion: str) -> None:
    kwargs = {"fusion_kwargs": {"num_heads": 2}} if fusion == "cross_attention" else {}
    model = _model(fusion=fusion, **kwargs).eval()
    assert model.use_grid == (fusion in SPATIAL_FUSION_MODES)
    _check_padding_invariance(model)
    assert model.forward_features(**model.example_input()).shape == (2, model.num_features)


def test_numeric_series_branch_bidirectional() -> None:
    model = _model(sequence_features=3, bidirectional=True, fusion="gated", head_hidden_size=0).eval()
    inputs = model.example_input(batch_size=3)
    assert inputs["sequence"].shape == (3, 5, 3) and inputs["sequence"].is_floating_point()
    _check_padding_invariance(model)


def test_grid_fusion_sees_the_spatial_map() -> None:
    model = _model(fusion="film").eval()
    calls: list[tuple] = []
    model.fusion.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    inputs = model.example_input(batch_size=2)
    model(**inputs)
    grid = model.encoder.forward_grid(inputs["image"])
    assert grid.dim() == 4 and calls == [tuple(grid.shape)]
    pooled = _model(fusion="film", image_features="pooled")
    assert not pooled.use_grid and pooled.fusion.impl.grid is False


def test_freeze_all_keeps_encoder_bn_in_eval_and_without_gradients() -> None:
    model = _model(freeze="all", fusion="cross_attention", fusion_kwargs={"num_heads": 2}).train()
    assert all(not m.training for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    model(**model.example_input()).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.embedding.weight.grad is not None
    assert torch.equal(model.embedding.weight.grad[0], torch.zeros(6))  # padding_idx 0 never learns


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="exactly one of vocab_size"):
        create_model("multi_input", num_classes=3)
    with pytest.raises(ConfigError, match="exactly one of vocab_size"):
        create_model("multi_input", num_classes=3, vocab_size=5, sequence_features=2)
    with pytest.raises(ConfigError, match="image_features"):
        _model(image_features="spatial")
    with pytest.raises(ConfigError, match="grid input needs one of"):
        _model(fusion="concat", image_features="grid")
    with pytest.raises(ConfigError, match="did you mean"):
        _model(fusion="flim")


def test_wrong_inputs_say_what_to_change() -> None:
    model = _model()
    inputs = model.example_input(batch_size=2)
    image, sequence = inputs["image"], inputs["sequence"]
    with pytest.raises(ShapeError, match=r"multi_input expects image \(B, C, H, W\) with C=3, got \(3, 16, 16\)"):
        model(image[0], sequence)
    with pytest.raises(ShapeError, match=r"token ids \(B, L\) int64"):
        model(image, sequence.float())
    with pytest.raises(ShapeError, match="vocab_size is 10"):
        model(image, sequence + 10)
    with pytest.raises(ShapeError, match="batch sizes must match"):
        model(image[:1], sequence)
    with pytest.raises(ShapeError, match=r"multi_input expects lengths in \[1, 5\]"):
        model(image, sequence, torch.tensor([6, 2]))
    series = _model(sequence_features=3)
    with pytest.raises(ShapeError, match=r"\(B, L, F\) with F=3"):
        series(image, torch.randn(2, 5, 2))


def test_feature_stage_feeds_that_stages_map_and_runs_no_later_stage() -> None:
    model = _model(fusion="cross_attention", fusion_kwargs={"num_heads": 2}, feature_stage=0,
                   encoder_kwargs={"widths": (4, 8, 16)}).eval()
    calls: list[tuple] = []
    model.fusion.register_forward_pre_hook(lambda m, args: calls.append(tuple(args[0].shape)))
    later = []
    model.encoder.stages[2].register_forward_hook(lambda *a: later.append(1))
    inputs = model.example_input(batch_size=2)
    with torch.no_grad():
        model(**inputs)
        stage0 = model.encoder.forward_stage(inputs["image"], 0)  # the reference: the encoder's own stage-0 map
    later.clear()
    with torch.no_grad():
        model(**inputs)
    assert calls[0] == tuple(stage0.shape) == (2, 4, 8, 8) and later == []  # 16x16 halved once; stage 2 never ran
    _check_padding_invariance(model)


def test_feature_stage_is_refused_where_it_cannot_apply() -> None:
    with pytest.raises(ConfigError, match="pooled image vector"):
        _model(fusion="product", feature_stage=0)
    with pytest.raises(ConfigError, match="feature stages 0..1"):
        _model(fusion="film", feature_stage=5)
    with pytest.raises(ConfigError, match="multi_input: freeze=1 .* feature_stage=0 reads stage 0"):
        _model(fusion="film", feature_stage=0, freeze=1)


@pytest.mark.parametrize("fusion", ["product", "film"])
def test_image_id_encodes_each_image_once_and_equals_encoding_every_row(fusion: str) -> None:
    torch.manual_seed(0)
    model = _model(fusion=fusion).eval()  # BN on running statistics: both paths see the same normalisation
    distinct = torch.rand(3, 3, 16, 16)
    image_id = torch.tensor([2, 0, 2, 1, 0, 2])  # three images, several questions each, in any order
    image = distinct[image_id]  # (6, 3, 16, 16)
    sequence = torch.randint(1, 10, (6, 5))
    lengths = torch.tensor([5, 3, 4, 5, 2, 1])
    sizes = []
    first_conv = next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    shared = model(image, sequence, lengths, image_id=image_id)
    assert sizes == [3]  # one CNN pass over the three distinct images
    shared.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    every_row = model(image, sequence, lengths)  # the reference: the CNN runs on all six rows
    assert sizes == [3, 6]
    every_row.sum().backward()
    torch.testing.assert_close(shared, every_row, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ShapeError, match="image_id must be"):
        model(image, sequence, lengths, image_id=image_id[:4])


def test_condition_stages_modulate_the_cnn_per_question_as_a_hand_computed_stage() -> None:
    torch.manual_seed(0)
    model = _model(fusion="film", condition_stages=1).eval()
    inputs = model.example_input(batch_size=3)
    plain = _model(fusion="film")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("stage_film")})
    plain.eval()
    with torch.no_grad():
        # gamma = beta = 0 at initialisation: the same outputs as the unconditioned model
        torch.testing.assert_close(model(**inputs), plain(**inputs))
        nn.init.normal_(model.stage_film.weight, std=0.5)
        nn.init.normal_(model.stage_film.bias, std=0.5)
        question = model.encode_sequence(inputs["sequence"], inputs["lengths"])  # (3, 8)
        gamma, beta = model.stage_film(question).split(4, dim=1)  # the first stage has 4 channels
        stage = model.encoder.stages[0]
        h = stage.bn(stage.conv(inputs["image"]))  # (3, 4, 16, 16)
        h = torch.relu((1 + gamma[:, :, None, None]) * h + beta[:, :, None, None])
        h = torch.nn.functional.max_pool2d(h, 2)  # (3, 4, 8, 8)
        expected = model.encoder.stages[1](h)  # the second stage is not modulated
        got = model.encode_image_conditioned(inputs["image"], question)
        torch.testing.assert_close(got, expected)
        assert not torch.allclose(model(**inputs), plain(**inputs))
        for b in range(3):  # each question modulates its own row only
            alone = model.encode_image_conditioned(inputs["image"][b:b + 1], question[b:b + 1])
            torch.testing.assert_close(got[b:b + 1], alone, rtol=1e-5, atol=1e-5)
    pooled = _model(fusion="product", condition_stages=2).eval()
    assert pooled(**pooled.example_input()).shape == (2, 4)


def test_condition_stages_refusals() -> None:
    with pytest.raises(ConfigError, match="the cnn has 2 stages"):
        _model(fusion="film", condition_stages=3)
    with pytest.raises(ConfigError, match="condition_stages must be an int"):
        _model(fusion="film", condition_stages=-1)
    with pytest.raises(ConfigError, match="set freeze: none"):
        _model(fusion="film", condition_stages=1, freeze="all")


def test_condition_input_appends_question_picked_masks_as_a_per_pixel_loop() -> None:
    torch.manual_seed(0)
    model = _model(fusion="film", condition_input=2, fusion_kwargs={"relate": True}).eval()
    inputs = model.example_input(batch_size=3)
    with torch.no_grad():
        question = model.encode_sequence(inputs["sequence"], inputs["lengths"])  # (3, 8)
        # zero-initialised: every mask is 0.5, so the CNN reads the image plus two constant maps
        half = torch.cat([inputs["image"], torch.full((3, 2, 16, 16), 0.5)], dim=1)
        torch.testing.assert_close(model.encode_image_conditioned(inputs["image"], question),
                                   model.encoder.forward_grid(half))
        nn.init.normal_(model.input_film.weight, std=0.5)
        nn.init.normal_(model.input_film.bias, std=0.5)
        masks = model.question_masks(inputs["image"], question)  # (3, 2, 16, 16)
        params = model.input_film(question).view(3, 2, -1)  # (3, k, P + 1)
        A, a = model.pixel_features.weight[:, :, 0, 0], model.pixel_features.bias  # (P, C), (P,)
        for b in range(3):
            for r, c in ((0, 0), (5, 11), (15, 15)):
                hidden = torch.relu(A @ inputs["image"][b, :, r, c] + a)  # (P,)
                for k in range(2):
                    expected = torch.sigmoid(params[b, k, :-1] @ hidden + params[b, k, -1])
                    torch.testing.assert_close(masks[b, k, r, c], expected)
        got = model.encode_image_conditioned(inputs["image"], question)
        torch.testing.assert_close(got, model.encoder.forward_grid(torch.cat([inputs["image"], masks], dim=1)))
        other = model.question_masks(inputs["image"], question.roll(1, dims=0))
        assert not torch.allclose(masks, other)  # another question picks other pixels
    _check_padding_invariance(model)
    pooled = _model(fusion="product", condition_input=1, condition_stages=1).eval()
    assert pooled(**pooled.example_input()).shape == (2, 4)


def test_condition_input_refusals() -> None:
    with pytest.raises(ConfigError, match="condition_input must be an int"):
        _model(fusion="film", condition_input=-1)
    with pytest.raises(ConfigError, match="needs the built-in encoder 'cnn'"):
        _model(fusion="film", condition_input=1, encoder="efficientnet_lite0", encoder_kwargs={})
