"""Truncated backpropagation through time (TBPTT) for long sequences; Lightning 2 no longer ships it.

A ``(B, T, ...)`` batch is cut into chunks of ``k`` steps. Each chunk runs from the recurrent state the
previous chunk ended in, but that state is detached, so a chunk's loss backpropagates through at most ``k``
steps: memory is bounded by ``k`` instead of ``T``, and (with an optimiser step per chunk) the weights are
updated ``ceil(T / k)`` times per batch. With ``k >= T`` it is exactly full BPTT.

Pieces:
    - :func:`lstm_chunk` (from :mod:`cnnlstm.layers.recurrent`, re-exported): one chunk of a batch-first
      ``nn.LSTM`` from a given ``(h, c)``, exact on padded batches (a sequence that has ended keeps its final
      state; padding never enters it).
    - :func:`check_tbptt_model`: refuse a model that cannot be trained in chunks, naming those that can.
    - :func:`truncated_bptt`: the chunk loop, for any ``forward_chunk(x, state, lengths) -> (out, state)``.
    - :class:`TBPTTMixin`: a LightningModule mixin with manual optimisation (one optimiser step per chunk).

A model supports TBPTT by exposing ``forward_chunk(x, state=None, lengths=None) -> (out, state)``:
``x`` is ``(B, k, ...)``, ``lengths`` the valid steps of each sequence in this chunk (0..k, ``None`` when
nothing is padded), ``state`` whatever the previous chunk returned (``None`` at the start), ``out`` the
chunk's per-step outputs ``(B, k, H)`` (zeros at padded steps). ``frame_lstm`` and
:class:`~cnnlstm.models.cached_features.CachedFeaturesModel` have one; the final state's ``h[-1]`` is the sequence
representation of ``pooling="last"``. A recipe turns it on with ``trainer.tbptt_steps`` (``docs/training.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.recurrent import LSTMState, SequenceLSTM, lstm_chunk

__all__ = ["LSTMState", "TBPTTResult", "TBPTTMixin", "check_tbptt_model", "detach_state", "lstm_chunk",
           "tbptt_models", "truncated_bptt"]


def detach_state(state: Any) -> Any:
    """Detach every tensor of a (nested tuple / list / dict) recurrent state; other values pass through.

    Example:
        >>> h = torch.ones(1, 2, 3, requires_grad=True)
        >>> detach_state((h, h * 2))[1].requires_grad
        False
    """
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple | list):
        return type(state)(detach_state(s) for s in state)
    if isinstance(state, dict):
        return {k: detach_state(v) for k, v in state.items()}
    return state


@dataclass
class TBPTTResult:
    """What :func:`truncated_bptt` returns.

    Attributes:
        loss: sum of the chunk losses (detached), a 0-dim tensor; 0 when no chunk had a loss.
        state: the state after the last chunk (detached).
        chunks: number of chunks run.
        backward_chunks: number of chunks whose loss was backpropagated.
    """

    loss: Tensor
    state: Any
    chunks: int
    backward_chunks: int


def truncated_bptt(
    forward_chunk: Callable[[Tensor, Any, Tensor | None], tuple[Tensor, Any]],
    x: Tensor,
    k: int,
    loss_fn: Callable[[Tensor, Any, slice], Tensor | None],
    *,
    lengths: Tensor | None = None,
    state: Any = None,
    backward: Callable[[Tensor], None] | None = None,
    after_backward: Callable[[int], None] | None = None,
) -> TBPTTResult:
    """Run ``x`` through ``forward_chunk`` in chunks of ``k`` steps, backpropagating each chunk's loss alone.

    The state passed on to the next chunk is detached, so gradients never cross a chunk boundary. Without
    ``after_backward`` the chunk gradients accumulate (their sum is the truncated gradient of the summed
    loss); with an optimiser step there, each chunk is one update (classic TBPTT).

    Args:
        forward_chunk: ``(x_chunk, state, chunk_lengths) -> (out, state)``, e.g. ``model.forward_chunk`` or
            ``functools.partial(lstm_chunk, lstm)``.
        x: the whole batch; time is dim 1.
        k: steps per chunk (>= 1); ``k >= T`` is full BPTT.
        loss_fn: ``(out, state, chunk) -> loss or None``; ``chunk`` is the ``slice`` of time steps, so targets
            are ``y[:, chunk]``. ``None`` skips the backward (e.g. a classifier's loss only at the last chunk).
        lengths: valid steps per sequence; each chunk gets ``clamp(lengths - start, 0, k)``.
        state: the initial state (``None``: the model's zeros).
        backward: how to backpropagate (default ``loss.backward()``; Lightning: ``self.manual_backward``).
        after_backward: called with the chunk index after each backward (optimiser step, clipping).

    Shape:
        - x: ``(B, T, ...)``; lengths: ``(B,)``.

    Example:
        >>> lstm, head = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 1)
        >>> x, y = torch.randn(2, 10, 3), torch.randn(2, 10, 1)
        >>> loss = lambda out, state, chunk: F.mse_loss(head(out), y[:, chunk])
        >>> truncated_bptt(functools.partial(lstm_chunk, lstm), x, 4, loss).chunks  # doctest: +SKIP
        3
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"TBPTT chunk length k must be a positive int, got {k!r}")
    if x.dim() < 2:
        raise ShapeError(f"truncated_bptt expects a sequence batch (B, T, ...), got {tuple(x.shape)}")
    T = x.shape[1]
    backward = backward or Tensor.backward
    total = x.new_zeros((), dtype=torch.float32)
    chunks = done = 0
    for start in range(0, T, k):
        chunk = slice(start, min(start + k, T))
        chunk_lengths = None if lengths is None else (lengths - start).clamp(0, chunk.stop - start)  # (B,)
        out, state = forward_chunk(x[:, chunk], state, chunk_lengths)  # out (B, k, ...)
        loss = loss_fn(out, state, chunk)
        if loss is not None:
            backward(loss)
            total = total + loss.detach().float()
            if after_backward is not None:
                after_backward(chunks)
            done += 1
        state = detach_state(state)  # the truncation: the next chunk's graph starts here
        chunks += 1
    return TBPTTResult(loss=total, state=state, chunks=chunks, backward_chunks=done)


