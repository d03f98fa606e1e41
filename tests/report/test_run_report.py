"""report.html and cnnlstm report: the page equals metrics.json and shows the worst test examples by loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_pages import check_run_page, read_page

from cnnlstm.cli import main
from cnnlstm.engine.run_report import compare_runs

FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
        "data.batch_size=4"]
#: tiny versions of the shipped recipes of every other data kind (as in tests/cli/test_cli.py)
KINDS = {
    "captcha_crnn": (["data.options.n_train=16", "data.options.n_test=5", "model.hidden_size=4",
                      "model.widths=[4,4,8,8,8,8]"], ["text line", "CER"]),
    "sort_of_clevr": (["data.options.n_train=60", "data.options.n_test=5", "model.hidden_size=8",
                       "model.encoder_kwargs.widths=[4,8]", "trainer.limit_val_batches=2"],
                      ["question", "true answer"]),
    "shape_captions": (["data.options.n_train=16", "data.options.n_test=5", "data.options.image_size=32",
                        "data.options.object_size=8", "model.hidden_size=8", "model.encoder_kwargs.widths=[4,8]"],
                       ["generated", "reference 1"]),
    "moving_digits": (["data.options.n_train=8", "data.options.n_test=5", "model.hidden_size=4"],
                      ["rows: context", "· truth · prediction", "MSE"]),
}


def test_classification_page_matches_the_run(toy_run: Path) -> None:
    page = check_run_page(toy_run, toy_run / "report.html", k=8)  # the page fit wrote: 8 worst of 12
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert page.per_class == ["0", "1", "2"]
    for key in ("gap/loss", "best_epoch", "params"):
        assert float(page.metrics[key]) == metrics[key]
    assert "Confusion matrix" in page.text and "FLOPs forward / sample" in page.text


def test_per_class_scores_average_to_the_runs_macro_f1(toy_run: Path) -> None:
    html = (toy_run / "report.html").read_text()
    rows = html.split('<tr data-class="')[1:]
    f1 = [float(row.split('<td class="num">')[3].split("<")[0]) for row in rows]
    metrics = json.loads((toy_run / "metrics.json").read_text())
    assert sum(f1) / len(f1) == pytest.approx(metrics["test/f1"], abs=1e-4)  # torchmetrics' macro F1


def test_cli_report_rewrites_the_page_and_guards_outputs(toy_run: Path, tmp_path: Path, capsys) -> None:
    first = (toy_run / "report.html").read_text()
    (toy_run / "report.html").unlink()
    assert main(["report", str(toy_run), "--worst", "3"]) == 0
    check_run_page(toy_run, toy_run / "report.html", k=3)
    assert first.count('class="example"') == 8
    out = tmp_path / "elsewhere.html"
    assert main(["report", str(toy_run), "--out", str(out), "--worst", "2"]) == 0
    check_run_page(toy_run, out, k=2)
    capsys.readouterr()
    assert main(["report", str(toy_run), "--out", str(out)]) == 2
    assert "exists; choose another file or pass --overwrite" in capsys.readouterr().err
    assert main(["report", str(toy_run), str(toy_run), "--out", str(toy_run / "logs" / "c.html")]) == 2
    assert "inside the run directory" in capsys.readouterr().err
    assert not (toy_run / "logs" / "c.html").exists()
    assert main(["report", str(toy_run), str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_runs_and_a_study_side_by_side(toy_run: Path, tmp_path: Path) -> None:
    from cnnlstm.engine import fit

    other = fit(str(toy_run / "config.yaml"), out=tmp_path / "lr", verbose=False, overrides=["optim.lr=0.003"])
    study = tmp_path / "study"
    shutil.copytree(toy_run, study / "trials" / "0000")
    out = compare_runs([toy_run, other.run_dir, study], tmp_path / "compare.html")
    html = out.read_text()
    page = read_page(out)
    assert page.sources and all(s.startswith("data:image/png;base64,") for s in page.sources)
    cells = html.split('<tr data-metric="test/acc">')[1].split("</tr>")[0]
    values = [float(c.split('"')[0]) for c in cells.split('data-value="')[1:]]
    mine = json.loads((toy_run / "metrics.json").read_text())["test/acc"]
    assert values == [mine, other.metrics["test/acc"], mine]
    assert "study/0000" in html
    with pytest.raises(Exception, match="--overwrite"):
        compare_runs([toy_run], out)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(KINDS))
def test_every_kind_gets_its_gallery(recipe: str, tmp_path: Path) -> None:
    overrides, labels = KINDS[recipe]
    run = tmp_path / recipe
    assert main(["fit", "--recipe", recipe, "--out", str(run), "--set", *FAST, *overrides]) == 0
    check_run_page(run, run / "report.html", k=8)  # fit's own page: all 5 test samples, worst first
    assert main(["report", str(run), "--out", str(tmp_path / "worst3.html"), "--worst", "3"]) == 0
    page = check_run_page(run, tmp_path / "worst3.html", k=3)
    text = " ".join(page.text)
    for label in labels:
        assert label in text, label
