"""One trial: pruning reports, validation-only scoring that `cnnlstm fit` reproduces, and the study outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution, IntDistribution
from tune_toys import toy_recipe

from cnnlstm.tune.api import write_outputs
from cnnlstm.tune.pruning import PruningCallback
from cnnlstm.tune.search import SearchPlan, resolve_search
from cnnlstm.tune.trial_fit import fit_trial


def _trial_config(tmp_path: Path) -> tuple[SearchPlan, dict]:
    plan = resolve_search(toy_recipe(tmp_path, max_epochs=3))
    trial = optuna.trial.FixedTrial({"optim.lr": 0.01, "optim.weight_decay": 0.01, "data.batch_size": 8,
                                     "model.hidden_size": 4, "model.bidirectional": False, "model.dropout": 0.0,
                                     "conv.depth": 2, "conv.width": 4, "conv.kernel": 3})
    return plan, plan.trial_config(*plan.sample(trial))


def test_trial_reports_every_epoch_and_scores_its_best_checkpoint(tmp_path: Path) -> None:
    plan, config = _trial_config(tmp_path)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    metrics = fit_trial(config, tmp_path / "trial", [PruningCallback(trial, "val/loss")])
    assert not any(k.startswith("test/") for k in metrics)  # the trial never looks at the test split
    history = json.loads((tmp_path / "trial" / "history.json").read_text())
    reported = study.get_trials(deepcopy=False)[0].intermediate_values
    assert reported == {h["epoch"]: pytest.approx(h["val/loss"]) for h in history}
    assert metrics["val/loss"] == pytest.approx(min(reported.values()))
    assert metrics["val/loss"] == pytest.approx(reported[metrics["best_epoch"]])
    # that `cnnlstm fit` on the trial's recipe reproduces the score: test_tune_processes.py, through best.yaml


def test_weak_trial_is_pruned_after_its_first_epoch(tmp_path: Path) -> None:
    plan, config = _trial_config(tmp_path)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.ThresholdPruner(upper=-1.0))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match="after epoch 1"):
        fit_trial(config, tmp_path / "trial", [PruningCallback(trial, "val/loss")])
    assert list(study.get_trials(deepcopy=False)[0].intermediate_values) == [1]


def _add(study: optuna.Study, value: float | None, lr: float, layers: int, state=optuna.trial.TrialState.COMPLETE):
    study.add_trial(optuna.create_trial(
        state=state, value=value, params={"optim.lr": lr, "model.num_layers": layers},
        distributions={"optim.lr": FloatDistribution(1e-4, 1e-1, log=True), "model.num_layers": IntDistribution(1, 3)},
        user_attrs={"config": {"name": "toy", "model": {"name": "lstm_fcn", "num_layers": layers},
                               "optim": {"lr": lr}}},
        intermediate_values={1: 0.9} if state == optuna.trial.TrialState.PRUNED else None))


def test_outputs_with_one_and_with_several_complete_trials(tmp_path: Path) -> None:
    plan = SearchPlan(base={}, metric="val/loss", direction="minimize", max_epochs=1, spaces={})
    study = optuna.create_study(direction="minimize")
    _add(study, 0.5, 1e-3, 1)
    _add(study, None, 1e-2, 2, optuna.trial.TrialState.PRUNED)
    result = write_outputs(study, plan, tmp_path, trials=2, test=False, log=lambda _: None)
    assert result.importances is None and not (tmp_path / "importances.png").exists()  # one complete trial
    assert (tmp_path / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for value, lr, layers in [(0.2, 3e-3, 2), (0.7, 3e-2, 3), (0.4, 1e-4, 1)]:
        _add(study, value, lr, layers)
    result = write_outputs(study, plan, tmp_path, trials=5, test=False, log=lambda _: None)
    assert result.best_number == 2 and result.best_value == 0.2
    assert set(result.importances) == {"optim.lr", "model.num_layers"}
    assert (tmp_path / "importances.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["model"] == {"name": "lstm_fcn", "num_layers": 2} and best["optim"] == {"lr": 3e-3}
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "PRUNED"), ("2", "COMPLETE"),
                                                         ("3", "COMPLETE"), ("4", "COMPLETE")]
    assert rows[1]["last_epoch"] == "1" and float(rows[2]["optim.lr"]) == 3e-3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_params"] == {"optim.lr": 3e-3, "model.num_layers": 2}


def test_a_space_can_search_ensembles_scored_on_their_averaged_validation_probabilities(tmp_path: Path) -> None:
    import torch

    from cnnlstm.engine.data import RecipeData, load_bundle
    from cnnlstm.engine.ensemble import load_run_model

    recipe = toy_recipe(tmp_path, max_epochs=2)
    recipe["search"]["space"].update({"trainer.ensemble": [1, 2],
                                      "trainer.ensemble_models": [None, ["lstm_fcn", "mlstm_fcn"]]})
    plan = resolve_search(recipe)
    trial = optuna.trial.FixedTrial({"optim.lr": 0.01, "optim.weight_decay": 0.01, "model.bidirectional": False,
                                     "model.dropout": 0.0, "model.hidden_size": 4, "conv.depth": 2, "conv.width": 4,
                                     "conv.kernel": 3, "data.batch_size": 8, "trainer.ensemble": 2,
                                     "trainer.ensemble_models": "[lstm_fcn, mlstm_fcn]"})  # list choices: YAML
    config = plan.trial_config(*plan.sample(trial))
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.ThresholdPruner(upper=-1.0))
    metrics = fit_trial(config, tmp_path / "trial", [PruningCallback(study.ask(), "val/loss")])  # never pruned
    assert metrics["ensemble"] == 2 and not any(k.startswith("test/") for k in metrics)
    # the trial's score is the two families' softmax averaged on the validation split, computed here by hand
    run = tmp_path / "trial"
    ensemble = load_run_model(run, config).eval()
    assert [m.model_name for m in ensemble.members] == ["lstm_fcn", "mlstm_fcn"]
    data = RecipeData(load_bundle(config["data"], seed=config["seed"]), val_fraction=config["data"]["val_fraction"],
                      batch_size=8, seed=config["seed"])  # the members' common validation split
    hits = total = 0
    with torch.no_grad():
        for batch in data.val_dataloader():
            inputs = {k: batch[k] for k in ensemble.members[0].input_names if k in batch}
            probs = sum(m(**inputs).softmax(-1) for m in ensemble.members) / 2
            hits += int((probs.argmax(-1) == batch["y"]).sum())
            total += len(batch["y"])
    assert metrics["val/acc"] == pytest.approx(hits / total)


@pytest.mark.slow
def test_a_weighted_ensemble_trial_is_scored_on_its_cross_fitted_validation(tmp_path: Path) -> None:
    import torch

    from cnnlstm.engine.data import RecipeData, load_bundle
    from cnnlstm.engine.ensemble import cross_fitted_probabilities, load_run_model

    plan, config = _trial_config(tmp_path)
    config["trainer"].update(ensemble=3, ensemble_weights="fit")
    metrics = fit_trial(config, tmp_path / "trial", [])
    assert {"member0/weight", "member2/weight", "val/acc"} <= set(metrics)
    ensemble = load_run_model(tmp_path / "trial", config).eval()  # the members, with their fitted weights
    data = RecipeData(load_bundle(config["data"], seed=config["seed"]), val_fraction=config["data"]["val_fraction"],
                      batch_size=8, seed=config["seed"])
    probs, targets = [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            inputs = {k: batch[k] for k in ensemble.members[0].input_names if k in batch}
            probs.append(torch.stack([m(**inputs).softmax(-1) for m in ensemble.members]))
            targets.append(batch["y"])
    rows = torch.as_tensor(data.val_set.indices)  # toy series name no groups: each row its own
    crossed = cross_fitted_probabilities(torch.cat(probs, 1).double(), torch.cat(targets), rows, seed=config["seed"])
    assert metrics["val/acc"] == pytest.approx(float((crossed.argmax(1) == torch.cat(targets)).float().mean()))


def test_an_ensemble_trial_with_refit_is_refused_before_training(tmp_path: Path) -> None:
    from cnnlstm.errors import ConfigError

    plan, config = _trial_config(tmp_path)
    config["trainer"].update(ensemble=2, refit=True)
    with pytest.raises(ConfigError, match="no score to rank"):
        fit_trial(config, tmp_path / "trial", [])
    assert not (tmp_path / "trial").exists()
