"""Orchestration of a cost report: FLOPs and peak memory of a model at each sequence length and frame size.

Joining a CNN and an LSTM multiplies costs: the CNN runs once per frame, the LSTM once per step, and a training
step keeps every frame's activations for the backward pass. :func:`cost_report` measures, for each sequence
length ``T`` (and frame size ``H x W`` for models that read images), on inputs from
:class:`~cnnlstm.profile.inputs.InputShaper`:

* **parameters** per top-level block, trainable and frozen;
* **FLOPs per sample** of a forward pass and of a training step (forward + backward)
  (:mod:`cnnlstm.profile.flops`);
* **cached features per clip** for frame models the frozen-encoder feature cache serves: ``T`` rows of the
  model's per-frame features (a pooled vector, or a stage's grid), float32;
* **peak memory** of inference (eval mode, ``no_grad``) and of a training step (forward, backward and an optimiser
  step with fresh state), plus the activation bytes saved for backward (:mod:`cnnlstm.profile.memory`).
  ``measure=True`` adds the allocator's figures to the table. On CUDA the figure is
  ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.profile.flops import count_flops, scalar_loss
from cnnlstm.profile.inputs import InputShaper
from cnnlstm.profile.memory import LiveStorages, measure_allocator_peak, saved_activation_bytes, track_peak_memory
from cnnlstm.profile.tables import BlockParams, CostRow, CostTable

__all__ = ["cost_report"]

_OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
}


def _block_params(model: nn.Module) -> list[BlockParams]:
    blocks = []
    seen: set[int] = set()  # shared weights count once, in the first block that holds them
    groups = [*model.named_children(), ("(own)", None)]
    for name, child in groups:
        params = child.parameters() if child is not None else model.parameters(recurse=False)
        trainable = frozen = 0
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
        if trainable or frozen or child is not None:
            blocks.append(BlockParams(name, trainable, frozen))
    return blocks


def _frame_sizes(sizes: Iterable[int | Sequence[int]] | None, shaper: InputShaper) -> list[tuple[int, int] | None]:
    if not shaper.has_frames:
        return [None]
    if sizes is None:
        return [shaper.default_frame_size()]
    out = []
    for s in sizes:
        size = (s, s) if isinstance(s, int) else tuple(s)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"cost_report: frame sizes are H or (H, W) >= 1, got {s!r}")
        out.append(size)
    return out


class _Restore:
    """Puts back the weights, buffers, gradients and mode that the measuring steps change."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> _Restore:
        self.state = copy.deepcopy(self.model.state_dict())
        self.grads = [(p, p.grad) for p in self.model.parameters()]
        self.training = self.model.training
        return self

    def __exit__(self, *exc: Any) -> None:
        self.model.load_state_dict(self.state)
        for p, g in self.grads:
            p.grad = g
        self.model.train(self.training)


def _measure_row(model: nn.Module, inputs: dict[str, Tensor], seq_len: int, frame_size: tuple[int, int] | None,
                 batch_size: int, make_optimizer: Callable | None, device: torch.device, measure: bool) -> CostRow:
    params = [p for p in model.parameters() if p.requires_grad]
    resident = [*model.parameters(), *model.buffers(), *inputs.values()]
    cuda = device.type == "cuda"

    model.train()
    forward, backward = count_flops(model, inputs)

    def inference() -> None:
        with torch.no_grad():
            model(**inputs)

    activations = 0

    def train_step() -> None:
        nonlocal activations
        for p in params:
            p.grad = None
        optimizer = make_optimizer(params) if make_optimizer is not None else None
        output, activations = saved_activation_bytes(resident_set, lambda: model(**inputs))
        scalar_loss(output).backward()
        if optimizer is not None:
            optimizer.step()

    resident_set = LiveStorages()
    for t in resident:
        resident_set.add(t)
    if cuda:
        base = torch.cuda.memory_allocated(device)
        model.eval()
        peak_inference = base + measure_allocator_peak(inference, device)
        model.train()
        peak_train = base + measure_allocator_peak(train_step, device)
    else:
        model.eval()
        peak_inference = track_peak_memory(inference, resident)
        model.train()
        peak_train = track_peak_memory(train_step, resident)
    measured_inference = measured_train = None
    if measure:
        model.eval()
        measured_inference = peak_inference if cuda else resident_set.current + measure_allocator_peak(inference)
        model.train()
        measured_train = peak_train if cuda else resident_set.current + measure_allocator_peak(train_step)
    for p in params:
        p.grad = None
    cached = None
    if hasattr(model, "forward_from_features") and "x" in inputs:  # a frame model the feature cache can serve
        model.eval()
        with torch.no_grad():
            frame_dim = model.forward_sequence_features(inputs["x"][:1, :1]).shape[-1]  # (1, 1, D_frame)
        cached = seq_len * frame_dim * 4  # float32 rows, one per frame
    return CostRow(
        seq_len=seq_len, frame_size=frame_size, input_shapes={k: tuple(v.shape) for k, v in inputs.items()},
        flops_forward=forward // batch_size, flops_train=(forward + backward) // batch_size,
        activation_bytes=activations, peak_inference_bytes=peak_inference, peak_train_bytes=peak_train,
        measured_inference_bytes=measured_inference, measured_train_bytes=measured_train,
        cached_feature_bytes=cached,
    )


