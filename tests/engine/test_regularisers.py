"""Overfitting control: each regulariser acts in training only; the gap and the overfitting warning."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from toys import ToyLSTM

from cnnlstm.engine import fit, resolve_config
from cnnlstm.errors import ConfigError
from cnnlstm.report.generalisation import generalisation_gap, overfitting_warning
from cnnlstm.tasks import ClassificationTask

RECIPE = {"name": "toy", "seed": 0, "data": {"spec": "toy:a", "batch_size": 8, "options": {"n_train": 30, "n_test": 8}},
          "model": {"name": "toy_lstm", "hidden_size": 4}, "optim": {"lr": 0.05, "scheduler": "none"},
          "trainer": {"max_epochs": 4, "accelerator": "cpu", "enable_progress_bar": False},
          "early_stopping": {"enabled": False}}


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(4, 5, 2, generator=g), "y": torch.tensor([0, 1, 2, 1])}


class _Trainer:  # what training_step reads from a trainer
    current_epoch = 0
    global_step = 0

    class strategy:  # noqa: N801
        @staticmethod
        def reduce_boolean_decision(value: bool, all: bool = True) -> bool:  # noqa: A002
            return value


def _attach(task: ClassificationTask) -> None:
    task.trainer = _Trainer()
    task.log = lambda *args, **kwargs: None  # no Trainer to log to


def test_label_smoothing_changes_the_training_loss_only() -> None:
    torch.manual_seed(0)
    task = ClassificationTask(ToyLSTM(), optim={"label_smoothing": 0.2})
    _attach(task)
    batch = _batch()
    logits = task.model(batch["x"]).detach()
    task.training_step(batch, 0)
    train = float(task.losses["train"].compute())
    task.validation_step(batch, 0)
    val = float(task.losses["val"].compute())
    assert train == pytest.approx(float(F.cross_entropy(logits, batch["y"], label_smoothing=0.2)), rel=1e-6)
    assert val == pytest.approx(float(F.cross_entropy(logits, batch["y"])), rel=1e-6)
    assert train != pytest.approx(val)


def test_augmentation_touches_training_batches_only() -> None:
    from cnnlstm.data.augment import build_augmentation

    seen: list[torch.Tensor] = []
    model = ToyLSTM()
    original = model.forward
    model.forward = lambda x, lengths=None: (seen.append(x.clone()), original(x, lengths))[1]  # type: ignore
    task = ClassificationTask(model)
    _attach(task)
    task.set_augmentation(build_augmentation("series", {"jitter": 0.5, "p": 1.0, "seed": 0}), "x")
    batch = _batch()
    task.eval()  # even an evaluation-mode module augments in training_step, and never elsewhere
    task.training_step(batch, 0)
    task.validation_step(batch, 0)
    task.test_step(batch, 0)
    task.predict_step(batch)
    assert not torch.equal(seen[0], batch["x"])
    assert all(torch.equal(x, batch["x"]) for x in seen[1:])
    assert torch.equal(batch["x"], _batch()["x"])  # the loader's batch itself is left as it was


def test_dropout_is_active_in_training_and_off_in_evaluation() -> None:
    from cnnlstm.models import create_model

    model = create_model("lstm_fcn", in_channels=2, num_classes=3, hidden_size=4, filters=[4, 4, 4], dropout=0.9)
    x = torch.randn(2, 6, 2)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


class _Recorder(pl.Callback):
    """Weights at the start of every epoch and at the very end (after SWA's own on_train_end)."""

    def __init__(self) -> None:
        self.starts: list[dict[str, torch.Tensor]] = []
        self.end: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}


@pytest.mark.slow
def test_swa_replaces_the_weights_with_the_average_of_its_epochs(tmp_path: Path) -> None:
    recorder = _Recorder()
    recipe = {**RECIPE, "optim": {**RECIPE["optim"], "swa": {"lr": 0.01, "start_epoch": 2}}}
    result = fit(recipe, out=tmp_path, verbose=False, callbacks=[recorder])
    averaged = recorder.starts[1:]  # Lightning averages the weights at the start of epochs 2..max_epochs
    for key, value in recorder.end.items():
        expected = torch.stack([s[key].float() for s in averaged]).mean(0)
        assert torch.allclose(value, expected, atol=1e-6), key
    assert "swa/val/loss" in result.metrics and result.metrics["weights"] in ("swa", "best")


def test_swa_and_augment_keys_are_validated() -> None:
    with pytest.raises(ConfigError, match="start_epoch"):
        resolve_config({**RECIPE, "optim": {"swa": {"start_epoch": 0}}})
    with pytest.raises(ConfigError, match="optim.swa.lrr"):
        resolve_config({**RECIPE, "optim": {"swa": {"lrr": 0.1}}})
    assert resolve_config({**RECIPE, "optim": {"swa": None}})["optim"]["swa"] is None
    with pytest.raises(ConfigError, match="valid"):
        fit({**RECIPE, "data": {**RECIPE["data"], "augment": {"jiter": 0.1}}}, out=None,
            verbose=False)


HEALTHY = [{"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e} for e in range(1, 11)]
# validation bottoms out at epoch 4, then climbs for 6 epochs while training keeps falling
OVERFIT = [{"epoch": e, "train/loss": 1.0 / e, "val/loss": 0.5 + 0.05 * abs(e - 4)} for e in range(1, 11)]


def test_overfitting_warning_fires_on_rising_validation_loss_only() -> None:
    assert overfitting_warning(HEALTHY) is None
    message = overfitting_warning(OVERFIT)
    assert message is not None and "rose for 6 epochs after epoch 4" in message
    assert overfitting_warning(OVERFIT[:8]) is None  # 4 epochs of rise: not yet
    both_rise = [{**h, "train/loss": h["val/loss"]} for h in OVERFIT]
    assert overfitting_warning(both_rise) is None  # training got worse too: divergence, not overfitting


def test_generalisation_gap_is_reported_at_the_best_epoch() -> None:
    history = [{"epoch": 1, "train/loss": 0.9, "val/loss": 1.0, "train/acc": 0.5, "val/acc": 0.5},
               {"epoch": 2, "train/loss": 0.25, "val/loss": 0.75, "train/acc": 0.875, "val/acc": 0.625}]
    gap = generalisation_gap(history, 2)
    assert gap["gap/loss"] == pytest.approx(0.5) and gap["gap/acc"] == pytest.approx(0.25)
    assert gap["best/train/loss"] == 0.25
