"""trainer.ensemble_weights: fit: member weights fitted on validation log loss, cross-fitted validation scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import Tensor
from toys import FixedLogits

from cnnlstm.config import TrainerConfig
from cnnlstm.data import load_dataset
from cnnlstm.engine import evaluate_run, fit, load_weights
from cnnlstm.engine.data import RecipeData
from cnnlstm.engine.ensemble import (
    WEIGHTS_FILE,
    EnsembleClassifier,
    cross_fitted_probabilities,
    fit_member_weights,
)
from cnnlstm.engine.rundir import weights_path
from cnnlstm.errors import ConfigError, WeightsError

RECIPE = {"name": "toy_weighted", "seed": 0,
          "data": {"spec": "toy:a", "batch_size": 8, "val_fraction": 0.3, "options": {"n_train": 40, "n_test": 10}},
          "model": {"name": "toy_lstm", "hidden_size": 4}, "optim": {"lr": 0.01, "scheduler": "none"},
          "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False, "ensemble": 3,
                      "ensemble_weights": "fit"},
          "early_stopping": {"enabled": False}}


def _log_loss(weights: np.ndarray, probs: np.ndarray, targets: np.ndarray) -> float:
    right = probs[:, np.arange(len(targets)), targets]  # (M, N)
    return float(-np.log(weights @ right).mean())


def _random_probs(seed: int, members: int = 3, rows: int = 120, classes: int = 4) -> tuple[Tensor, Tensor]:
    """Members of unequal skill: member k puts extra mass k on the true class before the softmax."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (rows,), generator=gen)
    logits = torch.randn(members, rows, classes, generator=gen) * 1.5
    logits[:, torch.arange(rows), targets] += torch.arange(members, dtype=torch.float)[:, None] * 0.6
    return logits.softmax(-1).double(), targets


def test_weighted_ensemble_is_the_weighted_mean_of_probabilities() -> None:
    a, b = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    out = EnsembleClassifier([FixedLogits(a), FixedLogits(b)], [0.25, 0.75])(x=torch.zeros(2, 1))
    torch.testing.assert_close(out.softmax(1), 0.25 * a.softmax(1) + 0.75 * b.softmax(1))
    alone = EnsembleClassifier([FixedLogits(a), FixedLogits(b)], [1.0, 0.0])(x=torch.zeros(2, 1))
    torch.testing.assert_close(alone.softmax(1), a.softmax(1))  # a zero weight leaves its member out
    for bad in ([0.5, 0.6], [1.5, -0.5], [1.0], [float("nan"), 1.0]):
        with pytest.raises(WeightsError, match="sum to 1"):
            EnsembleClassifier([FixedLogits(a), FixedLogits(b)], bad)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitted_weights_minimise_the_log_loss_as_a_constrained_optimiser_finds(seed: int) -> None:
    probs, targets = _random_probs(seed)
    weights = fit_member_weights(probs, targets)
    assert float(weights.sum()) == pytest.approx(1.0) and bool((weights >= 0).all())
    p, y = probs.numpy(), targets.numpy()
    reference = minimize(_log_loss, np.full(3, 1 / 3), args=(p, y), method="SLSQP", bounds=[(0, 1)] * 3,
                         constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-14})
    assert reference.success
    assert _log_loss(weights.numpy(), p, y) <= reference.fun + 1e-7
    np.testing.assert_allclose(weights.numpy(), reference.x, atol=2e-3)
    assert _log_loss(weights.numpy(), p, y) < _log_loss(np.full(3, 1 / 3), p, y)  # better than the plain mean


def test_a_perfect_member_takes_all_the_weight_and_unseen_answers_are_left_out() -> None:
    targets = torch.tensor([0, 1, 1, 0, -100])  # the last row's answer was never seen in training
    perfect = F.one_hot(targets.clamp_min(0), 2).double() * 0.98 + 0.01
    noise = torch.full((5, 2), 0.5, dtype=torch.float64)
    weights = fit_member_weights(torch.stack([noise, perfect]), targets)
    assert weights[1] > 0.999
    with pytest.raises(ConfigError, match="known class"):
        fit_member_weights(torch.stack([noise, perfect]), torch.full((5,), -100))


def test_cross_fitted_probabilities_leave_out_each_rows_group() -> None:
    probs, targets = _random_probs(3, rows=60)
    groups = torch.arange(60) // 4  # 15 groups of 4 rows (questions about one image)
    crossed = cross_fitted_probabilities(probs, targets, groups, folds=15)  # one group a fold: leave-one-group-out
    for g in range(15):  # reference: a hand loop over the groups
        rows = groups == g
        w = fit_member_weights(probs[:, ~rows], targets[~rows])
        torch.testing.assert_close(crossed[rows], (w[:, None, None] * probs[:, rows]).sum(0))
    two = cross_fitted_probabilities(probs, targets, groups, folds=2, seed=1)
    torch.testing.assert_close(two.sum(1), torch.ones(60, dtype=torch.float64))
    with pytest.raises(ConfigError, match="val_fraction"):
        cross_fitted_probabilities(probs, targets, torch.zeros(60, dtype=torch.long))


@pytest.mark.parametrize("mode", ["fit", "words"])
def test_ensemble_weights_settings_are_checked(mode: str) -> None:
    with pytest.raises(ConfigError, match="mean, fit, words"):
        TrainerConfig(ensemble=2, ensemble_weights="best")
    with pytest.raises(ConfigError, match=f"ensemble_weights={mode} weighs the members of an ensemble"):
        TrainerConfig(ensemble_weights=mode)
    with pytest.raises(ConfigError, match="refit"):
        TrainerConfig(ensemble=2, ensemble_weights=mode, refit=True)
    TrainerConfig(ensemble_models=["lstm_fcn", "lstm_fcn"], ensemble_weights=mode)  # two members: accepted


