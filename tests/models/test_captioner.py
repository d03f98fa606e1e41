"""Show-Attend-Tell captioner: teacher forcing, attention, generation against a reference greedy loop."""

from __future__ import annotations

import pytest
import torch

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.models import create_model
from cnnlstm.models.captioner import END, PAD, START, attention_regulariser

V = 12
SMALL = dict(vocab_size=V, in_channels=3, embedding_dim=8, hidden_size=16, attention_size=8,
             encoder_kwargs={"widths": (4, 8)})


def _model(**overrides) -> torch.nn.Module:
    return create_model("captioner", **{**SMALL, **overrides})


def _captions() -> torch.Tensor:
    return torch.tensor([[START, 5, 6, 7, END], [START, 8, END, PAD, PAD]])


def test_teacher_forced_shapes_and_attention_sums_to_one() -> None:
    model = _model().eval()
    images = torch.rand(2, 3, 32, 32)  # 2 stages -> an 8x8 grid, 64 cells
    with torch.no_grad():
        logits, attention = model(images, _captions(), return_attention=True)
        annotations = model.encode(images)
    assert logits.shape == (2, 4, V)
    assert annotations.shape == (2, 64, 8)
    assert attention.shape == (2, 4, 64)
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=2), torch.ones(2, 4))
    torch.testing.assert_close(model(images, _captions()), logits)


def test_features_are_the_mean_annotation_of_the_encoder_grid() -> None:
    model = _model().eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        grid = model.encoder.forward_grid(images)  # (B, D, h, w)
        feats = model.forward_features(images)
    torch.testing.assert_close(feats, grid.mean(dim=(2, 3)))
    assert feats.shape == (2, model.num_features)


def test_prediction_at_step_t_uses_only_words_up_to_t() -> None:
    """Teacher forcing is causal: truncating the caption leaves the earlier step scores unchanged."""
    model = _model().eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        full = model(images, _captions())
        for length in (2, 3, 4):
            torch.testing.assert_close(model(images, _captions()[:, :length]), full[:, : length - 1])


def test_every_trainable_parameter_gets_a_gradient() -> None:
    model = _model(dropout=0.1).train()
    logits, attention = model(torch.rand(2, 3, 32, 32), _captions(), return_attention=True)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), _captions()[:, 1:].flatten(), ignore_index=PAD)
    loss = loss + attention_regulariser(attention, _captions()[:, 1:] != PAD)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_encoder_gets_no_gradient_but_the_decoder_does() -> None:
    model = _model(freeze="all").train()
    model(torch.rand(2, 3, 32, 32), _captions()).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert model.out.weight.grad is not None


def _reference_greedy(model: torch.nn.Module, images: torch.Tensor, max_length: int) -> list[list[int]]:
    """Greedy decoding by re-running the teacher-forced forward on the growing caption (independent of generate)."""
    results = []
    for image in images:
        caption = [START]
        for _ in range(max_length):
            logits = model(image.unsqueeze(0), torch.tensor([caption + [PAD]]))[0, -1]  # scores after the last word
            logits[[PAD, START]] = float("-inf")
            token = int(logits.argmax())
            if token == END:
                break
            caption.append(token)
        results.append(caption[1:])
    return results


def _varied_images(n: int) -> torch.Tensor:
    # Different brightness per image, so an untrained model writes captions of different lengths.
    return torch.rand(n, 3, 32, 32) * torch.linspace(0.2, 6.0, n).view(n, 1, 1, 1)


def test_beam_one_equals_greedy_exactly() -> None:
    model = _model().eval()
    images = _varied_images(4)
    lengths = set()
    for end_bias in (-0.5, 0.0, 0.5, 1.0):  # from long captions to short ones
        with torch.no_grad():
            model.out.bias[END] = end_bias
            expected = _reference_greedy(model, images, max_length=6)
            got = model.generate(images, max_length=6, beam_size=1)
        assert got == expected
        lengths |= {len(x) for x in got}
    assert len(lengths - {0, 6}) > 0 and len(lengths) > 2  # captions that ended early, at several lengths


def test_beam_search_scores_at_least_as_well_as_greedy_and_emits_valid_words() -> None:
    model = _model().eval()
    images = _varied_images(4)

    def log_prob(image: torch.Tensor, words: list[int]) -> float:
        caption = torch.tensor([[START, *words, END]])
        logits = model(image.unsqueeze(0), caption)[0]
        logits[:, [PAD, START]] = float("-inf")
        return float(torch.log_softmax(logits, -1).gather(1, caption[0, 1:, None]).sum())

    with torch.no_grad():
        greedy = model.generate(images, max_length=6, beam_size=1)
        beam = model.generate(images, max_length=6, beam_size=4, length_penalty=0.0)
        for image, g, b in zip(images, greedy, beam, strict=True):
            assert all(3 <= t < V for t in b)  # no <pad>, <start> or <end> in the words
            assert log_prob(image, b) >= log_prob(image, g) - 1e-5


def test_generation_without_end_returns_max_length_words() -> None:
    model = _model().eval()
    with torch.no_grad():
        model.out.bias[END] = -1e4  # <end> is never the best, nor within any beam
    images = torch.rand(2, 3, 32, 32)
    for beam_size in (1, 3):
        out = model.generate(images, max_length=7, beam_size=beam_size)
        assert [len(x) for x in out] == [7, 7]
        assert all(END not in x and PAD not in x and START not in x for x in out)


def test_attention_regulariser_matches_the_formula() -> None:
    attention = torch.softmax(torch.randn(2, 3, 5), dim=-1)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    expected = ((1 - attention[0].sum(0)) ** 2).sum() + ((1 - attention[1, :1].sum(0)) ** 2).sum()
    torch.testing.assert_close(attention_regulariser(attention, mask), expected / 2)


def test_shape_errors_name_the_layout() -> None:
    model = _model()
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ShapeError, match=r"captioner expects images \(B, C, H, W\) with C=3"):
        model(torch.rand(2, 1, 32, 32), _captions())
    with pytest.raises(ShapeError, match=r"captions \(B, L\) with B=2"):
        model(images, _captions()[0])
    with pytest.raises(ShapeError, match="L >= 2"):
        model(images, _captions()[:, :1])
    with pytest.raises(ShapeError, match="integer token ids"):
        model(images, _captions().float())
    with pytest.raises(ConfigError, match="vocab_size"):
        _model(vocab_size=4)