def cost_report(
    model_or_name: nn.Module | str,
    *,
    seq_lens: Sequence[int] = (16, 64, 256),
    frame_sizes: Sequence[int | Sequence[int]] | None = None,
    batch_size: int = 1,
    optimizer: str | None = "adam",
    measure: bool = False,
    **model_kwargs: Any,
) -> CostTable:
    """Parameters, FLOPs and peak memory of a model for each sequence length (and frame size).

    The model's weights, buffers, gradients, mode and the global RNG are restored afterwards. Measures on the
    device the model's parameters are on.

    Args:
        model_or_name: a model, or a registry name built with ``model_kwargs``.
        seq_lens: sequence lengths ``T`` to measure (frames, steps, tokens or output columns).
        frame_sizes: ``H`` or ``(H, W)`` per frame size, for models that read images or frames; the size of
            ``example_input`` when ``None``; ignored by models without image inputs.
        batch_size: batch the memory is measured for (FLOPs are reported per sample).
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum) or ``None``; its state counts in the
            training-step memory.
        measure: also run each step under :func:`measure_allocator_peak` (CPU: the allocator's own peak plus
            weights and inputs), shown beside the tracked figures; slower.
        **model_kwargs: constructor arguments when ``model_or_name`` is a name.

    Returns:
        A :class:`CostTable`, rows ordered by frame size, then ``T``.

    Raises:
        ConfigError: bad arguments, or kwargs given with a built model.
        ShapeError: the model refuses an input size (the message names ``T`` and the frame size).

    Example:
        >>> table = cost_report("lstm_fcn", in_channels=2, num_classes=3, hidden_size=8, seq_lens=(16, 64))
        >>> print(table.to_markdown())  # doctest: +SKIP
    """
    if isinstance(model_or_name, str):
        from cnnlstm.models import create_model

        model = create_model(model_or_name, **model_kwargs)
    else:
        if model_kwargs:
            raise ConfigError(f"cost_report got a built model and model kwargs {sorted(model_kwargs)}; pass one")
        model = model_or_name
    if batch_size < 1 or not seq_lens or min(seq_lens) < 1:
        raise ConfigError(f"cost_report needs batch_size >= 1 and seq_lens >= 1, got {batch_size}, {seq_lens}")
    if optimizer is not None and optimizer not in _OPTIMIZERS:
        raise ConfigError(f"cost_report: optimizer must be one of {sorted(_OPTIMIZERS)} or None, got {optimizer!r}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    name = getattr(model, "model_name", type(model).__name__)
    table = CostTable(
        model_name=name, batch_size=batch_size, device=str(device), optimizer=optimizer or "no optimiser",
        memory_source=("torch.cuda.max_memory_allocated" if device.type == "cuda"
                       else "live tensor storages + kernel scratch"),
        blocks=_block_params(model),
    )
    # Dropout draws random numbers; a report must not shift the caller's random stream.
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    with _Restore(model), torch.random.fork_rng(devices=rng_devices):
        shaper = InputShaper(model, batch_size)
        for size in _frame_sizes(frame_sizes, shaper):
            for seq_len in sorted(seq_lens):
                inputs = {k: v.to(device) for k, v in shaper(seq_len, size).items()}
                try:
                    row = _measure_row(model, inputs, seq_len, size, batch_size,
                                       _OPTIMIZERS.get(optimizer) if optimizer else None, device, measure)
                except ShapeError as exc:
                    where = f"T={seq_len}" + ("" if size is None else f", frame {size[0]}x{size[1]}")
                    raise ShapeError(f"cost_report at {where}: {exc}") from None
                table.rows.append(row)
    return table
