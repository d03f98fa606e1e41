"""CRNN: column geometry, CTC training on a tiny problem, decoding and errors."""

from __future__ import annotations

import pytest
import torch

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.decoding import ctc_greedy_decode
from cnnlstm.models import create_model

SMALL = dict(num_classes=5, in_channels=1, hidden_size=16, widths=(4, 8, 8, 8, 16, 16))


def _model(**overrides) -> torch.nn.Module:
    return create_model("crnn", **{**SMALL, **overrides})


@pytest.mark.parametrize("width", [4, 7, 37, 100])
def test_output_lengths_match_the_columns_forward_produces(width: int) -> None:
    model = _model().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 32, width))
    assert out.shape == (2, width // 4, 5)
    assert model.output_lengths(torch.tensor([width])).tolist() == [out.shape[1]]


def test_32x100_gives_25_columns_and_features_feed_the_head() -> None:
    model = _model().eval()
    x = torch.rand(2, 1, 32, 100)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape == (2, 25, model.num_features) == (2, 25, 32)
    torch.testing.assert_close(model.forward_head(feats), out)


def test_taller_images_and_rgb_are_configurable() -> None:
    model = _model(in_channels=3, image_height=64).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 48)).shape == (1, 12, 5)


def test_every_column_sees_the_whole_line() -> None:
    """The BiLSTM gives the first column context from the far right of the image (and vice versa)."""
    model = _model().eval()
    x = torch.rand(1, 1, 32, 64, requires_grad=True)
    model(x)[0, 0].sum().backward()
    assert x.grad[..., -4:].abs().sum() > 0  # the last 4 pixel columns reach output column 0


def test_wrong_height_names_image_height() -> None:
    model = _model()
    with pytest.raises(ShapeError, match="image_height") as info:
        model(torch.rand(2, 1, 30, 100))
    assert "(B, C, H, W)" in str(info.value) and "H=32" in str(info.value)
    with pytest.raises(ShapeError, match="C=1"):
        model(torch.rand(2, 3, 32, 100))
    with pytest.raises(ShapeError, match="crnn"):
        model(torch.rand(1, 32, 100))
    with pytest.raises(ShapeError, match="4 pixels wide"):
        model(torch.rand(1, 1, 32, 3))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        (dict(image_height=24), "multiple of 16"),
        (dict(widths=(4, 8, 8)), "6 convolutions"),
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_bad_config_is_a_config_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _model(**kwargs)


@pytest.mark.slow
def test_learns_to_read_two_lines_with_ctc_and_decodes_them() -> None:
    """Overfit two random 'lines' to their label sequences (one with a repeat) with CTC, then read them back."""
    torch.manual_seed(0)
    model = _model(dropout=0.0)
    images = torch.rand(2, 1, 32, 48)  # 12 columns each
    targets = torch.tensor([[1, 2, 3], [4, 4, 2]])  # "4 4" needs a blank between the repeats
    target_lengths = torch.tensor([3, 3])
    input_lengths = model.output_lengths(torch.tensor([48, 48]))
    ctc = torch.nn.CTCLoss(blank=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        log_probs = torch.log_softmax(model(images), dim=-1)  # (B, W', K)
        loss = ctc(log_probs.transpose(0, 1), targets, input_lengths, target_lengths)  # CTCLoss wants (W', B, K)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.1
    assert model.decode(images) == [[1, 2, 3], [4, 4, 2]]
    assert model.decode(images, beam_size=4) == [[1, 2, 3], [4, 4, 2]]


def test_decode_respects_image_widths() -> None:
    model = _model().eval()
    x = torch.rand(2, 1, 32, 40)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(x), dim=-1)
    expected = ctc_greedy_decode(log_probs, torch.tensor([10, 2]))
    assert model.decode(x, widths=torch.tensor([40, 8])) == expected
    with pytest.raises(ConfigError, match="beam_size"):
        model.decode(x, beam_size=0)


def test_padded_lines_decode_as_each_line_alone() -> None:
    """Lines of unequal widths, right-padded (with noise) into one batch, read as each line read alone."""
    torch.manual_seed(3)
    model = _model(num_classes=4).eval()
    for module in model.modules():  # non-trivial statistics, so a leak of padding would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    widths = [61, 24, 45, 9]
    lines = [torch.rand(1, 1, 32, w) for w in widths]
    batch = torch.rand(len(widths), 1, 32, max(widths))  # the padding holds noise, not zeros
    for i, line in enumerate(lines):
        batch[i, ..., : widths[i]] = line[0]
    lengths = torch.tensor(widths)
    with torch.no_grad():
        padded = model(batch, lengths)
        for i, line in enumerate(lines):
            alone = model(line)
            torch.testing.assert_close(padded[i : i + 1, : alone.shape[1]], alone, rtol=1e-5, atol=1e-5)
    assert model.decode(batch, widths=lengths) == [model.decode(line)[0] for line in lines]
    assert model.decode(batch, beam_size=3, widths=lengths) == [model.decode(line, beam_size=3)[0] for line in lines]
    # Without lengths the padding is read as ink: the scores of the narrow lines change.
    with torch.no_grad():
        assert not torch.allclose(model(batch)[1, :6], padded[1, :6], atol=1e-4)
