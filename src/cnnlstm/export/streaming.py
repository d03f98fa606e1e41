"""Streaming inference: feed one step (a frame, a sensor reading) at a time, get the prediction so far.

After ``t`` steps, :meth:`StreamingSession.output` equals the model run on the first ``t`` steps
(``model(x[:, :t])``), but each step costs O(1) instead of O(t): the LSTM (or ConvLSTM) state is carried.

Which models stream exactly, and how:

- ``frame_lstm`` (unidirectional, pooling ``last``/``mean``/``max``): encode the new frame (its pooled vector
  or its grid), one LSTM (or ConvLSTM) step, running mean or max of the outputs.
- ``deep_conv_lstm`` and ``lstm_fcn`` (unidirectional): their "same" convolutions look ``r`` steps ahead, so
  the features of the last ``r`` steps change until ``r`` more steps arrive. Features become *final* once
  they cannot change; the LSTM state (DeepConvLSTM) or the running sum for global pooling (LSTM-FCN's FCN
  branch) advances over final features only, and each output re-runs just the ``r`` provisional steps from a
  small buffer of recent inputs.
- ``conv_lstm_forecaster``: the encoder's ConvLSTM state is carried; :meth:`~StreamingSession.output`
  forecasts the next frames from it.

Everything else raises :class:`~cnnlstm.errors.ConfigError` saying why (:data:`NOT_STREAMABLE`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError

__all__ = ["StreamingSession", "NOT_STREAMABLE"]

#: why a model cannot stream exactly.
NOT_STREAMABLE = {
    "mlstm_fcn": "its squeeze-excite gates rescale every step by the mean over the whole series, so each new step "
    "changes all earlier conv features; run the model on a sliding window instead",
    "crnn": "its bidirectional LSTM gives every column context from the columns to its right; a text line is read "
    "whole",
    "captioner": "it reads one image and writes a caption; use Captioner.generate",
    "multi_input": "it fuses one image with one sequence; there is no stream of steps to carry",
}


def _unidirectional(lstm: nn.LSTM, name: str) -> None:
    if lstm.bidirectional:
        raise ConfigError(f"{name} with bidirectional=True cannot stream: the backward direction reads the future")


class _LSTMState:
    """A unidirectional nn.LSTM advanced step by step; ``h`` is the last layer's hidden state."""

    def __init__(self, lstm: nn.LSTM) -> None:
        self.lstm = lstm
        self.state: tuple[Tensor, Tensor] | None = None

    def advance(self, steps: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple]:
        """Run ``steps`` (B, n, F) from ``state`` (default: the carried one); returns outputs and new state."""
        return self.lstm(steps, self.state if state is None else state)  # (B, n, H), ((L, B, H), (L, B, H))


class _FrameLSTM:
    def __init__(self, model: nn.Module) -> None:
        rnn = model.rnn
        # A ConvLSTM or an attention LSTM over frame grids: each layer steps itself (rnn.step)
        self.conv = getattr(model, "frame_features", "pooled") in ("conv_lstm", "attention")
        if not self.conv:
            _unidirectional(rnn.lstm, "frame_lstm")
        if rnn.pooling not in ("last", "mean", "max"):
            raise ConfigError(
                f"frame_lstm with pooling={rnn.pooling!r} does not stream: attention re-weights every past step "
                "with each new one; use pooling 'last', 'mean' or 'max'"
            )
        self.model, self.pooling = model, rnn.pooling
        self.lstm = None if self.conv else _LSTMState(rnn.lstm)
        self.conv_state: list | None = None
        self.previous: Tensor | None = None  # the last frame's features (for frame differences)
        self.pooled: Tensor | None = None
        self.t = 0

    def push(self, frame: Tensor) -> None:
        if frame.dim() != 4 or frame.shape[1] != self.model.in_channels:
            raise ShapeError(
                f"frame_lstm streams frames (B, C, H, W) with C={self.model.in_channels}, got {tuple(frame.shape)}"
            )
        feat = self.model.encode_frame(frame)  # (B, D_frame): pooled vector or flattened grid
        step = self.model.recurrent_input(feat.unsqueeze(1), self.previous)[:, 0]  # (B, F): normalised, differences
        self.previous = feat
        if self.conv:
            out, self.conv_state = self.model.rnn.step(step, self.conv_state)  # (B, 2 C_h)
        else:
            out, self.lstm.state = self.lstm.advance(step.unsqueeze(1))  # (B, 1, H)
            out = out[:, 0]  # (B, H)
        self.t += 1
        if self.pooling == "last" or self.pooled is None:
            self.pooled = out if self.pooling != "mean" else out.clone()
        elif self.pooling == "mean":
            self.pooled = self.pooled + out  # running sum; divided in output()
        else:
            self.pooled = torch.maximum(self.pooled, out)

    def output(self) -> Tensor:
        pooled = self.pooled / self.t if self.pooling == "mean" else self.pooled  # (B, H)
        return self.model.forward_head(pooled)  # (B, K)


