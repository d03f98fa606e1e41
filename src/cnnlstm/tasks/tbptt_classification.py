"""Classification trained with truncated BPTT: what ``trainer.tbptt_steps`` in a recipe builds.

The same loss and metrics as :class:`~cnnlstm.tasks.classification.ClassificationTask` (label smoothing on the
training loss, accuracy and macro-F1), computed from the final hidden state after the last chunk; validation,
test and predict run the whole sequence as usual, which for a unidirectional LSTM with ``pooling="last"`` is
the same function of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from cnnlstm.tasks.base import OptimConfig
from cnnlstm.tasks.classification import ClassificationTask
from cnnlstm.tasks.tbptt import TBPTTMixin

__all__ = ["TBPTTClassificationTask"]


class TBPTTClassificationTask(TBPTTMixin, ClassificationTask):
    """:class:`ClassificationTask` with one optimiser step per chunk of ``tbptt_steps`` time steps.

    Args:
        model: a model with ``forward_chunk`` (``frame_lstm``, or its feature-cache wrapper).
        tbptt_steps: time steps per chunk; ``>= T`` is full BPTT with one step per batch.
        clip_val: gradient-norm clip applied before every chunk's optimiser step (``None``: none).
        num_classes: K; defaults to ``model.num_classes``.
        class_names: K names.
        question_types: names of the ``qtype`` values.
        optim: optimiser settings.

    Shape:
        - batch ``x``: ``(B, T, ...)``; ``y``: ``(B,)``; ``lengths``: ``(B,)``, optional.

    Example:
        >>> task = TBPTTClassificationTask(create_model("frame_lstm", num_classes=4), tbptt_steps=8)  # doctest: +SKIP
    """

    supports_mixup = False  # chunks of one batch would each need the same blend: not supported

    def __init__(
        self,
        model: nn.Module,
        *,
        tbptt_steps: int,
        clip_val: float | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        question_types: Sequence[str] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model, num_classes=num_classes, class_names=class_names, question_types=question_types,
                         optim=optim)
        self.configure_tbptt(tbptt_steps, clip_val=clip_val)

    def tbptt_loss(self, out: Tensor, state: Any, batch: dict[str, Any], chunk: slice) -> Tensor | None:
        """Classification loss from the last layer's final ``h`` at the last chunk; earlier chunks have none."""
        if chunk.stop < batch["x"].shape[1]:
            return None
        return self.score(self.model.forward_head(state[0][-1]), batch, "train")  # logits (B, K)
