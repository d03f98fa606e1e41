"""Text recognition with CTC: a model scores every image column, CTC aligns the scores with the text.

Loss: ``F.ctc_loss`` on log-probabilities (blank = index 0, ``zero_infinity=True`` so an impossible
alignment, a label longer than the model's output, gives zero loss instead of inf; such labels are counted
and the first training epoch that has any warns once, on rank zero, with how many and what to change).
Metrics on greedy decodes: sequence accuracy (the whole string right) and character error rate (torchmetrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.text import CharErrorRate

from cnnlstm.errors import ConfigError
from cnnlstm.layers.decoding import ctc_greedy_decode
from cnnlstm.tasks.base import OptimConfig, Task

if TYPE_CHECKING:
    from cnnlstm.data.info import DataInfo

__all__ = ["CTCTask", "too_long_for_ctc"]


def too_long_for_ctc(targets: Tensor, target_lengths: Tensor, lengths: Tensor) -> Tensor:
    """Which labels no CTC alignment fits: each needs one column per character plus a blank between repeats.

    Args:
        targets: zero-padded label ids.
        target_lengths: true label lengths.
        lengths: valid output columns per sample.

    Shape:
        - targets: (B, L); target_lengths, lengths: (B,); returns: (B,) bool.

    Example:
        >>> too_long_for_ctc(torch.tensor([[1, 1, 2], [1, 2, 0]]), torch.tensor([3, 2]), torch.tensor([3, 3]))
        tensor([ True, False])
    """
    steps = torch.arange(max(targets.shape[1] - 1, 0), device=targets.device)  # (L-1,)
    repeats = (targets[:, 1:] == targets[:, :-1]) & (steps < (target_lengths - 1)[:, None])  # (B, L-1)
    return target_lengths + repeats.sum(dim=1) > lengths  # (B,)


class CTCTask(Task):
    """Train and evaluate a per-column model (``output_kind == "sequence_logits"``) with CTC.

    Logged metrics: ``{stage}/loss``, ``{stage}/acc`` (exact string match) and ``{stage}/cer``.

    Args:
        model: a registered model giving (B, W', K) scores, blank = 0; if it has ``output_lengths(widths)``
            the valid steps per sample come from it, else all W' steps are used.
        charset: index -> character (index 0 is the blank and never printed).
        optim: optimiser settings.

    Shape:
        - batch ``x``: (B, C, H, W); ``lengths``: (B,) pixel widths of right-padded lines, optional;
          ``targets``: (B, L) int64 in 1..K-1, zero-padded; ``target_lengths``: (B,); ``text``: the true
          strings, optional (metrics compare with them instead of the decoded targets).

    Example:
        >>> task = CTCTask(create_model("crnn", num_classes=11), charset=["-", *"0123456789"])  # doctest: +SKIP
    """

    monitor = "val/cer"
    monitor_mode = "min"

    @classmethod
    def info_kwargs(cls, info: DataInfo) -> dict[str, Any]:
        """The character set (``extras["charset"]``, blank first) that decodes predictions."""
        return {"charset": info.extras.get("charset")}

    def __init__(
        self,
        model: nn.Module,
        *,
        charset: Sequence[str] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
    ) -> None:
        if getattr(model, "output_kind", None) != "sequence_logits":
            raise ConfigError("the ctc task needs a model that outputs per-step scores (sequence_logits), "
                              f"{getattr(model, 'model_name', type(model).__name__)} outputs {model.output_kind}")
        num_classes = int(model.num_classes)
        # Without a charset, label i prints as the i-th printable ASCII character (CER still counts right).
        self.charset = list(charset) if charset else ["<blank>"] + [chr(33 + i) for i in range(num_classes - 1)]
        if len(self.charset) != num_classes:
            raise ConfigError(f"the charset has {len(self.charset)} entries (blank included) but the model scores "
                              f"{num_classes} classes; set model.num_classes={len(self.charset)}")
        super().__init__(model, optim)
        # Training labels no alignment fits (summed across processes at the epoch's end), and whether we said so.
        self.too_long, self.targets_seen = SumMetric(), SumMetric()
        self._warned_too_long = False

    def make_metrics(self, stage: str) -> MetricCollection:
        if stage == "train":  # decoding every training batch would cost more than the step itself
            return MetricCollection({})
        return MetricCollection({"acc": MeanMetric(), "cer": CharErrorRate()})

    def decode(self, ids: Sequence[int]) -> str:
        """Characters for label ids (blank and out-of-range ids skipped)."""
        return "".join(self.charset[i] for i in ids if 0 < i < len(self.charset))

    def scores(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Log-probabilities (B, W', K) and the valid steps per sample (B,)."""
        logits = self(batch)  # (B, W', K)
        B, W = logits.shape[:2]
        if hasattr(self.model, "output_lengths"):
            # Padded text lines carry their true pixel widths in ``lengths``; unpadded ones are full width.
            widths = batch.get("lengths")
            if widths is None:
                widths = torch.full((B,), batch["x"].shape[-1], dtype=torch.long, device=logits.device)
            lengths = self.model.output_lengths(widths.to(logits.device)).clamp(max=W)  # (B,)
        else:
            lengths = torch.full((B,), W, dtype=torch.long, device=logits.device)
        return logits.float().log_softmax(dim=-1), lengths

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        log_probs, lengths = self.scores(batch)  # (B, W', K), (B,)
        targets, target_lengths = batch["targets"], batch["target_lengths"]  # (B, L), (B,)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths,  # CTC wants (W', B, K)
                          blank=0, reduction="mean", zero_infinity=True)
        if stage != "train":
            self._update_text_metrics(log_probs.detach(), lengths, targets, target_lengths, stage, batch.get("text"))
        elif not self._warned_too_long:  # counted on the device: no host sync per step
            self.too_long.update(too_long_for_ctc(targets, target_lengths, lengths).sum())
            self.targets_seen.update(targets.new_tensor(len(targets)))
        return loss

    def on_stage_epoch_end(self, stage: str, values: dict[str, float]) -> None:
        if stage != "train" or self._warned_too_long:
            return
        too_long, seen = int(self.too_long.compute()), int(self.targets_seen.compute())
        self.too_long.reset()
        self.targets_seen.reset()
        if too_long:
            self._warned_too_long = True
            rank_zero_warn(
                f"{too_long} of {seen} training labels in epoch {self.current_epoch + 1} are longer than the model's "
                "output columns (a label needs one column per character, plus one between repeated characters); "
                "CTC scores them as zero loss, so they teach nothing. Use wider images or fewer pooling steps "
                "(a smaller width reduction in the model) so every label fits", category=UserWarning)

    def _update_text_metrics(self, log_probs: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor,
                             stage: str, texts: list[str] | None = None) -> None:
        preds = [self.decode(ids) for ids in ctc_greedy_decode(log_probs, lengths)]
        # The data's own text when it has it: a character the charset lacks is then still counted as an error.
        truth = texts if texts is not None else [
            self.decode(t[:n].tolist()) for t, n in zip(targets, target_lengths, strict=True)]
        exact = torch.tensor([p == t for p, t in zip(preds, truth, strict=True)], dtype=torch.float32)
        self.metrics[stage]["acc"].update(exact.to(log_probs.device))
        self.metrics[stage]["cer"].update(preds, truth)

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> list[str]:
        """Decoded strings for a batch."""
        log_probs, lengths = self.scores(batch)
        return [self.decode(ids) for ids in ctc_greedy_decode(log_probs, lengths)]
