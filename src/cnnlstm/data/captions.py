"""Image captioning on the user's own images: ``captions:DIR``.

Layout: ``DIR/train.csv`` and optionally ``DIR/test.csv``, UTF-8 with a header ``image,caption`` (image paths
relative to DIR). Several rows naming one image give it several reference captions, as in COCO; an image's
rows always stay in one split. Other columns are ignored. Without ``test.csv``, a seeded share of the images
(``test_fraction``) is the test split.

Captions are lower-cased and split into words and punctuation; the vocabulary comes from the training split
only, and test words it lacks read as ``<unk>``. Training has one sample per row; the test split has one per
image, and BLEU-4 scores the generated caption against all of that image's captions (``references``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

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
from cnnlstm.data.vqa import tokenize
from cnnlstm.errors import ConfigError

__all__ = ["load_captions", "write_captions", "CaptionDataset", "COLUMNS"]

COLUMNS = ("image", "caption")


class CaptionDataset(Dataset):
    """Image + caption samples, each also carrying every reference caption of its image.

    Args:
        samples: a :class:`FieldDataset` with ``images`` and ``captions``.
        references: per sample, the captions of its image (words joined by spaces).

    Shape:
        - item ``images``: (C, H, W) float32; ``captions``: (L,) int64 ``<start> ... <end>``;
          ``references``: a list of strings.
    """

    def __init__(self, samples: FieldDataset, references: list[list[str]]) -> None:
        self.samples = samples
        self.references = references
        self.fields, self.meta = samples.fields, samples.meta

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.samples[i], "references": self.references[i]}


def _dataset(rows: Sequence[ManifestRow], root: Path, csv_path: Path, vocab: Vocabulary, channels: int,
             size: tuple[int, int] | None, per_image: bool) -> CaptionDataset:
    table = load_image_table(rows, root, csv_path, channels=channels, size=size)
    words = [tokenize(row.values["caption"]) for row in rows]
    references: list[list[str]] = [[] for _ in table.paths]
    for k, caption in zip(table.index.tolist(), words, strict=True):
        references[k].append(" ".join(caption))
    if per_image:  # one sample per image, its first caption as the teacher-forced target
        first = {k: i for i, k in reversed(list(enumerate(table.index.tolist())))}
        keep = [first[k] for k in range(len(table.paths))]
    else:
        keep = list(range(len(rows)))
    captions = [vocab.encode(words[i], start_end=True) for i in keep]
    index = table.index[keep]
    fields = {
        "images": Field(table.images, index=index),  # (S, C, H, W) uint8, one per distinct image
        "captions": Field(pad_sequence(captions, batch_first=True),  # (N, L_max)
                          lengths=torch.tensor([len(c) for c in captions])),
    }
    meta = {"image_paths": table.paths, "lines": [rows[i].line for i in keep], "image_index": index}
    return CaptionDataset(FieldDataset(fields, meta=meta), [references[int(k)] for k in index])


@register_source("captions", kind="captions",
                 description="image -> caption: DIR/train.csv (+ test.csv) with image,caption; rows per image = refs")
def load_captions(path: str, *, seed: int = 0, image_size: int | Sequence[int] | None = None,
                  in_channels: int = 3, test_fraction: float = 0.2, **options: Any) -> DatasetBundle:
    """Load images with captions: ``captions:data/my_captions`` (see the module docstring for the layout).

    Args:
        path: the dataset folder.
        seed: seed of the carved test split when there is no ``test.csv``.
        image_size: (H, W) or one int every image is resized to; default the first training image's size.
        in_channels: 3 (RGB, default) or 1 (grayscale).
        test_fraction: share of the images carved out as the test split when there is no ``test.csv``.

    Shape:
        - sample ``images``: (C, H, W) float32 in [0, 1]; ``captions``: (L,) int64 ``<start> ... <end>``;
          ``references``: the image's captions as strings.

    Raises:
        DataError: a missing or unreadable file or image, a missing column, a blank caption, a non-UTF-8
            file (each naming the file and row).

    Example:
        >>> bundle = load_captions("data/my_captions", image_size=48)  # doctest: +SKIP
    """
    reject_unknown_options("captions", options, ["image_size", "in_channels", "test_fraction"])
    if in_channels not in (1, 3):
        raise ConfigError(f"captions: option in_channels must be 1 or 3, got {in_channels!r}")
    size = image_size_option(image_size, "captions")
    root = Path(path)
    train_rows, test_rows, train_csv, test_csv = read_splits(root, COLUMNS, seed=seed, test_fraction=test_fraction,
                                                             source="captions")
    vocab = Vocabulary(w for row in train_rows for w in tokenize(row.values["caption"]))
    train = _dataset(train_rows, root, train_csv, vocab, in_channels, size, per_image=False)
    size = tuple(train.fields["images"].data.shape[-2:])  # the first image's when not given: test follows it
    test = _dataset(test_rows, root, test_csv, vocab, in_channels, size, per_image=True)
    longest = max(int(ds.fields["captions"].lengths.max()) for ds in (train, test))
    return DatasetBundle(
        name=f"captions:{path}",
        kind="captions",
        train=train,
        test=test,
        info=DataInfo(
            model_kwargs={"vocab_size": len(vocab), "in_channels": in_channels, "image_size": size},
            groups=train.meta["image_index"],  # validation takes whole images, never one training saw
            image_size=size,
            extras={"vocab": list(vocab.itos), "references": test.references, "max_caption_length": longest},
        ),
        collate_fn=pad_collate,
    )


def write_captions(bundle: DatasetBundle, folder: Path) -> None:
    """Write a ``captions`` bundle in the ``captions:DIR`` layout: PNGs, ``train.csv`` and ``test.csv``.

    One row per sample, its caption decoded with ``info.extras["vocab"]``.

    Example:
        >>> write_captions(load_dataset("builtin:shape_captions", n_train=8, n_test=4), Path("caps"))  # doctest: +SKIP
    """
    vocab = Vocabulary.from_itos(bundle.info.extras["vocab"])
    for split, dataset in (("train", bundle.train), ("test", bundle.test)):
        paths = split_images(dataset, "images", folder, split)
        rows = [[name, vocab.decode(dataset[i]["captions"])] for i, name in enumerate(paths)]
        write_manifest(folder / f"{split}.csv", COLUMNS, rows)
