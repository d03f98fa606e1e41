"""``builtin:shape_captions``: scenes of 1-3 coloured shapes with generated captions, for image captioning."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from cnnlstm.data._registry import DatasetBundle, register_dataset, register_writer
from cnnlstm.data.builtin._common import Field, FieldDataset, check_int, split_rngs, strict_options
from cnnlstm.data.builtin._shapes import PALETTE, SHAPES, draw_shape, place_objects
from cnnlstm.data.builtin._vocab import Vocabulary
from cnnlstm.data.captions import write_captions
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.errors import ConfigError

__all__ = ["shape_captions", "relation", "describe", "clear_axes"]

COLOURS = list(PALETTE)
RELATIONS = ("left of", "right of", "above", "below")
VOCAB = Vocabulary(["a", "an", *COLOURS, *SHAPES, *" ".join(RELATIONS).split()])


def relation(a: np.ndarray, b: np.ndarray) -> str:
    """Where object ``a`` is relative to ``b``, along the axis on which they differ most.

    Args:
        a: (2,) centre (x, y) of the first object, image coordinates (y down).
        b: (2,) centre of the second.

    Example:
        >>> relation(np.array([10, 30]), np.array([40, 28]))
        'left of'
    """
    dx, dy = b[0] - a[0], b[1] - a[1]
    if abs(dx) > abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def describe(order: list[int], centres: np.ndarray, colours: list[int], shapes: list[int]) -> str:
    """Caption of objects in ``order``: each one, then its relation to the next (``a red circle above a ...``).

    Example:
        >>> describe([0, 1], np.array([[10, 10], [10, 40]]), [0, 2], [1, 0])
        'a red circle above a blue square'
    """
    words = []
    for k, obj in enumerate(order):
        if k:
            words.append(relation(centres[order[k - 1]], centres[obj]))
        colour = COLOURS[colours[obj]]
        words += ["an" if colour[0] in "aeiou" else "a", colour, SHAPES[shapes[obj]]]
    return " ".join(words)


def clear_axes(centres: np.ndarray) -> bool:
    """Each pair is clearly side by side or clearly stacked (one offset at least twice the other).

    Example:
        >>> clear_axes(np.array([[10, 10], [40, 12]])), clear_axes(np.array([[10, 10], [30, 25]]))
        (True, False)
    """
    for a, b in itertools.combinations(range(len(centres)), 2):
        dx, dy = np.abs(centres[b] - centres[a])
        if max(dx, dy) < 2 * min(dx, dy):
            return False
    return True


@register_dataset(
    "shape_captions", kind="captions",
    description="scenes of 1-3 coloured shapes with captions like 'a red circle above a blue square'",
)
@strict_options
def shape_captions(
    *, seed: int = 0, n_train: int = 4000, n_test: int = 500, image_size: int = 64, object_size: int = 12,
    min_objects: int = 1, max_objects: int = 3, caption_order: str = "reading",
) -> DatasetBundle:
    """Black images with 1-3 shapes (square, circle, triangle in six colours) and a caption naming them.

    A caption lists the objects and, between consecutive ones, where the first is relative to the next:
    ``a red circle left of a blue square above a green triangle``. Every pair of objects is clearly side by
    side or clearly stacked, so each relation is well defined, and no two objects share colour and shape.
    With ``caption_order="reading"`` the training caption lists objects left to right (top to bottom on
    ties), one caption per image, so the target is a function of the image; ``"random"`` picks a random valid
    order per image instead (several captions per scene, as in COCO). Every order is a valid caption:
    ``dataset.meta["references"]`` and ``info.extras["references"]`` (test) list all of them, for BLEU.

    ``dataset.meta`` also holds the geometry: ``centres`` (N, M, 2) integer (x, y), ``colours`` and
    ``shapes`` (N, M) indices into ``info.extras["colours"]``/``["shapes"]`` (-1 past ``num_objects``).

    Args:
        seed: seed of scenes and captions (train and test use disjoint streams).
        n_train: number of training images.
        n_test: number of test images.
        image_size: image height and width.
        object_size: side of a square, diameter of a circle, base and height of a triangle (even).
        min_objects: fewest objects in a scene (>= 1).
        max_objects: most objects in a scene (<= 4: a scene has ``n!`` reference captions).
        caption_order: ``"reading"`` or ``"random"``, see above.

    Shape:
        - sample ``images``: (3, H, W) float32 RGB in [0, 1]; ``captions``: (L,) int64
          ``<start> ... <end>``.

    Example:
        >>> bundle = shape_captions(n_train=8, n_test=4)
        >>> bundle.train[0]["images"].shape, bundle.train[0]["captions"][0].item()
        (torch.Size([3, 64, 64]), 1)
    """
    name = "shape_captions"
    n_train = check_int("n_train", n_train, 1, dataset=name)
    n_test = check_int("n_test", n_test, 1, dataset=name)
    image_size = check_int("image_size", image_size, 16, dataset=name)
    object_size = check_int("object_size", object_size, 4, image_size // 3, dataset=name)
    object_size += object_size % 2  # boxes are 2*half wide so that integer centres are exact object centres
    max_objects = check_int("max_objects", max_objects, 1, 4, dataset=name)
    min_objects = check_int("min_objects", min_objects, 1, max_objects, dataset=name)
    if caption_order not in ("reading", "random"):
        raise ConfigError(f"builtin:{name} option caption_order must be 'reading' or 'random', got {caption_order!r}")
    half = object_size // 2
    kinds = len(COLOURS) * len(SHAPES)

    def make(n: int, rng: np.random.Generator) -> FieldDataset:
        counts = rng.integers(min_objects, max_objects + 1, size=n)
        centres = np.full((n, max_objects, 2), -1, dtype=np.int64)
        colours = np.full((n, max_objects), -1, dtype=np.int64)
        shapes = np.full((n, max_objects), -1, dtype=np.int64)
        images = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)
        captions, references = [], []
        for i, k in enumerate(counts):
            kind = rng.choice(kinds, size=k, replace=False)  # distinct (colour, shape): captions are unambiguous
            colours[i, :k], shapes[i, :k] = kind // len(SHAPES), kind % len(SHAPES)
            centres[i, :k] = place_objects(rng, k, image_size, half, gap=2, accept=clear_axes)
            for j in range(k):
                draw_shape(images[i], SHAPES[shapes[i, j]], *centres[i, j], half, PALETTE[COLOURS[colours[i, j]]])
            args = (centres[i, :k], colours[i, :k].tolist(), shapes[i, :k].tolist())
            references.append([describe(list(p), *args) for p in itertools.permutations(range(k))])
            if caption_order == "reading":
                order = sorted(range(k), key=lambda j: (centres[i, j, 0], centres[i, j, 1]))  # noqa: B023
            else:
                order = list(rng.permutation(k))
            captions.append(VOCAB.encode(describe(order, *args), start_end=True))
        fields = {
            "images": Field(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()),  # (N, 3, H, W)
            "captions": Field(pad_sequence(captions, batch_first=True),  # (N, L_max)
                              lengths=torch.tensor([len(c) for c in captions])),
        }
        meta = {"centres": torch.from_numpy(centres), "colours": torch.from_numpy(colours),
                "shapes": torch.from_numpy(shapes), "num_objects": torch.from_numpy(counts),
                "references": references}
        return FieldDataset(fields, meta=meta)

    train_rng, test_rng = split_rngs(seed, name)
    train, test = make(n_train, train_rng), make(n_test, test_rng)
    return DatasetBundle(
        name=f"builtin:{name}",
        kind="captions",
        train=train,
        test=test,
        info=DataInfo(
            model_kwargs={"vocab_size": len(VOCAB), "in_channels": 3, "image_size": (image_size, image_size)},
            extras={
                "vocab": list(VOCAB.itos),
                "references": test.meta["references"],
                "max_caption_length": int(max(train.fields["captions"].data.shape[1],
                                              test.fields["captions"].data.shape[1])),
                "colours": list(COLOURS),
                "shapes": list(SHAPES),
            },
        ),
        collate_fn=pad_collate,
    )


register_writer("shape_captions")(write_captions)  # `cnnlstm datasets write builtin:shape_captions DIR`