#: why a registered model without ``forward_chunk`` cannot be trained in chunks exactly
_NOT_CHUNKABLE = {
    "lstm_fcn": "its convolutional branch pools over the whole series at once",
    "deep_conv_lstm": "its convolutions read steps on both sides of each step (not causal)",
}


def tbptt_models() -> list[str]:
    """Registered models that can train with truncated BPTT (their class has ``forward_chunk``).

    Example:
        >>> "frame_lstm" in tbptt_models()
        True
    """
    from cnnlstm.models import get_model_class, list_models  # here: the registry imports every model family

    return [name for name in list_models() if callable(getattr(get_model_class(name), "forward_chunk", None))]


def check_tbptt_model(model: nn.Module) -> None:
    """Refuse a model that cannot be trained in chunks, or whose chunked run would not be the same model.

    Args:
        model: a built model (or :class:`~cnnlstm.models.cached_features.CachedFeaturesModel`).

    Raises:
        ConfigError: no ``forward_chunk`` (the message names the models that have one), or a recurrent layer
            that is bidirectional or pools other than ``"last"``.

    Example:
        >>> check_tbptt_model(create_model("lstm_fcn", in_channels=3, num_classes=2))  # doctest: +SKIP
        Traceback (most recent call last):
        cnnlstm.errors.ConfigError: lstm_fcn cannot train with truncated BPTT ...
    """
    name = getattr(model, "model_name", type(model).__name__)
    if not callable(getattr(model, "forward_chunk", None)):
        why = _NOT_CHUNKABLE.get(name, "it has no forward_chunk(x, state, lengths)")
        raise ConfigError(f"{name} cannot train with truncated BPTT (trainer.tbptt_steps): {why}; models that can: "
                          f"{', '.join(tbptt_models())}; or drop trainer.tbptt_steps")
    for layer in model.modules():
        if isinstance(layer, SequenceLSTM):
            layer.check_chunkable(name)


