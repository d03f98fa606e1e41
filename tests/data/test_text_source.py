"""text:DIR: CSV manifest of text-line images, aspect ratio kept, charset from training, exact round trip."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlstm.cli import main
from cnnlstm.data import load_dataset, write_dataset
from cnnlstm.data.text_lines import pad_width_collate


def _line(path: Path, width: int, height: int = 16, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _folder(root: Path, train: list[tuple[str, int]], test: list[tuple[str, int]] | None = None) -> Path:
    """Lines of the given (text, width) at height 16, with train.csv (+ test.csv)."""
    for split, rows in (("train", train), ("test", test)):
        if rows is None:
            continue
        lines = ["image,text,extra"]
        for i, (text, width) in enumerate(rows):
            _line(root / split / f"{i}.png", width, seed=i + (100 if split == "test" else 0))
            lines.append(f"{split}/{i}.png,{text},ignored")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_lines_keep_their_aspect_ratio_and_the_charset_comes_from_training(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [("ab", 40), ("b a", 24), ("cab", 50)], [("ba", 30)])
    bundle = load_dataset(f"text:{root}")
    assert bundle.kind == "text_image"
    assert bundle.info.extras["charset"] == ["<blank>", " ", "a", "b", "c"]
    assert bundle.info.model_kwargs == {"num_classes": 5, "in_channels": 1, "image_height": 32}
    sample = bundle.train[1]
    assert sample["x"].shape == (1, 32, 48)  # 16 x 24 doubled to height 32: width 48
    assert sample["targets"].tolist() == [3, 1, 2] and sample["text"] == "b a"
    # Reference: PIL's own bilinear resize of the file, scaled to [0, 1].
    expected = np.asarray(Image.open(root / "train/1.png").resize((48, 32), Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_array_equal(sample["x"][0].numpy(), expected)
    assert [bundle.test[0]["text"]] == ["ba"]


def test_batches_pad_to_the_widest_line_and_carry_each_width(tmp_path: Path) -> None:
    bundle = load_dataset(f"text:{_folder(tmp_path / 'd', [('ab', 40), ('b', 10), ('abab', 50)], [('a', 20)])}")
    batch = bundle.collate_fn([bundle.train[i] for i in range(3)])
    assert batch["x"].shape == (3, 1, 32, 100)
    assert batch["lengths"].tolist() == [80, 20, 100]
    assert batch["target_lengths"].tolist() == [2, 1, 4]
    torch.testing.assert_close(batch["x"][1, ..., :20], bundle.train[1]["x"])
    assert batch["x"][1, ..., 20:].abs().sum() == 0
    assert pad_width_collate([bundle.train[0]])["lengths"].tolist() == [80]


def test_a_test_character_never_seen_in_training_is_reported_once_and_kept(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", [("ab", 40), ("ba", 40)], [("abz", 40), ("zz", 30), ("ab", 40)])
    with pytest.warns(UserWarning, match=r"2 test line\(s\) hold 3 character\(s\) never seen in training \('z'\)"):
        bundle = load_dataset(f"text:{root}")
    assert bundle.test[0]["text"] == "abz"  # kept, so the line is scored as wrong
    assert bundle.test[0]["targets"].tolist() == [1, 2]  # CTC cannot take an id the model does not have


def test_without_test_csv_the_test_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    rows = [(f"{'ab'[i % 2]}{'ba'[i % 3 % 2]}", 20 + i) for i in range(10)]
    root = _folder(tmp_path / "d", rows)
    a, b = load_dataset(f"text:{root}", seed=1), load_dataset(f"text:{root}", seed=1)
    widths = lambda ds: [ds[i]["x"].shape[-1] for i in range(len(ds))]  # noqa: E731  (each line's width is unique)
    assert len(a.test) == 2 and len(a.train) == 8
    assert widths(a.test) == widths(b.test)
    assert not set(widths(a.test)) & set(widths(a.train))
    assert widths(load_dataset(f"text:{root}", seed=2).test) != widths(a.test)


def test_captcha_written_in_the_text_layout_reads_back_sample_for_sample(tmp_path: Path) -> None:
    out = write_dataset("builtin:captcha", tmp_path / "captcha", n_train=6, n_test=3, seed=4)
    builtin = load_dataset("builtin:captcha", seed=4, n_train=6, n_test=3)
    ours = load_dataset(f"text:{out}")
    assert ours.info.extras["charset"][0] == "<blank>"
    for mine, theirs in ((ours.train, builtin.train), (ours.test, builtin.test)):
        assert len(mine) == len(theirs)
        for i in range(len(mine)):
            torch.testing.assert_close(mine[i]["x"], theirs[i]["x"], rtol=0, atol=0)
            assert mine[i]["text"] == "".join(builtin.info.extras["charset"][k] for k in theirs[i]["targets"].tolist())
    with pytest.raises(Exception, match="not an empty folder"):
        write_dataset("builtin:captcha", out, n_train=2, n_test=1)


# --- bad input: exit 2, one line naming the file and the line -----------------------------------------------


def _fit_error(root: Path, tmp_path: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["fit", "--recipe", "text_lines", "--data", f"text:{root}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _csv(tmp_path: Path, content: bytes) -> Path:
    root = tmp_path / "d"
    _line(root / "a.png", 20)
    (root / "train.csv").write_bytes(content)
    return root


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"image,label\na.png,ab\n", r"train.csv line 1: no column text"),
        (b"image,text\nmissing.png,ab\n", r"train.csv line 2: image .*missing.png does not exist"),
        (b"", r"train.csv is empty"),
        (b"image,text\n", r"train.csv has a header but no rows"),
        (b"image,text\na.png,ab\na.png,  \n", r"train.csv line 3: text is blank"),
        (b"image,text\na.png,ab\na.png\n", r"train.csv line 3: text is blank"),
        (b"image,text\na.png,\xe9t\xe9\n", r"train.csv line 2 is not UTF-8"),
        (b"image,text,text\na.png,ab,cd\n", r"train.csv line 1: the header names column text more than once"),
    ],
    ids=["missing-column", "missing-image", "empty", "no-rows", "blank-text", "short-row", "not-utf8", "dup-header"],
)
def test_bad_manifest_is_one_line_naming_file_and_line(content: bytes, fragment: str, tmp_path: Path,
                                                       capsys) -> None:
    root = _csv(tmp_path, content)
    before = hashlib.sha256((root / "train.csv").read_bytes()).hexdigest()
    assert re.search(fragment, _fit_error(root, tmp_path, capsys))
    assert hashlib.sha256((root / "train.csv").read_bytes()).hexdigest() == before  # nothing a user wrote changes


def test_unreadable_image_names_the_row(tmp_path: Path, capsys) -> None:
    root = _csv(tmp_path, b"image,text\na.png,ab\nbroken.png,cd\n")
    (root / "broken.png").write_bytes(b"not a png")
    err = _fit_error(root, tmp_path, capsys)
    assert re.search(r"train.csv line 3: image .*broken.png is not a readable image", err), err


def test_cnnlstm_datasets_lists_both_sources(capsys) -> None:
    assert main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "text:<arg>" in listing and "forecast:<arg>" in listing
