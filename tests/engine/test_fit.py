"""fit -> run directory -> evaluate_run, on the toy model and data (tests/engine/toys.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlstm._io import atomic_write
from cnnlstm.engine import evaluate_run, fit, load_weights, save_weights
from cnnlstm.models import create_model
from cnnlstm.tasks import TrainingDivergedError

RECIPE = {
    "name": "toy",
    "seed": 0,
    "data": {"spec": "toy:a", "batch_size": 8, "options": {"n_train": 30, "n_test": 12}},
    "model": {"name": "toy_lstm", "hidden_size": 8},
    "optim": {"lr": 0.03},
    "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run")
    return fit(RECIPE, out=out, verbose=False)


def test_run_directory_holds_everything(run) -> None:
    d = run.run_dir
    for name in ("config.yaml", "metrics.json", "history.json", "data_info.json", "learning_curves.png",
                 "confusion_matrix.png", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                 "checkpoints/best.safetensors", "logs/metrics.csv"):
        assert (d / name).is_file(), name
    metrics = json.loads((d / "metrics.json").read_text())
    assert {"test/acc", "test/f1", "val/acc", "train/loss", "best_epoch", "fit_seconds", "params"} <= set(metrics)
    assert metrics["train_samples"] + metrics["val_samples"] == 30 and metrics["test_samples"] == 12


def test_best_epoch_is_chosen_on_validation(run) -> None:
    history = run.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    best = max(history, key=lambda h: (h["val/acc"], -h["epoch"]))  # first epoch with the top val/acc
    assert run.metrics["best_epoch"] == best["epoch"]
    assert run.metrics["val/acc"] == best["val/acc"]


def test_evaluate_run_reproduces_test_metrics_exactly(run) -> None:
    again = evaluate_run(run.run_dir)
    for key, value in again.metrics.items():
        assert run.metrics[key] == value, key


def test_weights_roundtrip_rebuilds_the_model(tmp_path: Path) -> None:
    model = create_model("toy_lstm", in_channels=2, num_classes=3, hidden_size=4)
    path = save_weights(model, tmp_path / "w.safetensors")
    loaded = load_weights(path)
    x = torch.randn(2, 5, 2)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert loaded.model_kwargs == {"in_channels": 2, "num_classes": 3, "hidden_size": 4}


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a.txt", "one")
    atomic_write(tmp_path / "a.txt", "two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "two"


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    from cnnlstm.tasks.classification import ClassificationTask

    original = ClassificationTask.step

    def step(self, batch, stage):  # the loss turns NaN in the second epoch
        loss = original(self, batch, stage)
        return loss * float("nan") if self.current_epoch >= 1 and stage == "train" else loss

    monkeypatch.setattr(ClassificationTask, "step", step)
    with pytest.raises(TrainingDivergedError, match=r"epoch 2.*nan.*lower optim.lr"):
        fit(RECIPE, out=tmp_path, verbose=False)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def _fit_lstm_fcn(out: Path, accelerator: str, precision: str):
    recipe = {**RECIPE, "model": {"name": "lstm_fcn", "hidden_size": 4, "filters": [4, 8, 4]},
              "trainer": {**RECIPE["trainer"], "max_epochs": 2, "accelerator": accelerator, "devices": 1,
                          "precision": precision}}
    return fit(recipe, out=out, verbose=False)  # a partial recipe: merged with the defaults


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_a_cuda_fit_is_reproduced_by_evaluating_its_run(precision: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA paths: packed LSTM, fused AdamW, deferred loss reading (and fp16 autocast with a gradient scaler).
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions, to compare with the CPU
    run = _fit_lstm_fcn(tmp_path, "gpu", precision)
    assert [h["epoch"] for h in run.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in run.history)
    # fp16 autocast runs only on CUDA; a float32 run is re-scored on the CPU, a different device and kernels.
    again = evaluate_run(run.run_dir, accelerator="gpu" if precision == "16-mixed" else "cpu")
    assert again.metrics and set(again.metrics) <= set(run.metrics)
    for key, value in again.metrics.items():
        assert value == pytest.approx(run.metrics[key], abs=1e-3 if precision == "16-mixed" else 1e-4), key


@pytest.mark.slow  # about 10 s on 2 busy cores (GunPoint, one epoch); the toy runs above also fit partial dicts
def test_fit_takes_a_partial_recipe_dict(tmp_path: Path) -> None:
    """A partial dict is merged with the defaults as a YAML file is: the run's config.yaml is the same."""
    import yaml

    from cnnlstm.engine.recipe import resolve_config

    recipe = {"model": {"name": "lstm_fcn"}, "data": {"spec": "ucr:GunPoint"}}
    sets = ["trainer.max_epochs=1", "trainer.accelerator=cpu", "model.filters=[4,4,4]", "model.hidden_size=4"]
    result = fit(recipe, overrides=sets, out=tmp_path / "run", verbose=False)
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(recipe))
    expected = resolve_config(str(tmp_path / "same.yaml"), overrides=sets)
    del expected["name"]
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written == result.config == expected
    assert written["optim"]["lr"] == 1e-3 and written["data"]["val_fraction"] == 0.2
