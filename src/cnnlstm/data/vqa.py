"""Visual question answering on the user's own images: ``vqa:DIR``.

Layout: ``DIR/train.csv`` and optionally ``DIR/test.csv``, UTF-8 with a header ``image,question,answer``
(image paths relative to DIR, several rows may name one image). An optional ``type`` column names each
question's type (accuracy is then also reported per type); an optional ``DIR/answers.txt`` (one answer per
line) fixes the answer classes and their order, otherwise they are the training answers, sorted. Other
columns are ignored. Without ``test.csv``, a seeded share of the images (``test_fraction``) is the test split,
whole images at a time.

Questions are lower-cased and split into words and punctuation; the word vocabulary comes from the training
split only, and test words it lacks read as ``<unk>``. A test answer that training never gives cannot be
predicted: it counts as wrong (target ``UNSEEN_ANSWER``) and a warning says how many there are.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from cnnlstm.data._options import reject_unknown_options
from cnnlstm.data._registry import DatasetBundle, register_source
from cnnlstm.data.builtin._common import Field, FieldDataset
from cnnlstm.data.builtin._vocab import Vocabulary
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.manifest import (
    ManifestRow,
    image_size_option,
    load_image_table,
    read_splits,
    split_images,
    write_manifest,
)
from cnnlstm.data.validate import read_utf8
from cnnlstm.errors import ConfigError, DataError

__all__ = ["load_vqa", "write_vqa", "tokenize", "UNSEEN_ANSWER", "COLUMNS"]

COLUMNS = ("image", "question", "answer")
#: Target of a test answer absent from training: cross-entropy ignores it and it never equals a prediction.
UNSEEN_ANSWER = -100


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of a question or caption.

    Example:
        >>> tokenize("Is the red object on the left?")
        ['is', 'the', 'red', 'object', 'on', 'the', 'left', '?']
    """
    return re.findall(r"\w+|[^\w\s]", text.lower())


def _answer_classes(root: Path, rows: Sequence[ManifestRow], csv_path: Path) -> list[str]:
    """``answers.txt`` when present (every training answer must be in it), else the training answers sorted."""
    listed = root / "answers.txt"
    if not listed.is_file():
        return sorted({row.values["answer"] for row in rows})
    text = read_utf8(listed, lambda line, byte: f"{listed} line {line} is not UTF-8 text (byte {byte:#04x}); "
                                                "save the file as UTF-8", bom=True)
    answers = [line.strip() for line in text.splitlines() if line.strip()]
    if len(set(answers)) != len(answers):
        raise DataError(f"{listed} lists an answer twice; list each answer once")
    known = set(answers)
    for row in rows:
        if row.values["answer"] not in known:
            raise DataError(f"{csv_path} row {row.line}: answer {row.values['answer']!r} is not in {listed}; "
                            "add it there or delete answers.txt")
    return answers


def _dataset(rows: Sequence[ManifestRow], root: Path, csv_path: Path, vocab: Vocabulary, answers: list[str],
             types: list[str] | None, channels: int, size: tuple[int, int] | None) -> FieldDataset:
    table = load_image_table(rows, root, csv_path, channels=channels, size=size)
    questions = [vocab.encode(tokenize(row.values["question"])) for row in rows]
    if any(len(q) == 0 for q in questions):
        row = next(r for r, q in zip(rows, questions, strict=True) if len(q) == 0)
        raise DataError(f"{csv_path} row {row.line}: the question has no words; write the question")
    slot = {a: k for k, a in enumerate(answers)}
    fields = {
        "image": Field(table.images, index=table.index),  # (S, C, H, W) uint8, one per distinct image
        "image_id": Field(table.index),  # (N,): which image; the model encodes each image of a batch once
        "sequence": Field(pad_sequence(questions, batch_first=True),  # (N, L_max)
                          lengths=torch.tensor([len(q) for q in questions])),
        "y": Field(torch.tensor([slot.get(row.values["answer"], UNSEEN_ANSWER) for row in rows])),
    }
    if types is not None:
        kinds = {t: k for k, t in enumerate(types)}
        fields["qtype"] = Field(torch.tensor([kinds.get(row.values.get("type", ""), -1) for row in rows]))
    return FieldDataset(fields, meta={"image_paths": table.paths, "lines": [row.line for row in rows]})


@register_source("vqa", kind="vqa",
                 description="image + question -> answer: DIR/train.csv (+ test.csv) with image,question,answer")
