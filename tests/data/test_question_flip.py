"""QuestionFlip: mirrored image + question batches whose answers stay true, one draw per image."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.data.augment import QuestionFlip, build_question_flip
from cnnlstm.data.collate import pad_collate
from cnnlstm.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_images import make_vqa  # noqa: E402


def _batch(bundle, rows: list[int]) -> dict:
    return pad_collate([bundle.train[i] for i in rows])


def _square_on_left(image: torch.Tensor) -> bool:
    """Whether the one coloured square of a white user_images scene lies on the left half (from the pixels)."""
    coloured = (image < image.max()).any(dim=0)  # (H, W): the square's pixels
    xs = coloured.nonzero()[:, 1].float()
    return bool(xs.mean() < image.shape[-1] / 2)


def _left_right_vqa(root: Path) -> Path:
    """make_vqa's folder with a "right?" question beside every "left?" one (answers from the drawn squares)."""
    make_vqa(root, n_train=8, n_test=2)
    lines = (root / "train.csv").read_text().splitlines()
    extra = [line.replace("on the left?,yes", "on the right?,NO").replace("on the left?,no", "on the right?,yes")
             .replace(",NO", ",no") for line in lines[1:] if "left" in line]
    (root / "train.csv").write_text("\n".join(lines + extra) + "\n")
    return root


def test_flipped_questions_are_answered_by_the_flipped_images(tmp_path: Path) -> None:
    bundle = load_dataset(f"vqa:{_left_right_vqa(tmp_path / 'v')}")
    vocab, answers = bundle.info.extras["vocab"], bundle.info.extras["answers"]
    left, right = vocab.index("left"), vocab.index("right")
    batch = _batch(bundle, list(range(len(bundle.train))))
    for b in range(len(batch["y"])):  # the folder itself is right: answers agree with the squares' pixels
        words = batch["sequence"][b].tolist()
        if left in words or right in words:
            assert answers[int(batch["y"][b])] == ("yes" if _square_on_left(batch["image"][b]) == (left in words)
                                                   else "no")
    flip = build_question_flip([["left", "right"]], vocab, answers)
    flip.p = 1.0
    out = flip(batch)
    asked = 0
    for b in range(len(batch["y"])):
        torch.testing.assert_close(out["image"][b], batch["image"][b].flip(-1))
        words, before = out["sequence"][b].tolist(), batch["sequence"][b].tolist()
        if left in words or right in words:  # the question about the mirrored image, answered from its pixels
            asked += 1
            assert (left in words) == (right in before)
            truth = _square_on_left(out["image"][b]) == (left in words)
            assert answers[int(out["y"][b])] == ("yes" if truth else "no")
        else:  # a colour question: the same words and answer
            assert words == before and out["y"][b] == batch["y"][b]
    assert asked == 16


def test_a_word_without_its_partner_keeps_its_rows_unflipped(tmp_path: Path) -> None:
    bundle = load_dataset(f"vqa:{make_vqa(tmp_path / 'v', n_train=8, n_test=2)}")  # asks "left?" only
    vocab, answers = bundle.info.extras["vocab"], bundle.info.extras["answers"]
    flip = build_question_flip([["left", "right"]], vocab, answers)
    flip.p = 1.0
    assert flip.token_swaps == {} and flip.keep_tokens == (vocab.index("left"),)
    batch = _batch(bundle, list(range(len(bundle.train))))
    out = flip(batch)
    asks_side = (batch["sequence"] == vocab.index("left")).any(dim=1)
    flipped = ~torch.isclose(out["image"], batch["image"]).flatten(1).all(dim=1)
    assert torch.equal(flipped, ~asks_side) and torch.equal(out["y"], batch["y"])  # colour questions flip
    # The mirrored copies are other images, so a model encoding each id once never pairs a row with the wrong copy.
    assert torch.equal(out["image_id"], torch.where(flipped, -1 - batch["image_id"], batch["image_id"]))


def test_one_draw_per_image_and_rows_that_cannot_be_flipped_stay() -> None:
    g = torch.Generator().manual_seed(0)
    flip = QuestionFlip({3: 4, 4: 3}, {0: 1, 1: 0}, keep_tokens=(5,), p=0.5, generator=g)  # 5: no partner
    image_id = torch.arange(40).repeat_interleave(3)  # 40 images, 3 questions each
    image = torch.rand(40, 1, 2, 5)[image_id]
    sequence = torch.tensor([[2, 3, 0], [2, 4, 6], [6, 3, 0]]).repeat(40, 1)
    out = flip({"image": image, "sequence": sequence, "y": torch.tensor([0, 1, 2]).repeat(40), "image_id": image_id})
    flipped = ~torch.isclose(out["image"], image).flatten(1).all(dim=1)  # (120,)
    per_image = flipped.view(40, 3)
    assert per_image[:, 0].any() and not per_image[:, 0].all()  # p = 0.5 flips some images, not all
    assert torch.equal(per_image[:, 0], per_image[:, 1])  # both flippable questions of an image: one draw
    assert torch.equal(per_image[:, 0], per_image[:, 2])  # and its third question too
    assert torch.equal(out["sequence"][flipped][:, 1], torch.tensor([4, 3, 4]).repeat(int(per_image[:, 0].sum())))
    assert torch.equal(out["y"][flipped], torch.tensor([1, 0, 2]).repeat(int(per_image[:, 0].sum())))
    assert torch.equal(out["sequence"][~flipped], sequence[~flipped])
    assert torch.equal(out["image_id"], torch.where(flipped, -1 - image_id, image_id))
    # A question that cannot be flipped (token 5 has no partner) stays; the image's other questions still flip.
    blocked = sequence.clone()
    blocked[2::6, 0] = 5  # the third question of every other image
    out = flip({"image": image, "sequence": blocked, "y": torch.tensor([0, 1, 2]).repeat(40), "image_id": image_id})
    flipped = ~torch.isclose(out["image"], image).flatten(1).all(dim=1).view(20, 6)
    assert not flipped[:, 2].any() and flipped[:, 0].any() and torch.equal(flipped[:, 0], flipped[:, 1])
    flip.eval()
    assert flip({"image": image, "sequence": sequence, "y": out["y"]})["image"] is image  # evaluation: untouched


def test_build_question_flip_reads_the_vocabulary_and_checks_the_spec() -> None:
    vocab = ["<pad>", "<unk>", "is", "it", "left", "leftmost", "right"]
    flip = build_question_flip({"swap": [["left", "right"], ["leftmost", "rightmost"], ["east", "west"]], "p": 0.3},
                               vocab, ["Left", "no", "right", "yes"])
    assert flip.token_swaps == {4: 6, 6: 4} and flip.answer_swaps == {0: 2, 2: 0}
    assert flip.keep_tokens == (5,)  # "leftmost" without "rightmost": its questions are never flipped
    assert flip.p == 0.3
    for bad in ("left,right", [["left"]], {"swap": [["a", "b"]], "prob": 1}, {"swap": [["a", "b"]], "p": 2}):
        with pytest.raises(ConfigError, match="question_flip"):
            build_question_flip(bad, vocab, [])


def test_question_flip_needs_vqa_data() -> None:
    from cnnlstm.engine.fit import fit

    with pytest.raises(ConfigError, match="needs image \\+ question data"):
        fit("gunpoint", overrides=["data.augment={question_flip: [[left, right]]}", "trainer.max_epochs=1"],
            test=False, verbose=False)
