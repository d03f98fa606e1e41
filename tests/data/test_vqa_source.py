"""vqa: and captions: sources on folders written here: layout, vocabularies from training, splits, and errors."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from user_images import make_captions, make_vqa, write_csv

from cnnlstm.data import load_dataset, split_train_val
from cnnlstm.data.vqa import UNSEEN_ANSWER
from cnnlstm.errors import DataError


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_vqa_reads_rows_images_and_training_vocabulary(tmp_path: Path) -> None:
    root = make_vqa(tmp_path / "v")
    rows = (root / "test.csv").read_text().splitlines()
    rows[1] = rows[1].replace("What colour", "Which colour")  # 'which' is not a training word
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    before = _digest(root)
    bundle = load_dataset(f"vqa:{root}")
    assert bundle.kind == "vqa" and len(bundle.train) == 16 and len(bundle.test) == 8
    assert bundle.info.extras["answers"] == ["blue", "no", "red", "yes"]  # training answers, sorted
    vocab = bundle.info.extras["vocab"]
    assert vocab[:4] == ["<pad>", "<start>", "<end>", "<unk>"] and "which" not in vocab
    assert vocab[4:] == sorted({"what", "colour", "is", "the", "square", "?", "on", "left"})
    first = bundle.train[0]
    expected = np.asarray(Image.open(root / "img/000.png").convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(first["image"], torch.from_numpy(expected).permute(2, 0, 1))
    assert [vocab[i] for i in first["sequence"]] == ["what", "colour", "is", "the", "square", "?"]
    assert bundle.info.extras["answers"][int(first["y"])] == "red"
    assert vocab[int(bundle.test[0]["sequence"][0])] == "<unk>"
    assert bundle.info.groups.tolist() == [i // 2 for i in range(16)]  # two questions per image
    assert bundle.info.model_kwargs == {"num_classes": 4, "vocab_size": len(vocab), "in_channels": 3,
                                           "image_size": (32, 32)}
    assert _digest(root) == before  # nothing the user wrote is touched


def test_vqa_resizes_to_image_size(tmp_path: Path) -> None:
    bundle = load_dataset(f"vqa:{make_vqa(tmp_path / 'v')}", image_size=[16, 24], in_channels=1)
    assert bundle.train[0]["image"].shape == (1, 16, 24) and bundle.test[0]["image"].shape == (1, 16, 24)


def test_vqa_without_test_csv_carves_whole_images_seeded(tmp_path: Path) -> None:
    root = make_vqa(tmp_path / "v", n_train=8, n_test=2, test_csv=False)
    a, b = load_dataset(f"vqa:{root}", seed=3), load_dataset(f"vqa:{root}", seed=3)
    train_images = set(a.train.meta["image_paths"])
    test_images = set(a.test.meta["image_paths"])
    assert len(test_images) == 2 and not train_images & test_images and len(train_images) == 8
    assert a.test.meta["lines"] == b.test.meta["lines"]  # the same seed, the same split
    # validation takes whole images too
    train, val = split_train_val(a.train, 0.25, seed=0, groups=a.info.groups)
    groups = a.info.groups
    assert not set(groups[train.indices].tolist()) & set(groups[val.indices].tolist())


def test_vqa_unseen_test_answer_warns_once_and_counts_wrong(tmp_path: Path) -> None:
    from cnnlstm.models import create_model
    from cnnlstm.tasks import ClassificationTask

    root = make_vqa(tmp_path / "v")
    rows = (root / "test.csv").read_text().splitlines()
    rows[1] = rows[1].rsplit(",", 1)[0] + ",green"
    rows[3] = rows[3].rsplit(",", 1)[0] + ",green"
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(f"vqa:{root}")
    messages = [str(w.message) for w in caught if "never given in training" in str(w.message)]
    assert len(messages) == 1 and "2 test answer(s)" in messages[0] and "'green'" in messages[0]
    assert "green" not in bundle.info.extras["answers"]
    assert [int(bundle.test[i]["y"]) for i in (0, 2)] == [UNSEEN_ANSWER, UNSEEN_ANSWER]
    # The task counts them wrong: logits that pick every other row's answer correctly give 6 of 8 right.
    model = create_model("multi_input", num_classes=4, vocab_size=len(bundle.info.extras["vocab"]),
                         encoder_kwargs={"widths": [4]})
    task = ClassificationTask(model, class_names=bundle.info.extras["answers"])
    y = torch.stack([bundle.test[i]["y"] for i in range(8)])
    logits = torch.nn.functional.one_hot(y.clamp(min=0), 4).float()
    task.score(logits, {"y": y}, "test")
    assert float(task.metrics["test"]["acc"].compute()) == pytest.approx(6 / 8)
    only_unseen = torch.full((2,), UNSEEN_ANSWER)
    assert float(task.score(logits[:2], {"y": only_unseen}, "test")) == 0.0  # no answer to score: no loss, no NaN
    assert float(task.metrics["test"]["acc"].compute()) == pytest.approx(6 / 10)


def test_captions_group_references_by_image(tmp_path: Path) -> None:
    root = make_captions(tmp_path / "c")
    bundle = load_dataset(f"captions:{root}")
    vocab = bundle.info.extras["vocab"]
    assert len(bundle.train) == 16 and len(bundle.test) == 4  # a sample per training row, per test image
    first = bundle.test[0]
    assert first["references"] == ["a red square on the left", "a red square at the left"]
    assert [vocab[i] for i in first["captions"]] == ["<start>", "a", "red", "square", "on", "the", "left", "<end>"]
    assert bundle.info.groups.tolist() == [i // 2 for i in range(16)]
    assert bundle.info.extras["max_caption_length"] == 8 and bundle.info.extras["references"][0] == first["references"]


def _broken(root: Path, case: str) -> tuple[Path, str]:
    """Damage a vqa folder one way; return the file the message must name and the row."""
    train = root / "train.csv"
    if case == "missing column":
        write_csv(train, ["image", "question"], [["img/000.png", "what?"]])
        return train, "row 1"
    if case == "duplicate header":
        write_csv(train, ["image", "question", "answer", "image"], [["img/000.png", "what?", "red", "x"]])
        return train, "row 1"
    if case == "empty":
        train.write_text("")
        return train, ""
    if case == "header only":
        train.write_text("image,question,answer\n")
        return train, ""
    if case == "blank question":
        write_csv(train, ["image", "question", "answer"], [["img/000.png", "what?", "red"], ["img/001.png", " ", "no"]])
        return train, "row 3"
    if case == "blank answer":
        write_csv(train, ["image", "question", "answer"], [["img/000.png", "what?", ""]])
        return train, "row 2"
    if case == "missing image":
        write_csv(train, ["image", "question", "answer"], [["img/000.png", "what?", "red"], ["img/nope.png", "a", "b"]])
        return train, "row 3"
    if case == "unreadable image":
        (root / "img/bad.png").write_bytes(b"not a png")
        write_csv(train, ["image", "question", "answer"], [["img/bad.png", "what?", "red"]])
        return train, "row 2"
    if case == "not utf-8":
        train.write_bytes("image,question,answer\nimg/000.png,what colour?,r\xe9d\n".encode("latin-1"))
        return train, "row 2"
    raise AssertionError(case)


CASES = ["missing column", "duplicate header", "empty", "header only", "blank question", "blank answer",
         "missing image", "unreadable image", "not utf-8"]


@pytest.mark.parametrize("case", CASES)
def test_vqa_bad_input_names_file_and_row(tmp_path: Path, case: str) -> None:
    root = make_vqa(tmp_path / "v", n_train=2, n_test=2)
    path, row = _broken(root, case)
    before = _digest(root)
    with pytest.raises(DataError) as err:
        load_dataset(f"vqa:{root}")
    assert str(path) in str(err.value) and row in str(err.value)
    assert _digest(root) == before


def test_captions_blank_caption_names_file_and_row(tmp_path: Path) -> None:
    root = make_captions(tmp_path / "c", n_train=2, n_test=2)
    write_csv(root / "test.csv", ["image", "caption", "extra"], [["img/002.png", "a red square", ""],
                                                                 ["img/003.png", "", "ignored"]])
    with pytest.raises(DataError, match=r"test\.csv row 3: caption is blank"):
        load_dataset(f"captions:{root}")


@pytest.mark.parametrize("source", ["vqa", "captions"])
def test_docs_example_csv_loads(tmp_path: Path, source: str) -> None:
    """The CSV example of each section of docs/data.md is a loadable dataset (images drawn here)."""
    from user_images import draw

    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    section = text.split(f"## {source}:DIR", 1)[1].split("\n## ", 1)[0]
    example = section.split("```csv\n", 1)[1].split("```", 1)[0]
    root = tmp_path / source
    root.mkdir()
    (root / "train.csv").write_text(example)
    draw(root / "img/000.png", "red", left=True)
    draw(root / "img/001.png", "blue", left=False)
    bundle = load_dataset(f"{source}:{root}", test_fraction=0.5)
    assert len(bundle.train) + len(bundle.test) in (2, 3)


def test_shape_captions_written_to_disk_loads_back(tmp_path: Path) -> None:
    from cnnlstm.data import write_dataset

    options = {"n_train": 12, "n_test": 4, "image_size": 32, "object_size": 6}
    folder = write_dataset("builtin:shape_captions", tmp_path / "caps", seed=2, **options)
    builtin, disk = load_dataset("builtin:shape_captions", seed=2, **options), load_dataset(f"captions:{folder}")
    assert len(disk.train) == 12 and len(disk.test) == 4
    vocab_a, vocab_b = builtin.info.extras["vocab"], disk.info.extras["vocab"]
    for i in range(12):
        a, b = builtin.train[i], disk.train[i]
        assert torch.equal(a["images"], b["images"])  # PNGs are lossless
        assert [vocab_a[j] for j in a["captions"]] == [vocab_b[j] for j in b["captions"]]
    assert disk.test[0]["references"] == [" ".join(vocab_a[j] for j in builtin.test[0]["captions"][1:-1])]