def load_vqa(path: str, *, seed: int = 0, image_size: int | Sequence[int] | None = None, in_channels: int = 3,
             test_fraction: float = 0.2, **options: Any) -> DatasetBundle:
    """Load image + question -> answer data: ``vqa:data/my_vqa`` (see the module docstring for the layout).

    Args:
        path: the dataset folder.
        seed: seed of the carved test split when there is no ``test.csv``.
        image_size: (H, W) or one int every image is resized to; default the first training image's size.
        in_channels: 3 (RGB, default) or 1 (grayscale).
        test_fraction: share of the images carved out as the test split when there is no ``test.csv``.

    Shape:
        - sample ``image``: (C, H, W) float32 in [0, 1]; ``sequence``: (L,) int64 word ids; ``y``: int64
          answer index; ``qtype``: int64 (only with a ``type`` column).

    Raises:
        DataError: a missing or unreadable file or image, a missing column, a blank value, a non-UTF-8 file
            (each naming the file and row).

    Example:
        >>> bundle = load_vqa("data/my_vqa", image_size=64)  # doctest: +SKIP
        >>> bundle.info.extras["answers"][:3]  # doctest: +SKIP
        ['no', 'red', 'yes']
    """
    reject_unknown_options("vqa", options, ["image_size", "in_channels", "test_fraction"])
    if in_channels not in (1, 3):
        raise ConfigError(f"vqa: option in_channels must be 1 or 3, got {in_channels!r}")
    size = image_size_option(image_size, "vqa")
    root = Path(path)
    train_rows, test_rows, train_csv, test_csv = read_splits(root, COLUMNS, ("type",), seed=seed,
                                                             test_fraction=test_fraction, source="vqa")
    vocab = Vocabulary(w for row in train_rows for w in tokenize(row.values["question"]))
    answers = _answer_classes(root, train_rows, train_csv)
    types = sorted({row.values.get("type", "") for row in train_rows} - {""}) or None
    train = _dataset(train_rows, root, train_csv, vocab, answers, types, in_channels, size)
    size = tuple(train.fields["image"].data.shape[-2:])  # the first image's when not given: test follows it
    test = _dataset(test_rows, root, test_csv, vocab, answers, types, in_channels, size)
    known = set(answers)
    unseen = [row.values["answer"] for row in test_rows if row.values["answer"] not in known]
    if unseen:
        shown = ", ".join(repr(a) for a in sorted(set(unseen))[:5])
        warnings.warn(f"vqa:{root}: {len(unseen)} test answer(s) never given in training ({shown}); "
                      "they count as wrong", stacklevel=2)
    info = DataInfo(
        model_kwargs={"num_classes": len(answers), "vocab_size": len(vocab), "in_channels": in_channels,
                      "image_size": size},
        class_names=list(answers),
        targets=train.fields["y"].data,
        groups=train.fields["image"].index,  # validation takes whole images, never one training saw
        image_size=size,
        extras={"vocab": list(vocab.itos), "answers": list(answers), "unseen_test_answers": len(unseen)},
    )
    if types is not None:
        info.extras["question_types"] = types
    return DatasetBundle(name=f"vqa:{path}", kind="vqa", train=train, test=test, info=info, collate_fn=pad_collate)


def write_vqa(bundle: DatasetBundle, folder: Path) -> None:
    """Write a ``vqa`` bundle in the ``vqa:DIR`` layout: PNGs, ``train.csv``, ``test.csv``, ``answers.txt``.

    Questions are decoded with ``info.extras["vocab"]``, answers with ``info.extras["answers"]``; question types
    (``qtype`` and ``info.extras["question_types"]``) go to a ``type`` column. ``answers.txt`` keeps the bundle's
    answer order, so loading the folder back gives the same class indices.

    Example:
        >>> write_vqa(load_dataset("builtin:sort_of_clevr", n_train=20, n_test=10), Path("clevr"))  # doctest: +SKIP
    """
    vocab, answers = bundle.info.extras["vocab"], bundle.info.extras["answers"]
    types = bundle.info.extras.get("question_types")
    words = Vocabulary.from_itos(vocab)
    for split, dataset in (("train", bundle.train), ("test", bundle.test)):
        rows = []
        for i, name in enumerate(split_images(dataset, "image", folder, split)):
            sample = dataset[i]
            row = [name, words.decode(sample["sequence"]), answers[int(sample["y"])]]
            rows.append(row + ([types[int(sample["qtype"])]] if types else []))
        write_manifest(folder / f"{split}.csv", [*COLUMNS, *(["type"] if types else [])], rows)
    (folder / "answers.txt").write_text("".join(f"{a}\n" for a in answers), encoding="utf-8")