def test_a_member_fitted_on_validation_is_refused_before_training(tmp_path: Path) -> None:
    recipe = {**RECIPE, "trainer": {**RECIPE["trainer"], "ensemble": None,
                                    "ensemble_models": ["model", {"name": "minirocket", "fit_on_validation": True}]}}
    with pytest.raises(ConfigError, match="fit_on_validation"):
        fit(recipe, out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run" / "members").exists()  # nothing trained


@pytest.mark.slow
def test_fit_weighs_members_on_validation_and_every_reader_uses_the_weights(tmp_path: Path, capsys) -> None:
    result = fit(RECIPE, out=tmp_path / "run", verbose=True)
    run = tmp_path / "run"
    weights = torch.tensor(json.loads((run / WEIGHTS_FILE).read_text())["weights"], dtype=torch.float64)
    assert weights.shape == (3,) and float(weights.sum()) == pytest.approx(1.0)
    shown = "  ".join(f"{k}:{w:.3f}" for k, w in enumerate(weights.tolist()))
    assert f"members weight    {shown} (fitted on validation" in capsys.readouterr().out
    assert [result.metrics[f"member{k}/weight"] for k in range(3)] == pytest.approx(weights.tolist())
    members = [load_weights(weights_path(run / "members" / str(k))).eval() for k in range(3)]

    # Reference: the members' softmax on the validation rows (the split the recipe's seed carves), by hand.
    bundle = load_dataset("toy:a", n_train=40, n_test=10)
    split = RecipeData(bundle, val_fraction=0.3, batch_size=8, seed=0, stratify=True)
    val = bundle.collate_fn([bundle.train[i] for i in split.val_set.indices])
    test = bundle.collate_fn([bundle.test[i] for i in range(len(bundle.test))])
    with torch.no_grad():
        val_probs = torch.stack([m(x=val["x"], lengths=val.get("lengths")).softmax(-1) for m in members]).double()
        test_probs = torch.stack([m(x=test["x"], lengths=test.get("lengths")).softmax(-1) for m in members]).double()
    torch.testing.assert_close(weights, fit_member_weights(val_probs, val["y"]), atol=1e-6, rtol=0)
    # val/*: cross-fitted (each row its own group here: toy series name no groups)
    crossed = cross_fitted_probabilities(val_probs, val["y"], torch.as_tensor(split.val_set.indices), seed=0)
    assert result.metrics["val/acc"] == pytest.approx(float((crossed.argmax(1) == val["y"]).float().mean()))
    assert result.metrics["val/loss"] == pytest.approx(float(F.nll_loss(crossed.log(), val["y"])), rel=1e-5)
    in_sample = (weights[:, None, None] * val_probs).sum(0)  # what the weights score on the rows they were fitted on
    assert float(F.nll_loss(in_sample.log(), val["y"])) < result.metrics["val/loss"] - 1e-4
    # test/*: the weighted mean of the members, here and when `cnnlstm test --run` rebuilds the run
    weighted = (weights[:, None, None] * test_probs).sum(0)
    assert result.metrics["test/acc"] == pytest.approx(float((weighted.argmax(1) == test["y"]).float().mean()))
    assert result.metrics["test/loss"] == pytest.approx(float(F.nll_loss(weighted.log(), test["y"])), rel=1e-5)
    again = evaluate_run(run).metrics
    assert again["test/loss"] == pytest.approx(result.metrics["test/loss"], rel=1e-6)

    (run / WEIGHTS_FILE).unlink()  # a weighted run without its weights is not silently averaged
    with pytest.raises(WeightsError, match=WEIGHTS_FILE):
        evaluate_run(run)


@pytest.mark.slow
def test_a_weighted_ensemble_exports_with_its_weights(tmp_path: Path) -> None:
    from cnnlstm.export import export_run
    from cnnlstm.export.predictor import predict_onnx

    rng = np.random.default_rng(0)
    y = np.arange(30) % 2
    x = (rng.normal(size=(30, 12, 2)) + y[:, None, None]).astype(np.float32)
    np.savez(tmp_path / "series.npz", X_train=x[:22], y_train=y[:22], X_test=x[22:], y_test=y[22:])
    recipe = {**RECIPE, "data": {"spec": f"npz:{tmp_path / 'series.npz'}", "batch_size": 8, "val_fraction": 0.3},
              "model": {"name": "lstm_fcn", "hidden_size": 4, "filters": [4, 4, 4], "kernel_sizes": [3, 3, 3]}}
    run = fit(recipe, out=tmp_path / "run", verbose=False).run_dir
    report = export_run(run, formats=("onnx",))[0]
    assert report.parity.passed, report.summary()
    weights = torch.tensor(json.loads((run / WEIGHTS_FILE).read_text())["weights"])
    members = [load_weights(weights_path(run / "members" / str(k))).eval() for k in range(3)]
    np.savez(tmp_path / "inputs.npz", X=x[22:])
    with torch.no_grad():
        probs = torch.stack([m(x=torch.from_numpy(x[22:])).softmax(-1) for m in members])  # (3, N, K)
    want = (weights[:, None, None] * probs).sum(0)
    rows = predict_onnx(run, [str(tmp_path / "inputs.npz")], report.path)
    for row, p in zip(rows, want, strict=True):
        assert row["probability"] == pytest.approx(float(p.max()), abs=1e-5)
