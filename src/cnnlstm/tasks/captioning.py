"""Image captioning: teacher-forced cross-entropy for training, greedy generation and BLEU-4 to evaluate.

Vocabulary convention (docs/architecture.md): 0 ``<pad>``, 1 ``<start>``, 2 ``<end>``, 3 ``<unk>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.text import BLEUScore

from cnnlstm.errors import ConfigError
from cnnlstm.tasks.base import OptimConfig, Task

if TYPE_CHECKING:
    from cnnlstm.data.info import DataInfo

__all__ = ["CaptioningTask", "PAD", "START", "END"]

PAD, START, END = 0, 1, 2


class CaptioningTask(Task):
    """Train a captioner on teacher-forced next-token scores; evaluate greedy captions with BLEU-4.

    Logged metrics: ``{stage}/loss`` (token cross-entropy, padding ignored) and, at validation and test,
    ``{stage}/bleu4``.

    Args:
        model: a registered model with ``output_kind == "caption_logits"``, called as
            ``model(images=..., captions=...)`` with whole captions ``<start> ... <end>``, step t scoring
            word t+1 (L-1 or L steps); if it has
            ``generate(images, max_length)`` that is used for greedy captions, otherwise the task decodes
            greedily by re-running the teacher-forced forward one token at a time.
        vocab: index -> word.
        max_length: longest generated caption (tokens after ``<start>``).
        optim: optimiser settings.

    Shape:
        - batch ``images``: (B, C, H, W); ``captions``: (B, L) int64 ``<start> ... <end>`` zero-padded.

    Example:
        >>> task = CaptioningTask(create_model("captioner", vocab_size=30), vocab=vocab)  # doctest: +SKIP
    """

    monitor = "val/bleu4"
    monitor_mode = "max"

    @classmethod
    def info_kwargs(cls, info: DataInfo) -> dict[str, Any]:
        """The word vocabulary and the longest caption (``extras["vocab"]``, ``extras["max_caption_length"]``)."""
        return {"vocab": info.extras.get("vocab"), "max_length": int(info.extras.get("max_caption_length", 20))}

    def __init__(self, model: nn.Module, *, vocab: Sequence[str] | None = None, max_length: int = 20,
                 optim: OptimConfig | dict[str, Any] | None = None) -> None:
        if getattr(model, "output_kind", None) != "caption_logits":
            raise ConfigError("the captioning task needs a model that outputs caption_logits, "
                              f"{getattr(model, 'model_name', type(model).__name__)} outputs {model.output_kind}")
        size = int(model.num_classes)
        specials = ["<pad>", "<start>", "<end>", "<unk>"]
        self.vocab = list(vocab) if vocab else specials + [f"w{i}" for i in range(4, size)]
        if len(self.vocab) != size:
            raise ConfigError(f"the vocabulary has {len(self.vocab)} words but the model scores {size}; "
                              f"set model.vocab_size={len(self.vocab)}")
        self.max_length = int(max_length)
        super().__init__(model, optim)

    def make_metrics(self, stage: str) -> MetricCollection:
        if stage == "train":  # generation is sequential; only evaluate it where it is reported
            return MetricCollection({})
        return MetricCollection({"bleu4": BLEUScore(n_gram=4)})

    def decode(self, ids: Sequence[int]) -> str:
        """Words of a caption up to ``<end>`` (``<start>`` and padding skipped)."""
        words = []
        for i in ids:
            if i == END:
                break
            if i not in (PAD, START):
                words.append(self.vocab[i] if 0 <= i < len(self.vocab) else "<unk>")
        return " ".join(words)

    @torch.no_grad()
    def generate(self, images: Tensor, beam_size: int = 1) -> list[list[int]]:
        """Greedy (or beam search) captions as token ids (``<start>`` and padding may appear; :meth:`decode`
        skips them).

        Args:
            images: the images to caption.
            beam_size: hypotheses kept per image; above 1 the model needs its own ``generate``.

        Shape:
            - images: (B, C, H, W) -> B lists of at most ``max_length + 1`` ids.
        """
        if hasattr(self.model, "generate"):
            ids = self.model.generate(images, max_length=self.max_length, beam_size=beam_size)
            return [list(map(int, row)) for row in ids]
        if beam_size != 1:
            raise ConfigError(f"beam search needs a model with its own generate(); "
                              f"{getattr(self.model, 'model_name', type(self.model).__name__)} has none: use beam 1")
        B = images.shape[0]
        tokens = torch.full((B, 1), START, dtype=torch.long, device=images.device)  # (B, 1)
        done = torch.zeros(B, dtype=torch.bool, device=images.device)
        for _ in range(self.max_length):
            # A trailing pad makes step L-1 exist whether the model scores L-1 or L steps; it scores word L.
            padded = torch.cat([tokens, torch.zeros_like(tokens[:, :1])], dim=1)  # (B, L+1)
            logits = self.model(images=images, captions=padded)  # (B, L or L+1, V)
            nxt = logits[:, tokens.shape[1] - 1].argmax(dim=-1).masked_fill(done, PAD)  # (B,)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)  # (B, L+1)
            done |= nxt == END
            if bool(done.all()):
                break
        return tokens.tolist()

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        captions = batch["captions"]  # (B, L)
        logits = self.model(images=batch["images"], captions=captions)  # (B, L-1, V) or (B, L, V)
        # Step t scores word t+1; a model that also scores the word after the last one has nothing to match it.
        logits = logits[:, : captions.shape[1] - 1]  # (B, L-1, V)
        target = captions[:, 1:]  # (B, L-1)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=PAD,
                               label_smoothing=self.optim.label_smoothing if stage == "train" else 0.0)
        if stage != "train":
            preds = [self.decode(ids) for ids in self.generate(batch["images"])]
            # User data carries every caption of the image (several references, as in COCO); else the target.
            refs = batch.get("references") or [[self.decode(row.tolist())] for row in captions]
            self.metrics[stage]["bleu4"].update(preds, refs)
        return loss

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0, beam_size: int = 1) -> list[str]:
        """Greedy (``beam_size`` 1) or beam search captions (strings) for a batch of images."""
        return [self.decode(ids) for ids in self.generate(batch["images"], beam_size=beam_size)]
