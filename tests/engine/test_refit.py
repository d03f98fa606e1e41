"""trainer.refit: the first fit picks the epoch count E on validation, a second fit on train + validation for exactly
E epochs (same initialisation, schedule over E) is the run's model, and only that model is tested."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from cnnlstm.data import load_dataset
from cnnlstm.engine import evaluate_run, fit, load_weights
from cnnlstm.engine.rundir import weights_path
from cnnlstm.errors import ConfigError

RECIPE = {"name": "toy_refit", "seed": 0,
          "data": {"spec": "toy:a", "batch_size": 8, "options": {"n_train": 30, "n_test": 12}},
          "model": {"name": "toy_lstm", "hidden_size": 4}, "optim": {"lr": 0.05, "scheduler": "cosine"},
          "trainer": {"max_epochs": 6, "accelerator": "cpu", "enable_progress_bar": False, "refit": True},
          "early_stopping": {"enabled": False, "monitor": "val/loss", "mode": "min"}}


class _Watch(pl.Callback):
    """Per trainer: its max_epochs, the weights it starts from, samples trained per epoch, the lr of each epoch,
    and whether it ran a test."""

    def __init__(self) -> None:
        self.fits: list[dict[str, Any]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fits.append({"max_epochs": trainer.max_epochs, "samples": [], "lrs": [], "tested": False,
                          "start": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fits[-1]["samples"].append(0)
        self.fits[-1]["lrs"].append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.fits[-1]["samples"][-1] += len(batch["y"])

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fits[-1]["tested"] = True


@pytest.mark.slow
def test_refit_trains_on_train_and_validation_for_the_chosen_epochs_and_is_the_tested_model(tmp_path: Path) -> None:
    watch = _Watch()
    result = fit(RECIPE, out=tmp_path / "run", verbose=False, callbacks=[watch])
    m = result.metrics
    first, refit = watch.fits
    best = m["best_epoch"]
    assert m["epochs"] == 6 and 1 <= best <= 6
    # The first fit trains on the 24 series left after the validation carve-out, is never tested.
    assert first["samples"] == [24] * 6 and m["train_samples"] == 24 and m["val_samples"] == 6
    assert not first["tested"]
    # The refit: every one of the 30 training series each epoch, exactly E epochs, from the same initial weights.
    assert refit["max_epochs"] == best and refit["samples"] == [30] * best
    assert m["refit/epochs"] == best and m["refit/train_samples"] == 30 and m["weights"] == "refit"
    assert all(torch.equal(first["start"][k], refit["start"][k]) for k in first["start"])
    # The cosine schedule spans the refit's own E epochs (the first fit's spans its 6).
    assert refit["lrs"] == pytest.approx([0.025 * (1 + math.cos(math.pi * e / best)) for e in range(best)])
    assert first["lrs"] == pytest.approx([0.025 * (1 + math.cos(math.pi * e / 6)) for e in range(6)])
    assert refit["tested"]
    run = tmp_path / "run"
    history = json.loads((run / "refit" / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, best + 1))
    assert len(json.loads((run / "history.json").read_text())) == 6  # the first fit's curves stay at the top

    # The test metrics are the refit model's: saved as the run's weights, scored by hand and by `test --run`.
    model = load_weights(weights_path(run)).eval()
    bundle = load_dataset("toy:a", n_train=30, n_test=12)
    batch = bundle.collate_fn([bundle.test[i] for i in range(len(bundle.test))])
    with torch.no_grad():
        logits = model(x=batch["x"], lengths=batch.get("lengths"))
    assert m["test/acc"] == pytest.approx(float((logits.argmax(1) == batch["y"]).float().mean()))
    assert m["test/loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, batch["y"])), rel=1e-5)
    assert evaluate_run(run).metrics["test/acc"] == m["test/acc"]
    selected = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(selected[f"model.{k}"], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="no validation score"):
        evaluate_run(run, split="val")


@pytest.mark.slow
def test_without_refit_the_validation_split_never_trains(tmp_path: Path) -> None:
    watch = _Watch()
    result = fit({**RECIPE, "trainer": {**RECIPE["trainer"], "refit": False}}, out=tmp_path / "run", verbose=False,
                 callbacks=[watch])
    assert len(watch.fits) == 1 and watch.fits[0]["samples"] == [24] * 6 and watch.fits[0]["tested"]
    assert "refit/epochs" not in result.metrics and result.metrics["weights"] == "best"
    assert not (tmp_path / "run" / "refit").exists()


@pytest.mark.slow
def test_every_ensemble_member_refits(tmp_path: Path) -> None:
    recipe = {**RECIPE, "trainer": {**RECIPE["trainer"], "max_epochs": 3, "ensemble": 2}}
    result = fit(recipe, out=tmp_path / "run", verbose=False)
    for k in range(2):
        member = json.loads((tmp_path / "run" / "members" / str(k) / "metrics.json").read_text())
        assert member["refit/epochs"] == member["best_epoch"] and member["refit/train_samples"] == 30
        assert "test/acc" not in member  # members are never tested on their own
    assert "test/acc" in result.metrics and "members/val/acc" in result.metrics
    assert "val/acc" not in result.metrics  # the members trained on validation: the ensemble has no score there


@pytest.mark.parametrize(("change", "message"), [
    ({"optim": {"lr": 0.05, "scheduler": "plateau"}}, "no validation loss"),
    ({"optim": {"lr": 0.05, "scheduler": "none", "swa": {"lr": 0.01, "start_epoch": 2}}}, "optim.swa"),
])
def test_refit_refuses_what_reads_validation(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit({**RECIPE, **change}, verbose=False)


@pytest.mark.slow
def test_a_refit_run_is_not_resumed(tmp_path: Path) -> None:
    from cnnlstm.engine import resume

    fit({**RECIPE, "trainer": {**RECIPE["trainer"], "max_epochs": 2}}, out=tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError, match="resuming one is not supported"):
        resume(tmp_path / "run", verbose=False)
