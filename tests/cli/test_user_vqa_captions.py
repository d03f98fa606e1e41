"""vqa:DIR and captions:DIR through the command: fit, test, predict, export, datasets write, and errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cnnlstm.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from user_images import make_captions, make_vqa  # noqa: E402

TINY = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", "data.batch_size=4", "data.val_fraction=0.25",
        "data.options.image_size=32", "model.hidden_size=8", "model.encoder_kwargs.widths=[4,8]"]


def _fit_test_export(recipe: str, data: str, out: Path, capsys) -> dict:
    assert main(["fit", "--recipe", recipe, "--data", data, "--out", str(out), "--set", *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["test", "--run", str(out)]) == 0
    printed = dict(item.split("=") for item in capsys.readouterr().out.split())
    assert printed and all(float(v) == pytest.approx(metrics[k], abs=5e-5) for k, v in printed.items())
    assert main(["export", "--run", str(out)]) == 0
    assert "parity" in capsys.readouterr().out and (out / "export" / "model.onnx").is_file()
    return metrics


@pytest.mark.slow
def test_vqa_folder_fits_tests_predicts_and_exports(tmp_path: Path, capsys) -> None:
    root = make_vqa(tmp_path / "v")
    run = tmp_path / "run"
    _fit_test_export("vqa", f"vqa:{root}", run, capsys)
    questions = tmp_path / "ask" / "q.csv"
    questions.parent.mkdir()
    questions.write_text("image,question,note\n../v/img/000.png,What colour is the square?,x\n"
                         "../v/img/003.png,Is the square on the left?,y\n")
    out = tmp_path / "answers.csv"
    assert main(["predict", "--run", str(run), str(questions), "--csv", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "input,image_path,question,label,probability,p_blue,p_no,p_red,p_yes"
    assert lines[1].startswith(f"{questions} row 2,../v/img/000.png,What colour is the square?,")
    for line in lines[1:]:
        label, prob, *probs = line.split(",")[3:]
        assert label in ("blue", "no", "red", "yes")
        assert float(prob) == pytest.approx(max(map(float, probs)), abs=1e-6)
        assert sum(map(float, probs)) == pytest.approx(1.0, abs=1e-5)
    onnx_out = tmp_path / "answers_onnx.csv"
    assert main(["predict", "--run", str(run), "--onnx", str(run / "export" / "model.onnx"), str(questions),
                 "--csv", str(onnx_out)]) == 0
    labels = [line.split(",")[3] for line in lines[1:]]
    assert [line.split(",")[3] for line in onnx_out.read_text().splitlines()[1:]] == labels
    assert main(["predict", "--run", str(run), str(questions), "--beam", "2"]) == 2  # beams are for captions
    other = make_vqa(tmp_path / "other", n_train=2, n_test=2)
    (other / "train.csv").write_text((other / "train.csv").read_text().replace("square", "box"))
    capsys.readouterr()
    assert main(["test", "--run", str(run), "--data", f"vqa:{other}"]) == 2  # word ids would mean other words
    assert "another word vocabulary" in capsys.readouterr().err


@pytest.mark.slow
def test_captions_folder_fits_tests_predicts_and_exports(tmp_path: Path, capsys) -> None:
    root = make_captions(tmp_path / "c")
    run = tmp_path / "run"
    _fit_test_export("captions", f"captions:{root}", run, capsys)
    assert main(["predict", "--run", str(run), str(root / "img")]) == 0
    greedy = capsys.readouterr().out.strip().splitlines()
    assert len(greedy) == 12 and greedy[0].startswith(f"{root / 'img' / '000.png'}\t")
    vocab = set(json.loads((run / "data_info.json").read_text())["vocab"])
    assert all(set(line.split("\t")[1].split()) <= vocab for line in greedy)
    assert main(["predict", "--run", str(run), str(root / "img" / "000.png"), "--beam", "3"]) == 0
    assert capsys.readouterr().out.startswith(str(root / "img" / "000.png"))
    (root / "list.txt").write_text("img/001.png\nimg/000.png\n")
    assert main(["predict", "--run", str(run), str(root / "list.txt")]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[1] for line in listed] == [greedy[1].split("\t")[1], greedy[0].split("\t")[1]]


@pytest.mark.slow
def test_sort_of_clevr_written_to_disk_trains_exactly_like_the_builtin(tmp_path: Path, capsys) -> None:
    options = ["n_train=120", "n_test=20", "image_size=32", "object_size=6", "questions_per_image=4"]
    folder = tmp_path / "clevr"
    assert main(["datasets", "write", "builtin:sort_of_clevr", str(folder), "--set", *options, "--seed", "0"]) == 0
    assert {p.name for p in folder.iterdir()} == {"train", "test", "train.csv", "test.csv", "answers.txt"}
    fast = [*TINY, "trainer.limit_train_batches=3"]
    runs = {}
    for name, data, extra in (("builtin", "builtin:sort_of_clevr", [f"data.options.{o}" for o in options]),
                              ("disk", f"vqa:{folder}", [])):
        out = tmp_path / name
        assert main(["fit", "--recipe", "vqa", "--data", data, "--out", str(out), "--set", *fast, *extra]) == 0
        runs[name] = {k: v for k, v in json.loads((out / "metrics.json").read_text()).items()
                      if k.startswith("test/")}
    assert "test/acc_relational" in runs["disk"]
    assert runs["disk"] == runs["builtin"]  # same samples, order, vocabularies and classes: the same run


def test_datasets_write_refuses_a_non_empty_folder(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    assert main(["datasets", "write", "builtin:sort_of_clevr", str(folder), "--set", "n_train=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an empty folder" in err
    assert [p.name for p in folder.iterdir()] == ["mine.txt"] and (folder / "mine.txt").read_text() == "keep me"
    assert main(["datasets", "write", "builtin:digits", str(tmp_path / "new")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_datasets_lists_the_new_sources(capsys) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "vqa:<arg>" in out and "captions:<arg>" in out


def test_bad_vqa_folder_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    root = make_vqa(tmp_path / "v", n_train=2, n_test=2)
    (root / "img" / "001.png").unlink()
    argv = ["fit", "--recipe", "vqa", "--data", f"vqa:{root}", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{root / 'train.csv'} row 4" in err and "001.png does not exist" in err
