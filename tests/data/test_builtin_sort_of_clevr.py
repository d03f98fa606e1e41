"""builtin:sort_of_clevr: answers recomputed from the stored geometry; geometry checked against the pixels."""

import math

import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.errors import UnknownNameError

RGB = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "orange": (1, 156 / 255, 0),
       "gray": (128 / 255,) * 3, "yellow": (1, 1, 0)}


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("builtin:sort_of_clevr", seed=4, n_train=120, n_test=40)


def _expected(words: list[str], centres: list, shapes: list, colours: list[str]) -> tuple[str, int]:
    """Answer and qtype from the question's words and the scene, by plain reasoning over objects."""
    (subject,) = [colours.index(w) for w in words if w in colours]  # each question names one colour
    me = centres[subject]
    others = [k for k in range(6) if k != subject]
    dist = {k: math.dist(me, centres[k]) for k in others}
    shape_name = ["square", "circle"]
    text = " ".join(words)
    if text.startswith("what is the shape of the object closest"):
        return shape_name[shapes[min(others, key=dist.get)]], 1
    if text.startswith("what is the colour of the object furthest"):
        return colours[max(others, key=dist.get)], 1
    if text.startswith("how many"):
        return str(sum(s == shapes[subject] for s in shapes)), 1
    if text.startswith("what is the shape"):
        return shape_name[shapes[subject]], 0
    if "left" in words:
        return ("yes" if me[0] < 32 else "no"), 0
    if "top" in words:
        return ("yes" if me[1] < 32 else "no"), 0
    raise AssertionError(f"unexpected question {text!r}")


def test_answers_follow_from_the_scene_geometry(bundle) -> None:
    info = bundle.info
    assert bundle.kind == "vqa" and info.extras["vocab"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert info.model_kwargs == {"num_classes": len(info.extras["answers"]), "vocab_size": len(info.extras["vocab"]),
                                    "in_channels": 3, "image_size": (64, 64)}
    seen_families = set()
    for split in (bundle.train, bundle.test):
        meta = split.meta
        for i in range(len(split)):
            s = split[i]
            assert s["sequence"].dtype == torch.int64 and s["sequence"].min() >= 4  # words only, no specials
            words = [info.extras["vocab"][k] for k in s["sequence"].tolist()]
            scene = int(meta["scene_index"][i])
            answer, qtype = _expected(words, meta["centres"][scene].tolist(), meta["shapes"][scene].tolist(),
                                      info.extras["colours"])
            assert info.extras["answers"][int(s["y"])] == answer, " ".join(words)
            assert int(s["qtype"]) == qtype
            seen_families.add(int(meta["family"][i]))
    assert seen_families == set(range(6))
    assert bundle.train.fields["qtype"].data.float().mean() == pytest.approx(0.5)


def test_image_pixels_match_the_geometry(bundle) -> None:
    meta, colours = bundle.train.meta, bundle.info.extras["colours"]
    for i in range(0, len(bundle.train), 10):  # one question per scene
        image = bundle.train[i]["image"]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        scene = int(meta["scene_index"][i])
        painted = 0
        for k, colour in enumerate(colours):
            x, y = meta["centres"][scene, k].tolist()
            rgb = torch.tensor(RGB[colour], dtype=torch.float32)
            torch.testing.assert_close(image[:, y, x], rgb, atol=1e-6, rtol=0)  # the object's own colour
            corner = image[:, y - 5, x - 5]  # the top-left pixel of its 10x10 box
            is_square = meta["shapes"][scene, k] == 0
            assert torch.allclose(corner, rgb) == bool(is_square)
            painted += int((image - rgb[:, None, None]).abs().sum(0).lt(1e-6).sum())
        assert painted == int((image < 1).any(0).sum())  # nothing else is drawn on the white background


def test_deterministic_and_disjoint_splits() -> None:
    a = load_dataset("builtin:sort_of_clevr", seed=1, n_train=20, n_test=20)
    b = load_dataset("builtin:sort_of_clevr", seed=1, n_train=20, n_test=20)
    c = load_dataset("builtin:sort_of_clevr", seed=2, n_train=20, n_test=20)
    for i in range(20):
        assert all(torch.equal(a.train[i][k], b.train[i][k]) for k in a.train[i])
    assert not torch.equal(a.train.meta["centres"], c.train.meta["centres"])
    assert not torch.equal(a.train.meta["centres"], a.test.meta["centres"])


def test_collate_pads_questions_and_adds_lengths(bundle) -> None:
    samples = [bundle.train[i] for i in range(6)]
    batch = bundle.collate_fn(samples)
    lengths = [len(s["sequence"]) for s in samples]
    assert batch["image"].shape == (6, 3, 64, 64) and batch["lengths"].tolist() == lengths
    assert batch["sequence"].shape == (6, max(lengths)) and batch["y"].shape == (6,) and batch["qtype"].shape == (6,)
    for i, n in enumerate(lengths):
        assert not batch["sequence"][i, n:].any()


def test_unknown_option() -> None:
    with pytest.raises(UnknownNameError, match="questions_per_image"):
        load_dataset("builtin:sort_of_clevr", questions_per_img=3)


def test_no_near_ties_for_closest_or_furthest(bundle) -> None:
    for centres in bundle.train.meta["centres"].double():
        d = torch.cdist(centres, centres).fill_diagonal_(float("nan"))
        for row in d:
            row = row[~row.isnan()].sort().values
            assert row[1] - row[0] >= 1.0 and row[-1] - row[-2] >= 1.0
    assert np.all(bundle.train.meta["centres"].numpy() != 32)
