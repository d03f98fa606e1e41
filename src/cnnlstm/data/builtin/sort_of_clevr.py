"""``builtin:sort_of_clevr``: Sort-of-CLEVR (Santoro et al. 2017), images of six objects with word questions."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from cnnlstm.data._registry import DatasetBundle, register_dataset, register_writer
from cnnlstm.data.builtin._common import Field, FieldDataset, check_int, split_rngs, strict_options
from cnnlstm.data.builtin._shapes import PALETTE, draw_shape, place_objects
from cnnlstm.data.builtin._vocab import Vocabulary
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.vqa import write_vqa

__all__ = ["sort_of_clevr", "QUESTION_FAMILIES", "ANSWERS"]

COLOURS = list(PALETTE)  # one object of each colour per scene; object k has colour COLOURS[k]
SHAPE_NAMES = ("square", "circle")
ANSWERS = ["yes", "no", *SHAPE_NAMES, *COLOURS, *(str(k) for k in range(1, len(COLOURS) + 1))]

#: (family, qtype 0 non-relational / 1 relational, template); ``{c}`` is the subject's colour.
QUESTION_FAMILIES = (
    ("shape", 0, "what is the shape of the {c} object ?"),
    ("left", 0, "is the {c} object on the left ?"),
    ("top", 0, "is the {c} object on the top ?"),
    ("closest_shape", 1, "what is the shape of the object closest to the {c} object ?"),
    ("furthest_colour", 1, "what is the colour of the object furthest from the {c} object ?"),
    ("count_same_shape", 1, "how many objects have the same shape as the {c} object ?"),
)
_BY_QTYPE = [[f for f, (_, q, _) in enumerate(QUESTION_FAMILIES) if q == qtype] for qtype in (0, 1)]
VOCAB = Vocabulary(w for _, _, t in QUESTION_FAMILIES for w in t.format(c=" ".join(COLOURS)).split())


def _distances(centres: np.ndarray) -> np.ndarray:
    """(n, n) Euclidean distances between centres, ``inf`` on the diagonal."""
    d = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1).astype(np.float64)
    np.fill_diagonal(d, np.inf)
    return d


def _unambiguous(centres: np.ndarray, size: int, margin: float) -> bool:
    """Every closest/furthest answer has a clear winner and no object straddles a midline."""
    if (centres == size // 2).any() and size % 2 == 0:
        return False  # a centre on the midline is neither left nor right
    d = np.sort(_distances(centres), axis=1)[:, :-1]  # (n, n-1) ascending, self dropped
    return bool((d[:, 1] - d[:, 0] >= margin).all() and (d[:, -1] - d[:, -2] >= margin).all())


def _answer(family: int, subject: int, centres: np.ndarray, shapes: np.ndarray, size: int) -> str:
    name = QUESTION_FAMILIES[family][0]
    dist = _distances(centres)[subject]
    if name == "shape":
        return SHAPE_NAMES[shapes[subject]]
    if name == "left":
        return "yes" if centres[subject, 0] < size / 2 else "no"
    if name == "top":
        return "yes" if centres[subject, 1] < size / 2 else "no"
    if name == "closest_shape":
        return SHAPE_NAMES[shapes[int(np.argmin(dist))]]
    if name == "furthest_colour":
        return COLOURS[int(np.argmax(np.where(np.isinf(dist), -1.0, dist)))]
    return str(int((shapes == shapes[subject]).sum()))  # count_same_shape, the subject included


@register_dataset(
    "sort_of_clevr", kind="vqa",
    description="Sort-of-CLEVR: 6 coloured squares/circles, relational and non-relational word questions",
)
@strict_options
def sort_of_clevr(
    *, seed: int = 0, n_train: int = 10000, n_test: int = 2000, image_size: int = 64, object_size: int = 10,
    questions_per_image: int = 10, margin: float = 1.0,
) -> DatasetBundle:
    """Scenes of six objects, one per colour, each a square or a circle, with one-word-answer questions.

    As in Santoro et al. (2017), half the questions are non-relational (about one object: its shape, whether
    it is on the left, on the top) and half relational (the shape of the closest object, the colour of the
    furthest one, how many objects share its shape); relational ones need comparing objects, which is what
    fusion models are tested on. Scenes where a closest/furthest answer would be a near tie (within
    ``margin`` pixels) or an object sits on a midline are redrawn, so every answer is well defined.

    ``dataset.meta`` holds the scene geometry: ``centres`` (S, 6, 2) integer (x, y), ``shapes`` (S, 6)
    (0 square, 1 circle; object k has colour ``info.extras["colours"][k]``), and per question ``scene_index``,
    ``family`` (index into ``info.extras["question_families"]``) and ``subject`` (colour index).

    Args:
        seed: seed of scenes and questions (train and test use disjoint streams).
        n_train: number of training questions.
        n_test: number of test questions.
        image_size: image height and width (Santoro et al. used 75).
        object_size: side of a square and diameter of a circle, in pixels (even).
        questions_per_image: questions asked about each scene (half relational).
        margin: how much further, in pixels, the runner-up must be for closest/furthest questions.

    Shape:
        - sample ``image``: (3, H, W) float32 RGB in [0, 1]; ``sequence``: (L,) int64 question ids;
          ``y``: int64 answer index; ``qtype``: int64, 0 non-relational, 1 relational.

    Example:
        >>> bundle = sort_of_clevr(n_train=20, n_test=10)
        >>> s = bundle.train[0]
        >>> s["image"].shape, bundle.info.extras["vocab"][:4]
        (torch.Size([3, 64, 64]), ['<pad>', '<start>', '<end>', '<unk>'])
    """
    name = "sort_of_clevr"
    n_train = check_int("n_train", n_train, 1, dataset=name)
    n_test = check_int("n_test", n_test, 1, dataset=name)
    image_size = check_int("image_size", image_size, 16, dataset=name)
    object_size = check_int("object_size", object_size, 2, image_size // 3, dataset=name)
    if object_size % 2:
        object_size += 1  # boxes are 2*half wide so that integer centres are exact object centres
    questions_per_image = check_int("questions_per_image", questions_per_image, 1, dataset=name)
    half = object_size // 2

    def make(n: int, rng: np.random.Generator) -> FieldDataset:
        n_scenes = math.ceil(n / questions_per_image)
        centres = np.stack([
            place_objects(rng, len(COLOURS), image_size, half, gap=2,
                          accept=lambda c: _unambiguous(c, image_size, margin))
            for _ in range(n_scenes)
        ])  # (S, 6, 2)
        shapes = rng.integers(len(SHAPE_NAMES), size=(n_scenes, len(COLOURS)))  # (S, 6)
        images = np.full((n_scenes, image_size, image_size, 3), 255, dtype=np.uint8)  # white, as in the paper
        for s in range(n_scenes):
            for k, colour in enumerate(COLOURS):
                draw_shape(images[s], SHAPE_NAMES[shapes[s, k]], *centres[s, k], half, PALETTE[colour])
        scene = np.arange(n) // questions_per_image
        qtype = np.arange(n) % questions_per_image % 2  # alternate, so each scene gets both kinds
        family = np.array([rng.choice(_BY_QTYPE[q]) for q in qtype])
        subject = rng.integers(len(COLOURS), size=n)
        asked = list(zip(family.tolist(), subject.tolist(), scene.tolist(), strict=True))
        answers = [_answer(f, c, centres[s], shapes[s], image_size) for f, c, s in asked]
        questions = [VOCAB.encode(QUESTION_FAMILIES[f][2].format(c=COLOURS[c])) for f, c, _ in asked]
        fields = {
            "image": Field(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),  # (S, 3, H, W)
                           index=torch.from_numpy(scene)),
            "image_id": Field(torch.from_numpy(scene)),  # (N,): the scene; the model encodes each scene once
            "sequence": Field(pad_sequence(questions, batch_first=True),  # (N, L_max)
                              lengths=torch.tensor([len(q) for q in questions])),
            "y": Field(torch.tensor([ANSWERS.index(a) for a in answers])),
            "qtype": Field(torch.from_numpy(qtype).long()),
        }
        meta = {"centres": torch.from_numpy(centres), "shapes": torch.from_numpy(shapes),
                "scene_index": torch.from_numpy(scene), "family": torch.from_numpy(family),
                "subject": torch.from_numpy(subject)}
        return FieldDataset(fields, meta=meta)

    train_rng, test_rng = split_rngs(seed, name)
    train = make(n_train, train_rng)
    return DatasetBundle(
        name=f"builtin:{name}",
        kind="vqa",
        train=train,
        test=make(n_test, test_rng),
        info=DataInfo(
            model_kwargs={"num_classes": len(ANSWERS), "vocab_size": len(VOCAB), "in_channels": 3,
                          "image_size": (image_size, image_size)},
            class_names=list(ANSWERS),
            targets=train.fields["y"].data,
            groups=train.meta["scene_index"],  # validation takes whole scenes, never a scene training saw
            extras={
                "vocab": list(VOCAB.itos),
                "answers": list(ANSWERS),
                "question_types": ["non-relational", "relational"],
                "question_families": [f for f, _, _ in QUESTION_FAMILIES],
                "colours": list(COLOURS),
            },
        ),
        collate_fn=pad_collate,
    )


register_writer("sort_of_clevr")(write_vqa)  # `cnnlstm datasets write builtin:sort_of_clevr DIR`: the vqa:DIR layout
