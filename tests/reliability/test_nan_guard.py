"""When the loss stops being a number, training stops with a clear message and the last good checkpoint stays.

Faults are injected two ways: a model whose forward turns NaN from a given training step on (monkeypatched,
so the exact step is known), and a learning rate that makes the weights overflow. (Data with values near the
float32 limit, x * 1e37, did not make LSTM-FCN diverge: BatchNorm rescales it and the LSTM saturates.) CTC's impossible
alignments (a label longer than the model's output) are checked at the loss: ``zero_infinity`` must turn
them into a zero loss and zero gradient, not an inf that would stop training.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from reliability_helpers import TINY_FIT, assert_usage_error, run_cli

from cnnlstm.models import create_model, get_model_class
from cnnlstm.tasks import CTCTask, Task


def _fit(tmp_path: Path, data: Path, epochs: int) -> tuple[list[str], Path]:
    out = tmp_path / "run"
    argv = ["fit", "--recipe", "basic_motions", "--data", f"npz:{data}", *TINY_FIT, f"trainer.max_epochs={epochs}",
            "data.val_fraction=0.25", "early_stopping.enabled=false", "--out", str(out)]
    return argv, out


@pytest.mark.parametrize("deferred", [False, True], ids=["read-at-once", "read-one-step-late"])
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_npz: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     deferred: bool) -> None:
    """Read one step late (as on a GPU), the NaN step's update has happened: no checkpoint may hold it."""
    monkeypatch.setattr(Task, "defer_loss_reads", deferred)
    cls = get_model_class("lstm_fcn")
    original = cls.forward
    calls = {"train": 0}

    def forward(self, *args, **kwargs):  # NaN from the 5th training batch on: after at least two whole epochs
        out = original(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] >= 5:
                return out * float("nan")
        return out

    monkeypatch.setattr(cls, "forward", forward)
    argv, out = _fit(tmp_path, tiny_npz, epochs=5)
    result = run_cli(argv)
    assert_usage_error(result, "the loss became nan", "lower optim.lr", "last good checkpoint")
    # At once: stopped before the NaN batch's backward. Late: at the next batch, or at the epoch's end.
    assert calls["train"] in ((5, 6) if deferred else (5,)), "training went on after the loss became NaN"
    epoch = int(re.search(r"at epoch (\d+)", result.error_line()).group(1))  # 1-based, as the message prints it
    assert epoch >= 3
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == epoch - 2  # 0-based: the epoch before the one that diverged; its weights are clean
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in best["state_dict"].values() if v.is_floating_point())


def test_a_diverging_learning_rate_stops_at_the_first_bad_step(tiny_npz: Path, tmp_path: Path) -> None:
    """No injected fault: AdamW with lr=1e30 and no clipping blows the weights up in one step."""
    argv, out = _fit(tmp_path, tiny_npz, epochs=2)
    result = run_cli([*argv, "--set", "optim.lr=1e30", "optim.weight_decay=0", "trainer.gradient_clip_val=null"])
    assert_usage_error(result, "epoch 1", "the loss became nan", "lower optim.lr")
    assert not (out / "checkpoints" / "best.safetensors").exists()  # nothing half-trained is passed off as a model


# -- CTC: labels longer than the model's output ---------------------------------------------------------------
def _crnn_batch(width: int, targets: list[list[int]]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(t) for t in targets])
    padded = torch.zeros(len(targets), int(lengths.max()), dtype=torch.long)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t)
    return {"x": torch.rand(len(targets), 1, 32, width), "targets": padded, "target_lengths": lengths}


def test_ctc_target_longer_than_the_output_gives_zero_loss_not_inf() -> None:
    torch.manual_seed(0)
    model = create_model("crnn", num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8))
    task = CTCTask(model)
    # Width 16 -> 4 output columns; "1 2 1 2 1 2" needs at least 6 (and repeats need blanks between them).
    feasible, impossible = [1, 2], [1, 2, 1, 2, 1, 2]
    batch = _crnn_batch(16, [feasible, impossible])
    log_probs, lengths = task.scores(batch)
    assert lengths.tolist() == [4, 4]
    raw = F.ctc_loss(log_probs.transpose(0, 1), batch["targets"], lengths, batch["target_lengths"], blank=0,
                     reduction="none")
    assert torch.isinf(raw[1]) and torch.isfinite(raw[0])  # the control: without zero_infinity it is inf

    loss = task.step(batch, "train")
    assert torch.isfinite(loss)
    # mean reduction: each loss divided by its target length, then averaged over the batch; the impossible
    # sample counts as 0, so the batch loss is half the feasible sample's normalised loss.
    torch.testing.assert_close(loss, raw[0] / len(feasible) / 2)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ctc_batch_of_only_impossible_targets_does_not_stop_training() -> None:
    model = create_model("crnn", num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8))
    loss = CTCTask(model).step(_crnn_batch(8, [[1, 2, 3], [4, 4, 4]]), "train")  # 2 columns for 3+ labels
    assert loss.item() == 0.0  # finite: the NaN guard does not fire; the samples teach nothing
