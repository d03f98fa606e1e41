"""builtin:shape_captions: captions parsed back and checked against the stored geometry and the pixels."""

import math

import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.errors import ConfigError

RGB = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "orange": (1, 156 / 255, 0),
       "gray": (128 / 255,) * 3, "yellow": (1, 1, 0)}


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("builtin:shape_captions", seed=2, n_train=60, n_test=20)


def _parse(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Objects (colour, shape) and the relations between consecutive ones, from a caption's words."""
    words, objects, relations = text.split(), [], []
    while words:
        if objects:
            n = 2 if words[0] in ("left", "right") else 1
            relations.append(" ".join(words[:n]))
            words = words[n:]
        article, colour, shape, *words = words
        assert article == ("an" if colour == "orange" else "a")
        objects.append((colour, shape))
    return objects, relations


def _check_caption(text: str, scene: dict) -> list[int]:
    """Assert the caption names every object once with true relations; return the objects' order."""
    objects, relations = _parse(text)
    order = [scene["objects"].index(o) for o in objects]
    assert sorted(order) == list(range(len(scene["objects"])))
    for rel, a, b in zip(relations, order[:-1], order[1:], strict=True):
        (xa, ya), (xb, yb) = scene["centres"][a], scene["centres"][b]
        if rel in ("left of", "right of"):
            assert abs(xb - xa) >= 2 * abs(yb - ya) and (xa < xb) == (rel == "left of")
        else:
            assert abs(yb - ya) >= 2 * abs(xb - xa) and (ya < yb) == (rel == "above")
    return order


def _scene(split, i: int, info: dict) -> dict:
    k = int(split.meta["num_objects"][i])
    colours = [info.extras["colours"][c] for c in split.meta["colours"][i, :k].tolist()]
    shapes = [info.extras["shapes"][s] for s in split.meta["shapes"][i, :k].tolist()]
    return {"objects": list(zip(colours, shapes, strict=True)), "centres": split.meta["centres"][i, :k].tolist()}


def test_captions_and_references_describe_the_scene(bundle) -> None:
    info = bundle.info
    assert bundle.kind == "captions" and info.extras["vocab"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert info.model_kwargs == {"vocab_size": len(info.extras["vocab"]), "in_channels": 3, "image_size": (64, 64)}
    counts = set()
    for split in (bundle.train, bundle.test):
        for i in range(len(split)):
            ids = split[i]["captions"]
            assert ids.dtype == torch.int64 and ids[0] == 1 and ids[-1] == 2 and (ids[1:-1] > 3).all()
            text = " ".join(info.extras["vocab"][k] for k in ids[1:-1].tolist())
            scene = _scene(split, i, info)
            order = _check_caption(text, scene)
            xs = [scene["centres"][j] for j in order]
            assert xs == sorted(xs)  # reading order: left to right
            refs = split.meta["references"][i]
            assert text in refs and len(set(refs)) == math.factorial(len(order))
            for ref in refs:
                _check_caption(ref, scene)
            counts.add(len(order))
    assert counts == {1, 2, 3}
    assert info.extras["references"] == bundle.test.meta["references"]


def test_pixels_match_the_geometry(bundle) -> None:
    corners = {"square": (True, True), "circle": (False, False), "triangle": (False, True)}  # top-left, bottom-left
    for i in range(len(bundle.train)):
        image = bundle.train[i]["images"]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        scene = _scene(bundle.train, i, bundle.info)
        for (colour, shape), (x, y) in zip(scene["objects"], scene["centres"], strict=True):
            rgb = torch.tensor(RGB[colour], dtype=torch.float32)
            assert torch.allclose(image[:, y, x], rgb)
            top_left, bottom_left = image[:, y - 6, x - 6], image[:, y + 5, x - 6]  # corners of its 12x12 box
            assert (torch.allclose(top_left, rgb), torch.allclose(bottom_left, rgb)) == corners[shape]


def test_deterministic_random_order_and_collate() -> None:
    a = load_dataset("builtin:shape_captions", seed=7, n_train=30, n_test=5, caption_order="random")
    b = load_dataset("builtin:shape_captions", seed=7, n_train=30, n_test=5, caption_order="random")
    assert all(torch.equal(a.train[i]["images"], b.train[i]["images"]) for i in range(30))
    assert all(torch.equal(a.train[i]["captions"], b.train[i]["captions"]) for i in range(30))
    vocab = a.info.extras["vocab"]
    texts = [" ".join(vocab[k] for k in a.train[i]["captions"][1:-1].tolist()) for i in range(30)]
    assert all(t in refs for t, refs in zip(texts, a.train.meta["references"], strict=True))
    batch = a.collate_fn([a.train[i] for i in range(5)])
    lengths = [len(a.train[i]["captions"]) for i in range(5)]
    assert batch["images"].shape == (5, 3, 64, 64) and batch["caption_lengths"].tolist() == lengths
    assert batch["captions"].shape == (5, max(lengths))


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="max_objects"):
        load_dataset("builtin:shape_captions", max_objects=5)
    with pytest.raises(ConfigError, match="caption_order"):
        load_dataset("builtin:shape_captions", caption_order="size")
