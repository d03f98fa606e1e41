"""The ``clevr`` bench suite: every fusion trains the same recipe and its per-question-type accuracy is kept."""

from __future__ import annotations

import json

import pytest

from benchmarks import main
from benchmarks.clevr import PUBLISHED, markdown, run_clevr

#: a tiny Sort-of-CLEVR run: 40 training / 20 test questions on 32x32 scenes, one epoch of a 2-stage CNN
TINY = ["trainer.max_epochs=1", "data.options.n_train=40", "data.options.n_test=20", "data.options.image_size=32",
        "data.options.object_size=6", "model.encoder_kwargs.widths=[8,16]", "model.hidden_size=8",
        "model.embedding_dim=8", "model.head_hidden_size=16", "data.batch_size=16"]


def test_clevr_suite_runs_through_the_cli_and_writes_its_record(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    status = main(["clevr", "--clevr-fusions", "concat", "film", "--clevr-seeds", "1", "--clevr-accelerator", "cpu",
                   "--clevr-set", *TINY, "--out", str(out), "--runs", str(runs)])
    assert status == 0
    record = json.loads((out / "clevr.json").read_text())
    assert list(record["fusions"]) == ["concat", "film"]
    assert "trainer.accelerator=cpu" in record["overrides"] and record["data"]["options"]["n_test"] == 20
    for fusion, summary in record["fusions"].items():
        (one,) = summary["runs"]
        assert one["seed"] == 0 and one["epochs"] == 1 and summary["params"] == one["params"] > 0
        # 20 test questions alternate non-relational / relational, so overall accuracy is the two types' mean:
        # the per-type figures read from metrics.json must agree with the overall one fit_seeds keeps.
        assert one["test_acc"] == pytest.approx((one["test_acc_relational"] + one["test_acc_non_relational"]) / 2,
                                                abs=1e-6)
        assert summary["relational"]["mean"] == pytest.approx(one["test_acc_relational"], abs=1e-4)
        assert summary["relational"]["std"] == 0.0
        assert (runs / "clevr" / fusion / "seed0" / "metrics.json").is_file()
    # a grid-fusion model differs from a pooled one: FiLM's residual blocks over the grid add parameters
    assert record["fusions"]["film"]["params"] > record["fusions"]["concat"]["params"]
    assert record["published"] == [{"model": m, "relational": r, "non_relational": n} for m, r, n in PUBLISHED]
    assert record["best"] in ("concat", "film")
    assert record["target_met"] == (record["fusions"][record["best"]]["relational"]["mean"] > 0.63)
    table = capsys.readouterr().out
    assert "| multi_input, fusion=film | grid + coordinates |" in table and "Relation Network" in table
    assert (out / "clevr.md").read_text().startswith("Machine: ")


@pytest.mark.slow
def test_parallel_validation_only_runs_give_the_sequential_figures_and_never_score_test(tmp_path):
    kwargs = dict(overrides=[*TINY, "trainer.deterministic=true"], accelerator="cpu", test=False, log=lambda _: None)
    one = run_clevr(["concat"], [0, 1], out=tmp_path / "a", jobs=1, **kwargs)
    two = run_clevr(["concat"], [0, 1], out=tmp_path / "b", jobs=2, **kwargs)
    keys = ("seed", "val_acc", "val_acc_relational", "val_acc_non_relational", "best_epoch")
    for a, b in zip(one["fusions"]["concat"]["runs"], two["fusions"]["concat"]["runs"], strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
        assert not any(k.startswith("test") for k in a)
    metrics = json.loads((tmp_path / "b" / "concat" / "seed1" / "metrics.json").read_text())
    assert not any(k.startswith("test/") for k in metrics)
    assert two["split"] == "val" and two["target_met"] is False
    assert two["fusions"]["concat"]["overall"]["mean"] == pytest.approx(
        sum(r["val_acc"] for r in two["fusions"]["concat"]["runs"]) / 2, abs=1e-4)
    assert "VALIDATION accuracy" in markdown(two) and "not judged on validation" in markdown(two)


def test_unknown_fusion_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["clevr", "--clevr-fusions", "flim", "--out", str(tmp_path), "--runs", str(tmp_path)])
    assert exc.value.code == 2
    assert "invalid choice: 'flim'" in capsys.readouterr().err
    assert not (tmp_path / "clevr").exists()
