"""optim.mixup: the training step against the blend and the two-label loss computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from cnnlstm.config import OptimConfig
from cnnlstm.errors import ConfigError
from cnnlstm.tasks import build_task
from cnnlstm.tasks.base import Task
from cnnlstm.tasks.tbptt_classification import TBPTTClassificationTask


class Linear(nn.Module):
    """Logits linear in the (length-masked) input, so a blend of inputs is easy to check by hand."""

    input_names = ("x", "lengths")
    num_classes = 3
    output_kind = "logits"

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        self.seen: dict[str, Tensor] = {}

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # x: (B, 4, 2)
        self.seen = {"x": x, "lengths": lengths}
        return self.fc(x.flatten(1))


def _batch() -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(3)
    return {"x": torch.randn(6, 4, 2, generator=gen), "y": torch.tensor([0, 1, 2, 0, 1, 2]),
            "lengths": torch.tensor([4, 3, 2, 4, 1, 4])}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_step_is_the_hand_blend_and_two_label_loss(smoothing: float) -> None:
    torch.manual_seed(0)
    model = Linear()
    task = build_task("classification", model, None, {"mixup": 0.4, "label_smoothing": smoothing})
    batch = _batch()
    torch.manual_seed(11)
    loss = task.step(batch, "train")
    # the same draws, by hand: lam from Beta(0.4, 0.4) folded to >= 0.5, then the permutation
    torch.manual_seed(11)
    lam = float(torch.distributions.Beta(0.4, 0.4).sample())
    lam = max(lam, 1 - lam)
    perm = torch.randperm(6)
    x = lam * batch["x"] + (1 - lam) * batch["x"][perm]
    torch.testing.assert_close(model.seen["x"], x)
    assert model.seen["lengths"].tolist() == [max(a, b) for a, b in zip(batch["lengths"].tolist(),
                                                                       batch["lengths"][perm].tolist(), strict=True)]
    logits = model.fc(x.flatten(1))
    expected = (lam * F.cross_entropy(logits, batch["y"], label_smoothing=smoothing)
                + (1 - lam) * F.cross_entropy(logits, batch["y"][perm], label_smoothing=smoothing))
    torch.testing.assert_close(loss, expected)
    assert 0.5 <= lam <= 1.0 and not torch.equal(perm, torch.arange(6))


def test_evaluation_and_mixup_zero_do_not_blend() -> None:
    model = Linear()
    batch = _batch()
    build_task("classification", model, None, {"mixup": 0.4}).step(batch, "val")
    assert model.seen["x"] is batch["x"]
    build_task("classification", model, None, {}).step(batch, "train")
    assert model.seen["x"] is batch["x"]


def test_mixup_refuses_inputs_it_cannot_blend_and_tasks_without_class_labels() -> None:
    class Words(Linear):
        input_names = ("x", "question")

    task = build_task("classification", Words(), None, {"mixup": 0.2})
    with pytest.raises(ConfigError, match="also reads 'question'"):
        task.step({**_batch(), "question": torch.zeros(6, 5, dtype=torch.long)}, "train")
    class Regression(Task):  # any task that does not declare supports_mixup
        def make_metrics(self, stage: str) -> MetricCollection:
            return MetricCollection({})

    with pytest.raises(ConfigError, match="classification only, not Regression"):
        Regression(Linear(), {"mixup": 0.2})
    with pytest.raises(ConfigError, match="classification only, not TBPTTClassificationTask"):
        TBPTTClassificationTask(Linear(), tbptt_steps=2, optim={"mixup": 0.2})
    with pytest.raises(ConfigError, match="optim.mixup must be >= 0"):
        OptimConfig(mixup=-0.1)
