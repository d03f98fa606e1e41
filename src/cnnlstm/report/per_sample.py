"""Per-sample test losses and predictions: which test examples a run gets most wrong.

Each task's evaluation loss, taken per sample instead of averaged over the batch, so a batch of one gives
exactly the task's own ``test/loss`` for that sample:

* classification: cross-entropy of the sample;
* CTC: the sample's CTC loss divided by its label length (``F.ctc_loss``'s ``"mean"`` reduction per sample);
* forecasting: the mean squared error over the sample's forecast frames;
* captioning: the token cross-entropy averaged over the sample's caption tokens (padding ignored).

With the loss come the prediction and the truth in words (class names, decoded strings, captions), and what a
report draws beside them (the character error rate of a text line, the forecast frames).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.text import char_error_rate

from cnnlstm.layers.decoding import ctc_greedy_decode
from cnnlstm.tasks import CaptioningTask, ClassificationTask, CTCTask, ForecastingTask, Task
from cnnlstm.tasks.captioning import PAD

__all__ = ["SampleScore", "score_batch", "score_samples", "worst_samples"]

#: one test sample: ``index`` (its position in the test split), ``loss``, ``true``, ``pred`` and extras
#: (``probability`` for classes, ``cer`` for text lines, ``forecast`` frames (K, C, H, W) for forecasts)
SampleScore = dict[str, Any]


def _classification(task: ClassificationTask, batch: dict[str, Any]) -> list[SampleScore]:
    logits = task(batch).float()  # (B, K)
    y = batch["y"]  # (B,)
    losses = F.cross_entropy(logits, y, reduction="none")  # (B,)
    probs = logits.softmax(dim=-1)  # (B, K)
    preds = probs.argmax(dim=-1)  # (B,)
    names = task.class_names
    return [{"loss": float(loss), "true": names[int(t)], "pred": names[int(p)], "probability": float(prob[p])}
            for loss, t, p, prob in zip(losses, y, preds, probs, strict=True)]


def _ctc(task: CTCTask, batch: dict[str, Any]) -> list[SampleScore]:
    log_probs, lengths = task.scores(batch)  # (B, W', K), (B,)
    targets, target_lengths = batch["targets"], batch["target_lengths"]  # (B, L), (B,)
    losses = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths,  # CTC wants (W', B, K)
                        blank=0, reduction="none", zero_infinity=True)  # (B,)
    losses = losses / target_lengths.clamp(min=1).to(losses.dtype)  # what reduction="mean" averages
    preds = [task.decode(ids) for ids in ctc_greedy_decode(log_probs, lengths)]
    truth = [task.decode(t[:n].tolist()) for t, n in zip(targets, target_lengths, strict=True)]
    return [{"loss": float(loss), "true": t, "pred": p, "cer": float(char_error_rate(p, t))}
            for loss, t, p in zip(losses, truth, preds, strict=True)]


def _forecasting(task: ForecastingTask, batch: dict[str, Any]) -> list[SampleScore]:
    pred = task(batch).float()  # (B, K, C, H, W)
    losses = (pred - batch["y"].float()).pow(2).flatten(1).mean(dim=1)  # (B,)
    return [{"loss": float(loss), "true": "", "pred": "", "forecast": p.cpu()}
            for loss, p in zip(losses, pred, strict=True)]


def _captioning(task: CaptioningTask, batch: dict[str, Any]) -> list[SampleScore]:
    captions = batch["captions"]  # (B, L)
    logits = task.model(images=batch["images"], captions=captions)[:, : captions.shape[1] - 1]  # (B, L-1, V)
    target = captions[:, 1:]  # (B, L-1)
    tokens = F.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=PAD, reduction="none")  # (B, L-1)
    counts = (target != PAD).sum(dim=1).clamp(min=1)  # (B,)
    losses = tokens.sum(dim=1) / counts  # (B,)
    preds = [task.decode(ids) for ids in task.generate(batch["images"])]
    truth = [task.decode(row.tolist()) for row in captions]
    return [{"loss": float(loss), "true": t, "pred": p} for loss, t, p in zip(losses, truth, preds, strict=True)]


_SCORERS: list[tuple[type[Task], Callable[[Any, dict[str, Any]], list[SampleScore]]]] = [
    (ClassificationTask, _classification), (CTCTask, _ctc), (ForecastingTask, _forecasting),
    (CaptioningTask, _captioning),
]


@torch.no_grad()
def score_batch(task: Task, batch: dict[str, Any]) -> list[SampleScore]:
    """Per-sample loss, truth and prediction for one collated batch (the task is put in eval mode).

    Args:
        task: a classification, CTC, forecasting or captioning task.
        batch: a collated batch on the task's device.

    Returns:
        one :data:`SampleScore` per sample, without ``index``.

    Example:
        >>> [s["loss"] for s in score_batch(task, batch)]  # doctest: +SKIP
        [0.12, 2.31]
    """
    task.eval()
    for kind, scorer in _SCORERS:
        if isinstance(task, kind):
            return scorer(task, batch)
    raise TypeError(f"no per-sample scores for {type(task).__name__}")


def score_samples(task: Task, batches: Iterable[dict[str, Any]]) -> list[SampleScore]:
    """:func:`score_batch` over an unshuffled loader of the test split; ``index`` counts samples in order.

    Example:
        >>> scores = score_samples(task, DataLoader(test_set, batch_size=8, collate_fn=pad_collate))  # doctest: +SKIP
    """
    device = next(task.parameters()).device
    out: list[SampleScore] = []
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        for score in score_batch(task, batch):
            out.append({"index": len(out), **score})
    return out


def worst_samples(scores: list[SampleScore], k: int) -> list[SampleScore]:
    """The ``k`` samples with the highest loss, worst first (ties: the earlier sample first).

    Example:
        >>> [s["index"] for s in worst_samples([{"index": 0, "loss": 1.0}, {"index": 1, "loss": 3.0}], 1)]
        [1]
    """
    return sorted(scores, key=lambda s: (-s["loss"], s["index"]))[: max(0, k)]
