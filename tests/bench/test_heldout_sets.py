"""The held-out set writers: what they write loads through the user-data sources, with the promised structure."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.heldout_captions import COLOURS, caption, write_heldout_captions
from benchmarks.heldout_vqa import SET2, write_heldout
from cnnlstm.data import load_dataset


def test_captions_set_has_every_order_of_each_scene_as_a_reference(tmp_path: Path) -> None:
    write_heldout_captions(tmp_path / "cap", n_train=6, n_test=3, seed=0)
    rows = list(csv.DictReader((tmp_path / "cap" / "test.csv").open()))
    per_image = Counter(r["image"] for r in rows)
    for image, n in per_image.items():
        objects = next(r["caption"] for r in rows if r["image"] == image).split().count("a")  # one article each
        assert n == math.factorial(objects)  # one row per order of its objects
        pixels = np.asarray(Image.open(tmp_path / "cap" / image))
        assert pixels.shape == (64, 64, 3) and (pixels == 70).all(axis=2).mean() > 0.8  # grey, mostly empty
    bundle = load_dataset(f"captions:{tmp_path / 'cap'}")
    assert len(bundle.test) == 3 and [len(bundle.test[i]["references"]) for i in range(3)] == list(per_image.values())
    assert set(bundle.info.extras["vocab"]) >= {"to", "left", "over", "under", *COLOURS}


def test_caption_relations_follow_the_geometry() -> None:
    centres = np.array([[10, 30], [40, 32], [42, 5]])  # 0 left of 1; 2 above 1
    assert caption((0, 1, 2), centres, ["cyan", "pink", "white"], ["circle", "square", "triangle"]) == (
        "a cyan circle to the left of a pink square under a white triangle")


def test_vqa_set2_loads_with_question_types(tmp_path: Path) -> None:
    write_heldout(tmp_path / "vqa", n_train=4, n_test=2, seed=7, spec=SET2, types=True)
    bundle = load_dataset(f"vqa:{tmp_path / 'vqa'}")
    assert len(bundle.train) == 4 * 6 and bundle.info.extras["question_types"]  # six families per scene


def test_cv_folds_partition_the_train_split_and_keep_each_series_length(tmp_path: Path) -> None:
    from benchmarks.ucr_cv import write_folds

    train = load_dataset("ucr:JapaneseVowels").train  # variable length: 7-29 steps, 12 channels
    paths = write_folds("JapaneseVowels", tmp_path, folds=3)
    seen = []
    for path in paths:
        fold = load_dataset(f"npz:{path}")
        assert len(fold.train) + len(fold.test) == len(train)
        seen += [tuple(np.asarray(fold.test[i]["x"]).ravel()[:4]) + (len(fold.test[i]["x"]),)
                 for i in range(len(fold.test))]
    want = sorted(tuple(np.asarray(train[i]["x"]).ravel()[:4]) + (len(train[i]["x"]),) for i in range(len(train)))
    assert sorted(seen) == want  # every training series is held out exactly once, at its own length
