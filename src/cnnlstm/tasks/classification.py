"""Classification: series, clips, single images and image + question (VQA) data.

Cross-entropy (label smoothing, when set, on the training loss only); accuracy and macro-F1 every epoch; the
confusion matrix at test time; for VQA batches (a ``qtype`` key) also the accuracy of each question type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from cnnlstm.errors import ConfigError
from cnnlstm.tasks.base import OptimConfig, StageDict, Task
from cnnlstm.tasks.weighted_mean import WeightedMean

if TYPE_CHECKING:
    from cnnlstm.data.info import DataInfo

__all__ = ["ClassificationTask"]


class ClassificationTask(Task):
    """Train and evaluate a model whose output is class logits (B, K).

    Logged metrics: ``{stage}/loss``, ``{stage}/acc``, ``{stage}/f1`` (macro), and for VQA data
    ``{stage}/acc_{question_type}``. After testing, :attr:`confusion` holds the (K, K) confusion matrix
    (rows: true class, columns: predicted).

    Args:
        model: a registered model with ``output_kind == "logits"``.
        num_classes: K; defaults to ``model.num_classes``.
        class_names: K names, for reports and predictions.
        question_types: names of the ``qtype`` values (index -> name) for per-type accuracy.
        optim: optimiser settings.

    Shape:
        - batch ``y``: (B,) int64 class indices; model output (B, K).

    Example:
        >>> task = ClassificationTask(create_model("lstm_fcn", in_channels=6, num_classes=4))  # doctest: +SKIP
    """

    monitor = "val/acc"
    monitor_mode = "max"

    @classmethod
    def info_kwargs(cls, info: DataInfo) -> dict[str, Any]:
        """Class names, and the question types of VQA data (accuracy per type)."""
        return {"class_names": info.class_names, "question_types": info.extras.get("question_types")}

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        question_types: Sequence[str] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
    ) -> None:
        if getattr(model, "output_kind", "logits") != "logits":
            raise ConfigError(f"classification needs a model that outputs logits, "
                              f"{getattr(model, 'model_name', type(model).__name__)} outputs {model.output_kind}")
        self.num_classes = int(num_classes if num_classes is not None else model.num_classes)
        if self.num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, got {self.num_classes}")
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ConfigError(f"the data has {len(self.class_names)} classes but the model predicts "
                              f"{self.num_classes}; "
                              f"set model.num_classes={len(self.class_names)} or leave it out")
        self.question_types = list(question_types or [])
        super().__init__(model, optim)
        # validate_args=False: the checks read label values on the host (a device sync per update on a GPU); the
        # data layer has already refused labels outside [0, K).
        self.confusion_metric = MulticlassConfusionMatrix(self.num_classes, validate_args=False)
        self.type_accuracy = StageDict({
            # A weighted mean (weight 1 inside the type, 0 outside) never sees an empty update.
            stage: nn.ModuleList(WeightedMean() for _ in self.question_types)
            for stage in ("val", "test")
        })
        self.confusion: Tensor | None = None

    def make_metrics(self, stage: str) -> MetricCollection:
        return MetricCollection({
            "acc": MulticlassAccuracy(self.num_classes, average="micro", validate_args=False),
            "f1": MulticlassF1Score(self.num_classes, average="macro", validate_args=False),
        })

    supports_mixup = True

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        if stage == "train" and self.optim.mixup:
            return self.mixup_step(batch)
        return self.score(self(batch), batch, stage)

    def mixup_step(self, batch: dict[str, Any]) -> Tensor:
        """Mixup (``optim.mixup = alpha``): train on ``lam * batch + (1 - lam) * shuffled batch``.

        ``lam ~ Beta(alpha, alpha)``, one per batch, folded to ``lam >= 0.5`` so the batch's own labels lead (and
        are the ones the training accuracy counts). Every float input the model reads is blended; ``lengths``
        takes the longer of each pair (the padding of the shorter one is zeros); the loss is
        ``lam * CE(logits, y) + (1 - lam) * CE(logits, y[perm])``, label smoothing applied to both terms.

        Raises:
            ConfigError: the model reads a non-float input (e.g. question word ids), which cannot be blended.
        """
        y = batch["y"]  # (B,)
        alpha = float(self.optim.mixup)
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        lam = max(lam, 1.0 - lam)
        perm = torch.randperm(len(y), device=y.device)  # (B,)
        mixed = dict(batch)
        for key in self.model.input_names:
            value = batch.get(key)
            if not isinstance(value, Tensor):
                continue
            if key == "lengths":
                mixed[key] = torch.maximum(value, value[perm])
            elif value.is_floating_point():
                mixed[key] = lam * value + (1.0 - lam) * value[perm]
            else:
                raise ConfigError(f"optim.mixup blends float inputs, but the model also reads {key!r} "
                                  f"({value.dtype}); set optim.mixup=0 for this model")
        logits = self(mixed)
        loss = self.score(logits, batch, "train")  # the leading labels: loss term and training metrics
        other = F.cross_entropy(logits.float(), y[perm], label_smoothing=self.optim.label_smoothing)
        return lam * loss + (1.0 - lam) * other

    def score(self, logits: Tensor, batch: dict[str, Any], stage: str) -> Tensor:
        """Loss of ``logits`` against ``batch["y"]``; updates the stage's metrics (the TBPTT task shares it).

        Args:
            logits: the model's class scores for the batch.
            batch: the collated batch (``y``; ``qtype`` for VQA data).
            stage: ``"train"`` (label smoothing applies), ``"val"`` or ``"test"``.

        Shape:
            - logits: ``(B, K)``; batch ``y``: ``(B,)``.

        Example:
            >>> loss = task.score(task(batch), batch, "val")  # doctest: +SKIP
        """
        y = batch["y"]  # (B,)
        # Smoothing regularises training; evaluation losses stay plain cross-entropy, comparable across recipes.
        smoothing = self.optim.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)  # mean over targets other than -100
        if stage != "train":  # an evaluation batch of only unseen answers (-100) has no loss term, not a NaN one
            loss = torch.nan_to_num(loss, nan=0.0)
        preds = logits.detach().argmax(dim=-1)  # (B,)
        # A test answer training never gave (user VQA data) has target -100: no class can be right, so it is
        # scored as some other class than the prediction, which counts it wrong in accuracy and F1.
        unseen = y < 0
        scored = torch.where(unseen, (preds + 1) % self.num_classes, y)  # (B,)
        if stage == "train":
            self.update_train_metrics(preds, scored)  # applied once an epoch (Task.update_train_metrics)
        else:
            self.metrics[stage].update(preds, scored)
        if stage == "test":
            self.confusion_metric.update(preds[~unseen], y[~unseen])
        if stage in self.type_accuracy and "qtype" in batch:
            correct = (preds == y).float()  # (B,)
            for q, metric in enumerate(self.type_accuracy[stage]):
                metric.update(correct, weight=(batch["qtype"] == q).float())
        return loss

    def on_stage_epoch_end(self, stage: str, values: dict[str, float]) -> None:
        if stage in self.type_accuracy:
            for name, metric in zip(self.question_types, self.type_accuracy[stage], strict=True):
                values[f"acc_{name}"] = float(metric.compute())
                metric.reset()
        if stage == "test":
            self.confusion = self.confusion_metric.compute().cpu()  # (K, K)
            self.confusion_metric.reset()

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> Tensor:
        """Class probabilities (B, K) for a batch."""
        return self(batch).float().softmax(dim=-1)