class TBPTTMixin:
    """Truncated BPTT for a LightningModule: one optimiser step per chunk, with manual optimisation.

    Put it before the task class (``class MyTask(TBPTTMixin, ClassificationTask)``) and call
    :meth:`configure_tbptt` at the end of ``__init__``. It needs ``self.model.forward_chunk`` (see the
    module docstring). The default :meth:`tbptt_loss` classifies from the final hidden state at the last
    chunk (``model.forward_head(h[-1])``, i.e. ``pooling="last"``); override it for per-step targets.

    Under manual optimisation Lightning does not clip gradients or step schedulers: pass the clip value to
    :meth:`configure_tbptt` (and give the Trainer ``gradient_clip_val=None``); epoch-interval schedulers are
    stepped here at the end of each training epoch, after its validation (``ReduceLROnPlateau`` with
    ``val/loss``), where Lightning steps them in automatic optimisation. On a cnnlstm :class:`~cnnlstm.tasks.
    base.Task` the batch is augmented first and every chunk loss passes the task's NaN/inf guard before its
    backward, so a diverged loss never reaches the weights.

    Example:
        >>> class ClipTask(TBPTTMixin, ClassificationTask):  # doctest: +SKIP
        ...     def __init__(self, model, **kw):
        ...         super().__init__(model, **kw)
        ...         self.configure_tbptt(steps=16, clip_val=1.0)
    """

    tbptt_steps: int = 0
    tbptt_clip_val: float | None = None

    def configure_tbptt(self, steps: int, clip_val: float | None = None) -> None:
        """Switch to TBPTT with chunks of ``steps`` and optional gradient-norm clipping per chunk.

        Raises:
            ConfigError: ``steps`` is not a positive int, or the model cannot be trained in chunks
                (:func:`check_tbptt_model`).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"tbptt steps must be a positive int, got {steps!r}")
        check_tbptt_model(self.model)  # type: ignore[attr-defined]
        self.tbptt_steps = steps
        self.tbptt_clip_val = clip_val
        self.automatic_optimization = False

    def tbptt_loss(self, out: Tensor, state: Any, batch: dict[str, Any], chunk: slice) -> Tensor | None:
        """Loss of one chunk; default: cross-entropy of the final hidden state's logits at the last chunk."""
        if chunk.stop < batch["x"].shape[1]:
            return None
        logits = self.model.forward_head(state[0][-1])  # (B, K) from the last layer's h  # type: ignore[attr-defined]
        loss = F.cross_entropy(logits.float(), batch["y"])
        metrics = getattr(self, "metrics", None)
        if metrics is not None and "train" in metrics:  # cnnlstm tasks keep per-stage metric collections
            metrics["train"].update(logits.detach().argmax(dim=-1), batch["y"])
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        opt = self.optimizers()  # type: ignore[attr-defined]
        augment = getattr(self, "augment", None)
        batch = augment(batch) if augment is not None else batch  # training-only augmentation, as Task does
        guard = getattr(self, "check_loss_finite", None)

        def chunk_loss(out: Tensor, state: Any, chunk: slice) -> Tensor | None:
            loss = self.tbptt_loss(out, state, batch, chunk)
            if loss is not None and guard is not None:
                guard(loss)  # before the backward: a NaN never reaches the weights
            return loss

        def step(_: int) -> None:
            if self.tbptt_clip_val:
                self.clip_gradients(opt, gradient_clip_val=self.tbptt_clip_val,  # type: ignore[attr-defined]
                                    gradient_clip_algorithm="norm")
            opt.step()
            opt.zero_grad()

        opt.zero_grad()
        result = truncated_bptt(
            self.model.forward_chunk,  # type: ignore[attr-defined]
            batch["x"],
            self.tbptt_steps,
            chunk_loss,
            lengths=batch.get("lengths"),
            backward=self.manual_backward,  # type: ignore[attr-defined]
            after_backward=step,
        )
        size = len(batch["x"])
        losses = getattr(self, "losses", None)
        if losses is not None and "train" in losses:
            losses["train"].update(result.loss, weight=size)
        self.bar_loss = result.loss.detach()  # the engine's progress bar reads it when it refreshes
        return result.loss

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # type: ignore[misc]
        self._step_schedulers()

    def _step_schedulers(self) -> None:
        schedulers = self.lr_schedulers()  # type: ignore[attr-defined]
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = self.trainer.callback_metrics.get("val/loss")  # type: ignore[attr-defined]
                if value is not None:
                    scheduler.step(value)
            else:
                scheduler.step()