class _ConvFront:
    """Non-causal "same" convolutions over a stream: exact features from a buffer of recent inputs.

    ``left``/``right``: how many steps the conv stack reads before/after a position. Positions at least
    ``right`` steps before the newest are final; the rest are provisional and recomputed on each push.
    """

    def __init__(self, features: Callable[[Tensor], Tensor], left: int, right: int) -> None:
        self.features, self.left, self.right = features, left, right
        self.buffer: list[Tensor] = []  # inputs from position self.start on
        self.start = 0  # stream position of buffer[0]
        self.committed = 0  # positions < committed are final and consumed
        self.t = 0

    def push(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Add one step ``(B, F)``; return newly final features ``(B, n, D)`` and provisional ones ``(B, m, D)``."""
        self.buffer.append(x)
        self.t += 1
        window = torch.stack(self.buffer, dim=1)  # (B, t - start, F)
        feats = self.features(window)  # (B, t - start, D), exact from position start + left (or 0) on
        final_end = max(self.committed, self.t - self.right)
        new_final = feats[:, self.committed - self.start : final_end - self.start]  # (B, n, D)
        provisional = feats[:, final_end - self.start :]  # (B, m, D)
        self.committed = final_end
        keep_from = max(0, self.committed - self.left)  # earliest input a future window needs
        self.buffer = self.buffer[keep_from - self.start :]
        self.start = keep_from
        return new_final, provisional


def _same_reach(kernel_sizes: list[int]) -> tuple[int, int]:
    # PyTorch / Keras "same": (k - 1) // 2 steps before a position, k // 2 after (equal for odd k).
    return sum((k - 1) // 2 for k in kernel_sizes), sum(k // 2 for k in kernel_sizes)


class _DeepConvLSTM:
    def __init__(self, model: nn.Module) -> None:
        _unidirectional(model.lstm, "deep_conv_lstm")
        self.model, self.lstm = model, _LSTMState(model.lstm)
        left, right = _same_reach([conv.conv.kernel_size[0] for conv in model.convs])
        self.front = _ConvFront(self._features, left, right)
        self.h: Tensor | None = None

    def _features(self, x: Tensor) -> Tensor:
        B, T, F_ = x.shape
        z = x.transpose(1, 2).reshape(B * F_, 1, T)  # (B*F, 1, T): each sensor channel its own series
        for conv in self.model.convs:
            z = conv(z)  # (B*F, filters, T)
        return z.reshape(B, F_ * self.model.filters, T).transpose(1, 2)  # (B, T, F*filters)

    def push(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.model.in_channels:
            raise ShapeError(
                f"deep_conv_lstm streams steps (B, F) with F={self.model.in_channels}, got {tuple(x.shape)}"
            )
        final, provisional = self.front.push(x)
        if final.shape[1]:
            _, self.lstm.state = self.lstm.advance(final)
        self.provisional = provisional

    def output(self) -> Tensor:
        if self.provisional.shape[1]:
            _, (h, _) = self.lstm.advance(self.provisional)  # from the committed state, not stored
        else:
            h = self.lstm.state[0]
        return self.model.forward_head(h[-1])  # (B, K)


class _LSTMFCN:
    def __init__(self, model: nn.Module) -> None:
        if model.shuffle:
            raise ConfigError("lstm_fcn with shuffle=True does not stream: its LSTM steps through variables, not time")
        _unidirectional(model.lstm, "lstm_fcn")
        self.model, self.lstm = model, _LSTMState(model.lstm)
        kernels = [block.conv.kernel_size[0] for block in model.blocks]
        left, right = _same_reach(kernels)
        self.front = _ConvFront(self._features, left, right)
        self.total: Tensor | None = None  # sum of final FCN features over time

    def _features(self, x: Tensor) -> Tensor:
        z = x.transpose(1, 2)  # (B, F, T)
        for block in self.model.blocks:
            z = block(z, None, None)  # (B, filters, T)
        return z.transpose(1, 2)  # (B, T, filters[-1])

    def push(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.model.in_channels:
            raise ShapeError(f"lstm_fcn streams steps (B, F) with F={self.model.in_channels}, got {tuple(x.shape)}")
        _, self.lstm.state = self.lstm.advance(x.unsqueeze(1))  # the LSTM branch is causal: one step
        final, self.provisional = self.front.push(x)
        total = final.sum(dim=1)  # (B, filters[-1])
        self.total = total if self.total is None else self.total + total

    def output(self) -> Tensor:
        mean = (self.total + self.provisional.sum(dim=1)) / self.front.t  # (B, filters[-1]): global average
        lstm = self.model.lstm_dropout(self.lstm.state[0][-1])  # (B, H)
        return self.model.forward_head(torch.cat([lstm, mean], dim=1))  # (B, K)


class _Forecaster:
    def __init__(self, model: nn.Module) -> None:
        if model.encoder.bidirectional:
            raise ConfigError("conv_lstm_forecaster with a bidirectional encoder cannot stream")
        self.model = model
        self.states: list | None = None

    def push(self, frame: Tensor) -> None:
        model = self.model
        if frame.dim() != 4:
            raise ShapeError(f"conv_lstm_forecaster streams frames (B, C, H, W), got {tuple(frame.shape)}")
        model._check(frame.unsqueeze(1))
        x = F.pixel_unshuffle(frame, model.patch_size)  # (B, C*p*p, H/p, W/p)
        _, self.states = model.encoder(x.unsqueeze(1), state=self.states)  # one (h, c) per layer

    def output(self) -> Tensor:
        states = list(self.states)  # the forecast must not move the encoder's state
        steps = []
        for _ in range(self.model.horizon):
            below = None
            for k, cell in enumerate(self.model.forecaster):
                states[k] = cell(below, states[k])  # (h, c), each (B, C_k, H/p, W/p)
                below = states[k][0]
            steps.append(torch.cat([h for h, _ in states], dim=1))  # (B, num_features, H/p, W/p)
        return self.model.forward_head(torch.stack(steps, dim=1))  # (B, K, C, H, W)


_STREAMERS = {
    "frame_lstm": _FrameLSTM,
    "deep_conv_lstm": _DeepConvLSTM,
    "lstm_fcn": _LSTMFCN,
    "conv_lstm_forecaster": _Forecaster,
}


class StreamingSession:
    """Feed a sequence model one step at a time; its output after ``t`` steps equals ``model(x[:, :t])``.

    Runs a private eval-mode copy of the model under ``torch.no_grad``. See the module docstring for the
    models that stream and how; others raise ``ConfigError`` with the reason.

    Args:
        model: a registered sequence model.

    Shape:
        - step: frames ``(B, C, H, W)`` (``frame_lstm``, ``conv_lstm_forecaster``) or steps ``(B, F)``
          (``deep_conv_lstm``, ``lstm_fcn``).
        - output: the model's output for the steps so far (``(B, K)`` logits; ``(B, K, C, H, W)`` forecasts).

    Example:
        >>> from cnnlstm import create_model
        >>> model = create_model("deep_conv_lstm", num_classes=3, in_channels=2, hidden_size=8).eval()
        >>> session = StreamingSession(model)
        >>> for x_t in torch.randn(1, 6, 2).unbind(1):
        ...     logits = session.step(x_t)
        >>> logits.shape
        torch.Size([1, 3])
    """

    def __init__(self, model: nn.Module) -> None:
        name = getattr(model, "model_name", type(model).__name__)
        if name in NOT_STREAMABLE:
            raise ConfigError(f"{name} cannot stream exactly: {NOT_STREAMABLE[name]}")
        if name not in _STREAMERS:
            raise ConfigError(f"{name} has no streaming implementation; streamable models: {sorted(_STREAMERS)}")
        self.model = copy.deepcopy(model).eval()
        self._factory = _STREAMERS[name]
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next step starts a new sequence."""
        self._impl = self._factory(self.model)
        self.steps = 0

    @torch.no_grad()
    def push(self, step: Tensor) -> None:
        """Consume one step without computing an output (cheaper when predictions are needed only now and then)."""
        self._impl.push(step)
        self.steps += 1

    @torch.no_grad()
    def output(self) -> Tensor:
        """The model's output for all steps pushed so far."""
        if self.steps == 0:
            raise ShapeError("StreamingSession.output needs at least one step; push a frame first")
        return self._impl.output()

    def step(self, step: Tensor) -> Tensor:
        """Push one step and return the output so far."""
        self.push(step)
        return self.output()
