"""Training metrics updated once an epoch, and the progress bar's loss without a per-step ``self.log``."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from cnnlstm import create_model
from cnnlstm.engine.trainer import LossProgressBar, make_trainer
from cnnlstm.tasks import build_task


def _task():
    model = create_model("lstm_fcn", in_channels=2, num_classes=3, hidden_size=4, filters=(4, 4, 4),
                         kernel_sizes=(3, 3, 3))
    return build_task("classification", model, {}, {"lr": 1e-3, "scheduler": "none"})


def _batches() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(b, 6, 2, generator=g), "y": torch.randint(0, 3, (b,), generator=g)} for b in (4, 5, 3)]


def test_queued_training_updates_give_the_per_step_metric_values() -> None:
    task = _task().eval()
    reference = MetricCollection({"acc": MulticlassAccuracy(3, average="micro"),
                                  "f1": MulticlassF1Score(3, average="macro")})
    for batch in _batches():
        with torch.no_grad():
            logits = task(batch)
            task.score(logits, batch, "train")
        reference.update(logits.argmax(-1), batch["y"])  # the per-step update the engine used to make
    assert len(task._pending_train_updates) == 3
    task.flush_train_metrics()
    got, want = task.metrics["train"].compute(), reference.compute()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_state_dict_applies_the_queued_updates_so_checkpoints_hold_every_step() -> None:
    task = _task().eval()
    batch = _batches()[0]
    with torch.no_grad():
        task.score(task(batch), batch, "train")
    state = task.state_dict()  # what a mid-epoch checkpoint saves
    assert task._pending_train_updates == []
    # micro accuracy over 4 samples: every sample is a true positive or a false negative of its class
    assert int(state["metrics.train_.acc.tp"].sum() + state["metrics.train_.acc.fn"].sum()) == 4


def test_the_engines_bar_shows_the_tasks_latest_loss() -> None:
    task = _task()
    trainer, _ = make_trainer({"max_epochs": 1, "accelerator": "cpu"}, {"enabled": False}, task, None)
    bars = [c for c in trainer.callbacks if isinstance(c, pl.callbacks.ProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], LossProgressBar)
    task.bar_loss = 0.12345
    assert bars[0].get_metrics(trainer, task)["loss"] == 0.123
    task.bar_loss = torch.tensor(2.0)  # TBPTT keeps a tensor; it is read at a redraw only
    assert bars[0].get_metrics(trainer, task)["loss"] == 2.0
    quiet, _ = make_trainer({"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False}, {"enabled": False},
                            task, None)
    assert not any(isinstance(c, pl.callbacks.ProgressBar) for c in quiet.callbacks)
