"""The accuracy bench's default recipe (``ucr``) and its target check."""

from __future__ import annotations

import json

import pytest

from benchmarks.accuracy import DEFAULT_RECIPE, TARGET_GAP, accuracy_markdown, target_check
from cnnlstm.data import load_dataset
from cnnlstm.engine import load_recipe
from cnnlstm.engine.fit import fit
from cnnlstm.engine.recipe import list_recipes, validate_recipe


def test_default_recipe_is_the_shipped_ucr_recipe_choosing_on_validation_only():
    assert DEFAULT_RECIPE == "ucr" and "ucr" in list_recipes()
    cfg = validate_recipe(load_recipe("ucr"))
    assert cfg["data"]["spec"].startswith("ucr:")
    assert 0.0 < cfg["data"]["val_fraction"] < 1.0  # validation carved from train, never the test split
    assert cfg["early_stopping"]["monitor"].startswith("val/")
    assert cfg["model"]["name"] in ("lstm_fcn", "mlstm_fcn")
    # the model section is member 0; the second member fits in closed form on the whole training split
    assert cfg["trainer"]["ensemble_models"] == ["model", {"name": "minirocket", "fit_on_validation": True}]


def _one_by_one_accuracy(run_dir) -> float:
    """Test accuracy of a run's saved model, one unpadded series at a time: no batching, Lightning or metrics."""
    import torch

    from cnnlstm.engine.fit import rebuild_run

    _, bundle, _, task = rebuild_run(run_dir)
    model = task.model.eval()
    with torch.no_grad():
        hits = [int(model(x=s["x"][None]).argmax()) == int(s["y"]) for s in (bundle.test[i] for i in
                                                                           range(len(bundle.test)))]
    return sum(hits) / len(hits)


@pytest.mark.slow
def test_ucr_recipe_fits_a_multivariate_and_a_variable_length_set(tmp_path):
    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false",
            "data.batch_size=4", "model.hidden_size=4", "model.filters=[4,8,4]"]
    for spec, n_test in (("ucr:BasicMotions", 40), ("ucr:JapaneseVowels", 370)):
        result = fit("ucr", data=spec, overrides=tiny, out=tmp_path / spec[4:], verbose=False)
        lstm_fcn, minirocket = (json.loads((result.run_dir / "members" / k / "metrics.json").read_text())
                                for k in ("0", "1"))
        assert lstm_fcn["epochs"] == 1 and lstm_fcn["params"] < 2_000  # the model section's overrides reached it
        assert minirocket["weights"] == "closed_form" and minirocket["train_samples"] == len(load_dataset(spec).train)
        assert result.metrics["test/acc"] == pytest.approx(_one_by_one_accuracy(result.run_dir), abs=1e-6)
        assert result.config["data"]["options"]["normalize"] == load_recipe("ucr")["data"]["options"]["normalize"]
        assert {"member0/test/acc", "member1/test/acc"} <= set(result.metrics)
        assert len(load_dataset(spec).test) == n_test


def _record(ours: dict[str, float | None], best: dict[str, float | None], mine: float | None, rocket: float | None):
    datasets = {n: {"ours": {"mean": v, "std": 0.0, "runs": [{"seed": 0}]}, "best_published": best[n]}
                for n, v in ours.items()}
    means = {k: v for k, v in (("ours", mine), ("minirocket", rocket)) if v is not None}
    return {"datasets": datasets, "means": means}


@pytest.mark.parametrize(("ours", "mine", "rocket", "met"), [
    ({"A": 0.995, "B": 0.961}, 0.978, 0.978, True),  # ties MiniRocket, B exactly one point below 0.970
    ({"A": 0.995, "B": 0.959}, 0.977, 0.970, False),  # B 0.011 below its best
    ({"A": 1.000, "B": 0.970}, 0.985, 0.986, False),  # every set near its best, mean below MiniRocket's
    ({"A": 1.000, "B": None}, None, 0.986, None),  # nothing missed yet, but B and the mean are unmeasured
])
def test_target_check_known_answers(ours, mine, rocket, met):
    record = _record(ours, {"A": 1.0, "B": 0.970}, mine, rocket)
    assert target_check(record)["met"] is met


def test_target_check_gaps_and_markdown_line():
    record = _record({"A": 0.98, "B": 0.965}, {"A": 1.0, "B": 0.970}, 0.9725, 0.99)
    check = target_check(record)
    assert check["per_dataset"] == {"A": pytest.approx(-0.02), "B": pytest.approx(-0.005)}
    assert check["mean_vs_minirocket"] == pytest.approx(-0.0175)
    assert TARGET_GAP == 0.01
    for d in record["datasets"].values():
        d.update(train=1, test=1, published={})
    record["seeds"] = [0]
    line = accuracy_markdown(record).splitlines()[-1]
    assert "**missed**" in line and "-0.018" in line and "A -0.020" in line and "B" not in line.split("on:")[-1]
