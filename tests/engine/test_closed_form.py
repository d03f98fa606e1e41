"""A closed-form model (``minirocket``) through ``cnnlstm fit``: no training loop, the split it fits on, its place
in an ensemble beside a trained ``lstm_fcn``, and its export; against aeon's MiniRocketClassifier on one split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.engine import evaluate_run, fit
from cnnlstm.engine.rundir import read_config, weights_path
from cnnlstm.errors import ConfigError
from cnnlstm.export import OnnxPredictor, export_run
from cnnlstm.models.minirocket import ALPHAS
from cnnlstm.tune.trial_fit import fit_trial

RECIPE = {"name": "closed_form", "seed": 0,
          "data": {"spec": "ucr:GunPoint", "val_fraction": 0.2, "batch_size": 16},
          "model": {"name": "minirocket", "num_features": 2_000},
          "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False},
          "early_stopping": {"enabled": False}}
TINY_LSTM_FCN = {"name": "lstm_fcn", "hidden_size": 4, "filters": [4, 8, 4]}


def _aeon_arrays(split) -> tuple[np.ndarray, np.ndarray]:
    samples = [split[i] for i in range(len(split))]
    x = np.stack([np.asarray(s["x"], dtype=np.float32).T for s in samples])  # (N, F, T)
    return x, np.array([int(s["y"]) for s in samples])


def test_minirocket_fits_in_closed_form_on_the_training_split(tmp_path: Path) -> None:
    result = fit(RECIPE, out=tmp_path / "run", verbose=False)
    m = result.metrics
    assert m["weights"] == "closed_form" and m["epochs"] == 1
    assert m["fit/alpha"] in ALPHAS and m["fit/seq_len"] == 150
    assert m["train_samples"] == 40 and m["val_samples"] == 10  # validation held out, and scored
    assert {"val/acc", "val/loss", "test/acc"} <= set(m)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()  # no training loop ran
    again = evaluate_run(tmp_path / "run").metrics  # rebuilt from the run directory alone
    assert again["test/acc"] == pytest.approx(m["test/acc"])


def test_fit_on_validation_matches_aeons_minirocket_classifier(tmp_path: Path) -> None:
    from aeon.classification.convolution_based import MiniRocketClassifier

    recipe = {**RECIPE, "model": {"name": "minirocket", "fit_on_validation": True}}
    m = fit(recipe, out=tmp_path / "run", verbose=False).metrics
    assert m["train_samples"] == 50 and m["val_samples"] == 0
    assert not any(k.startswith("val/") for k in m)  # in-sample for this model: not reported
    bundle = load_dataset("ucr:GunPoint")
    reference = MiniRocketClassifier(random_state=0).fit(*_aeon_arrays(bundle.train))
    x_test, y_test = _aeon_arrays(bundle.test)
    expected = float((reference.predict(x_test) == y_test).mean())
    assert m["test/acc"] == pytest.approx(expected, abs=1.5 / len(y_test))  # a tie may tip one series


def test_ensemble_averages_a_trained_lstm_fcn_with_minirocket_fitted_on_everything(tmp_path: Path) -> None:
    recipe = {**RECIPE, "model": TINY_LSTM_FCN,
              "trainer": {**RECIPE["trainer"], "ensemble_models": ["model", {"name": "minirocket",
                                                                             "fit_on_validation": True}]}}
    result = fit(recipe, out=tmp_path / "run", verbose=False, overrides=["model.hidden_size=6"])
    m = result.metrics
    assert "member0/val/acc" in m and "member1/val/acc" not in m
    assert m["members/val/acc"] == m["member0/val/acc"]  # the mean over members that hold validation out
    assert "val/acc" not in m and "test/acc" in m  # the average has seen the validation split through member 1
    # entry "model" is the recipe's own model section, with the override
    assert read_config(tmp_path / "run" / "members" / "0")["model"] == {**TINY_LSTM_FCN, "hidden_size": 6}
    assert read_config(tmp_path / "run" / "members" / "1")["model"]["name"] == "minirocket"

    # Reference: the two members' softmax averaged by hand on the test split.
    from cnnlstm.engine import load_weights

    members = [load_weights(weights_path(tmp_path / "run" / "members" / str(k))) for k in range(2)]
    bundle = load_dataset("ucr:GunPoint")  # the recipe normalises nothing
    x = torch.stack([bundle.test[i]["x"] for i in range(len(bundle.test))])
    y = torch.tensor([int(bundle.test[i]["y"]) for i in range(len(bundle.test))])
    with torch.no_grad():
        mean = sum(member(x=x).softmax(1) for member in members) / 2
    assert m["test/acc"] == pytest.approx(float((mean.argmax(1) == y).float().mean()), abs=1e-6)

    export_run(tmp_path / "run", formats=("onnx",))
    predictor = OnnxPredictor(tmp_path / "run" / "export" / "model.onnx")
    got = torch.as_tensor(np.asarray(predictor(x=x[:5]))).softmax(1)  # the graph gives the log of the mean
    np.testing.assert_allclose(got.numpy(), mean[:5].numpy(), atol=1e-4)


def test_tune_refuses_a_model_fitted_on_validation(tmp_path: Path) -> None:
    recipe = {**RECIPE, "model": {"name": "minirocket", "fit_on_validation": True}}
    with pytest.raises(ConfigError, match="fit_on_validation"):
        fit_trial(recipe, tmp_path / "trial", [])
