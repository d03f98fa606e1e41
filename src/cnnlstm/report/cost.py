"""Cost report: parameters, FLOPs and peak memory of a model as the sequence length and frame size grow.

Joining a CNN and an LSTM multiplies costs: the CNN runs once per frame, the LSTM once per step, and a training
step keeps every frame's activations for the backward pass. :func:`cost_report` measures, for each sequence
length ``T`` (and frame size ``H x W`` for models that read images):

* **parameters** per top-level block, trainable and frozen;
* **FLOPs per sample** of a forward pass and of a training step (forward + backward), counted by PyTorch's own
  :class:`torch.utils.flop_counter.FlopCounterMode`. Its convention counts the multiply-adds of matrix products
  and convolutions (``2 * m * n * k``) and no elementwise work (bias adds, activations, normalisation).
  It has no formula for the fused LSTM kernels (``aten.mkldnn_rnn_layer`` on CPU, ``aten._cudnn_rnn`` on CUDA),
  so an ``nn.LSTM`` counted 0 FLOPs; :data:`RNN_FLOP_FORMULAS` adds them under the same convention (every weight
  matrix multiplies every token once: ``2 * tokens * (4H*I + 4H*H)`` per LSTM layer and direction; backward twice
  that, as for ``mm``). ``nn.LSTMCell`` and packed sequences on CPU decompose into ``addmm`` and were already
  counted; ``aten._thnn_fused_lstm_cell`` (CUDA cells) is elementwise only, so 0 under the convention.
* **cached features per clip** for frame models the frozen-encoder feature cache serves: ``T`` rows of the
  model's per-frame features (a pooled vector, or a stage's grid), float32;
* **peak memory** of inference (eval mode, ``no_grad``) and of a training step (forward, backward and an optimiser
  step with fresh state), plus the activation bytes saved for backward. On CPU every tensor storage an operator
  creates is tracked from birth to release (a :class:`~torch.utils._python_dispatch.TorchDispatchMode` with weak
  references), so the figure is the exact peak of live tensor memory, weights and inputs included. Buffers that
  kernels allocate and free inside one call (oneDNN's reordered convolution operands and LSTM scratchpad, the
  im2col matrix of the fallback convolution) are added for the length of that call by the rules of
  :mod:`cnnlstm.report.kernel_scratch`, which model oneDNN on an AVX-512 CPU. ``benchmarks/bench_cost_memory.py``
  compares the estimate with the CPU allocator's own peak (every row within 25 %; see that script).
  ``measure=True`` adds the allocator's figures to the table. On CUDA the figure is
  ``torch.cuda.max_memory_allocated``.

Inputs come from ``model.example_input(batch_size)`` with the time axis tiled to ``T``: series ``x`` (B, T, F),
frames ``x`` (B, T, C, H, W) (frames also resized to ``H x W``), token or float ``sequence``/``captions`` (B, T),
images (B, C, H, W) resized to ``H x W``; a line image read column by column (CRNN, no other sequence input) is
widened so the model emits ``T`` columns. Batches are full length (``lengths`` dropped): padded batches take the
packed LSTM path, which costs the same FLOPs.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.report.kernel_scratch import kernel_scratch_bytes

__all__ = [
    "RNN_FLOP_FORMULAS",
    "BlockParams",
    "CostRow",
    "CostTable",
    "cost_report",
    "count_flops",
    "track_peak_memory",
    "measure_allocator_peak",
]

# ---------------------------------------------------------------------------------------------------------------
# FLOPs of fused recurrent kernels (shape-based formulas, FlopCounterMode's custom_mapping format)
# ---------------------------------------------------------------------------------------------------------------


def _tokens(input_shape: Sequence[int]) -> int:
    # (T, B, I), (B, T, I) or packed (sum(batch_sizes), I): every leading position is one step of one sequence.
    return math.prod(input_shape[:-1])


def _mkldnn_rnn_layer_flop(input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int], *args: Any,
                           **kwargs: Any) -> int:
    """One layer and direction on CPU: input (T, B, I), w_ih (G*H, I), w_hh (G*H, H); G gates (4 for LSTM)."""
    return 2 * _tokens(input_shape) * (math.prod(w_ih) + math.prod(w_hh))


def _mkldnn_rnn_layer_backward_flop(input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int],
                                    *args: Any, **kwargs: Any) -> int:
    # Gradients for the inputs and for the weights: two products per forward product, as torch counts mm.
    return 2 * _mkldnn_rnn_layer_flop(input_shape, w_ih, w_hh)


def _cudnn_rnn_flop(input_shape: Sequence[int], weights: Sequence[Sequence[int]], *args: Any, **kwargs: Any) -> int:
    """All layers and directions at once: every weight matrix (w_ih, w_hh, w_hr) multiplies every token."""
    return 2 * _tokens(input_shape) * sum(math.prod(w) for w in weights if len(w) == 2)


def _cudnn_rnn_backward_flop(input_shape: Sequence[int], weights: Sequence[Sequence[int]], *args: Any,
                             **kwargs: Any) -> int:
    return 2 * _cudnn_rnn_flop(input_shape, weights)


def _rnn_formulas() -> dict[Any, Callable[..., int]]:
    formulas = {
        "mkldnn_rnn_layer": _mkldnn_rnn_layer_flop,
        "mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward_flop,
        "_cudnn_rnn": _cudnn_rnn_flop,
        "_cudnn_rnn_backward": _cudnn_rnn_backward_flop,
    }
    # Builds without oneDNN or cuDNN may lack an op; keep the ones this torch knows.
    return {getattr(torch.ops.aten, n): f for n, f in formulas.items() if hasattr(torch.ops.aten, n)}


#: Formulas for the fused RNN kernels FlopCounterMode has none for (op packet -> formula on shapes).
RNN_FLOP_FORMULAS: dict[Any, Callable[..., int]] = _rnn_formulas()


def _scalar_loss(output: Any) -> Tensor:
    # A sum reads every output element once; its backward is a broadcast view, so it adds no memory of note.
    floats = [t for t in tree_leaves(output) if isinstance(t, Tensor) and t.is_floating_point() and t.requires_grad]
    if not floats:
        raise ConfigError("cost_report needs a model output that depends on trainable parameters")
    return sum(t.sum() for t in floats)


def count_flops(model: nn.Module, inputs: dict[str, Tensor], *, backward: bool = True) -> tuple[int, int]:
    """FLOPs of one forward pass and of the backward pass that follows, for the whole batch.

    Counted by :class:`~torch.utils.flop_counter.FlopCounterMode` with :data:`RNN_FLOP_FORMULAS` added. The model
    runs in its current mode; parameters' ``.grad`` receive the backward's gradients.

    Args:
        model: the model to run.
        inputs: keyword inputs of ``model``.
        backward: also run and count the backward pass of ``sum(outputs)``.

    Returns:
        ``(forward_flops, backward_flops)``; ``backward_flops`` is 0 when ``backward=False``.

    Example:
        >>> fwd, bwd = count_flops(nn.Linear(3, 4), {"input": torch.randn(2, 3)})
        >>> fwd, bwd  # 2*2*3*4; backward: gradient of the weight only (the input needs none)
        (48, 48)
    """
    with FlopCounterMode(display=False, custom_mapping=RNN_FLOP_FORMULAS) as counter:
        output = model(**inputs)
        forward = counter.get_total_flops()
        if backward:
            _scalar_loss(output).backward()
    return forward, counter.get_total_flops() - forward


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------


class _Storages:
    """A set of live tensor storages and their bytes; a storage leaves the set when PyTorch frees it."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def add(self, tensor: Tensor) -> None:
        if tensor.device.type == "meta":
            return
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse or wrapper tensors own no plain storage
            return
        key = id(storage)
        ref = self._refs.get(key)
        if ref is not None and ref() is storage:  # a view or an in-place result of a storage already counted
            return
        nbytes = storage.nbytes()

        def release(_ref: weakref.ref, key: int = key, nbytes: int = nbytes) -> None:
            self.current -= nbytes
            self._refs.pop(key, None)

        # PyTorch keeps a storage's Python object alive as long as the storage, so the callback fires on free.
        self._refs[key] = weakref.ref(storage, release)
        self.current += nbytes
        self.peak = max(self.peak, self.current)

    def transient(self, nbytes: int) -> None:
        """Memory held beside the live storages for one moment (a kernel's scratch while it runs)."""
        self.peak = max(self.peak, self.current + nbytes)

    def __contains__(self, tensor: Tensor) -> bool:
        try:
            ref = self._refs.get(id(tensor.untyped_storage()))
        except (RuntimeError, NotImplementedError):
            return False
        return ref is not None and ref() is not None


class _LiveTensorMemory(TorchDispatchMode):
    """Adds every tensor an operator returns to a :class:`_Storages` set (forward, backward and optimiser ops).

    With ``scratch``, the kernel's internal buffers (:func:`~cnnlstm.report.kernel_scratch.kernel_scratch_bytes`)
    count beside the outputs for the moment of the call.
    """

    def __init__(self, storages: _Storages, scratch: bool = True) -> None:
        super().__init__()
        self.storages = storages
        self.scratch = scratch

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, Tensor):
                self.storages.add(leaf)
        if self.scratch:
            self.storages.transient(kernel_scratch_bytes(func, args, kwargs, out))
        return out


def track_peak_memory(fn: Callable[[], Any], resident: Iterable[Tensor] = (), *, scratch: bool = True) -> int:
    """Peak bytes of live tensor storage while ``fn`` runs, counting ``resident`` tensors from the start.

    Every storage an operator creates is counted from its creation until PyTorch frees it, so temporaries of the
    forward, the backward and the optimiser all show; views and in-place results are not counted twice. Scratch
    memory a kernel allocates and frees internally cannot be seen; with ``scratch`` it is estimated by the rules
    of :mod:`cnnlstm.report.kernel_scratch` (CPU convolutions and oneDNN LSTM layers) and counted while the
    operator runs.

    Args:
        fn: the work to measure.
        resident: tensors alive before and during ``fn`` (weights, buffers, inputs); their storages count once.
        scratch: add the modelled kernel scratch; ``False`` gives live tensor storage alone.

    Returns:
        The peak, in bytes, of resident plus newly created storage.

    Example:
        >>> x = torch.zeros(1000)  # 4000 bytes
        >>> track_peak_memory(lambda: (x + 1) * 2, resident=[x])  # x, x + 1 and the product live together
        12000
    """
    storages = _Storages()
    for tensor in resident:
        storages.add(tensor)
    with _LiveTensorMemory(storages, scratch):
        fn()
    return storages.peak


def measure_allocator_peak(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes the device allocator hands out while ``fn`` runs, above what was allocated before.

    On CUDA this is ``torch.cuda.max_memory_allocated`` minus the allocation at the start. On CPU it is read from
    the torch profiler's allocation events (``profile_memory=True``), whose running totals come from the CPU
    allocator itself, so it includes kernels' scratch memory that :func:`track_peak_memory` only models. Use it to
    check estimates; it is slower (the profiler records every operator).

    Args:
        fn: the work to measure.
        device: where ``fn`` allocates.

    Example:
        >>> measure_allocator_peak(lambda: torch.zeros(1 << 20)) >= 4 << 20
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ConfigError(f"measure_allocator_peak supports cpu and cuda, got {device}")
    from torch._C._profiler import _EventType  # the profiler's event tree is the only place totals are kept
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    allocations = []
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            allocations.append(event)
    if not allocations:
        return 0
    allocations.sort(key=lambda e: e.start_time_ns)
    first = allocations[0].extra_fields
    start = first.total_allocated - first.alloc_size  # the total just before the first event (frees are < 0)
    return max(0, max(e.extra_fields.total_allocated for e in allocations) - start)


def _saved_activation_bytes(resident: _Storages, run: Callable[[], Any]) -> tuple[Any, int]:
    # Tensors autograd keeps for backward, each storage once, weights and inputs excluded.
    saved = _Storages()

    def pack(tensor: Tensor) -> Tensor:
        if tensor not in resident:
            saved.add(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, saved.current


_OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
}


# ---------------------------------------------------------------------------------------------------------------
# Inputs at a given T and frame size
# ---------------------------------------------------------------------------------------------------------------


def _tile(tensor: Tensor, dim: int, size: int) -> Tensor:
    # Repeating keeps values valid for the model (token ids in the vocabulary, <start> first in each copy).
    reps = [1] * tensor.dim()
    reps[dim] = -(-size // tensor.shape[dim])
    return tensor.repeat(*reps).narrow(dim, 0, size)


def _is_sequence(key: str, t: Tensor) -> bool:
    return key != "lengths" and ((t.is_floating_point() and t.dim() in (3, 5)) or (not t.is_floating_point()
                                                                                  and t.dim() == 2))


class _InputShaper:
    """Builds a model's inputs at sequence length ``T`` and frame size ``(H, W)`` from its ``example_input``."""

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        if not hasattr(model, "example_input"):
            raise ConfigError(f"cost_report needs a model with example_input(batch_size), got {type(model).__name__}")
        self.example = {k: v for k, v in model.example_input(batch_size).items() if k != "lengths"}
        images = [k for k, v in self.example.items() if v.is_floating_point() and v.dim() in (4, 5)]
        sequences = [k for k, v in self.example.items() if _is_sequence(k, v)]
        self.line_key: str | None = None
        self.stride = 1
        if not sequences:
            # A line image read column by column (CRNN): T is the number of output columns.
            line = [k for k in images if self.example[k].dim() == 4]
            if not line:
                raise ConfigError(f"cost_report found no sequence input in {type(model).__name__}.example_input")
            self.line_key = line[0]
            width = self.example[self.line_key].shape[-1]
            with torch.no_grad():
                was_training = model.training
                columns = model.eval()(**self.example).shape[1]  # (B, W', K)
                model.train(was_training)
            self.stride = max(1, round(width / columns))
        self.frame_keys = [k for k in images if k != self.line_key]

    @property
    def has_frames(self) -> bool:
        return bool(self.frame_keys)

    def default_frame_size(self) -> tuple[int, int] | None:
        return tuple(self.example[self.frame_keys[0]].shape[-2:]) if self.frame_keys else None

    def __call__(self, seq_len: int, frame_size: tuple[int, int] | None) -> dict[str, Tensor]:
        inputs = {}
        for key, t in self.example.items():
            if key == self.line_key:
                t = _tile(t, 3, seq_len * self.stride)  # (B, C, H, T * stride)
            elif _is_sequence(key, t):
                t = _tile(t, 1, seq_len)  # (B, T, ...)
            if key in self.frame_keys and frame_size is not None:
                t = _tile(_tile(t, t.dim() - 2, frame_size[0]), t.dim() - 1, frame_size[1])  # (..., H, W)
            inputs[key] = t
        return inputs


# ---------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockParams:
    """Parameter count of one top-level block (``"(own)"`` for parameters held by the model itself)."""

    name: str
    trainable: int
    frozen: int


@dataclass(frozen=True)
class CostRow:
    """Costs at one sequence length and frame size.

    FLOPs are per sample; memory is for the whole batch of ``CostTable.batch_size``, in bytes.
    """

    seq_len: int
    frame_size: tuple[int, int] | None
    input_shapes: dict[str, tuple[int, ...]]
    flops_forward: int
    flops_train: int
    activation_bytes: int
    peak_inference_bytes: int
    peak_train_bytes: int
    measured_inference_bytes: int | None = None
    measured_train_bytes: int | None = None
    cached_feature_bytes: int | None = None


def _si(value: float, unit: str) -> str:
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(value) < 1000 or prefix == "P":
            return f"{value:.3g} {prefix}{unit}" if prefix else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError


def _bytes(value: float) -> str:
    for prefix in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or prefix == "TiB":
            return f"{value:.0f} B" if prefix == "B" else f"{value:.3g} {prefix}"
        value /= 1024
    raise AssertionError


@dataclass
class CostTable:
    """The result of :func:`cost_report`: parameters per block and one :class:`CostRow` per (T, frame size).

    ``str(table)`` is the plain-text table; :meth:`to_markdown` the Markdown one; :meth:`plot` a PNG.
    """

    model_name: str
    batch_size: int
    device: str
    optimizer: str
    memory_source: str
    blocks: list[BlockParams]
    rows: list[CostRow] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        return sum(b.trainable for b in self.blocks)

    @property
    def frozen_params(self) -> int:
        return sum(b.frozen for b in self.blocks)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["T", "frame", "FLOPs fwd/sample", "FLOPs train/sample", "saved activations", "peak inference",
                  "peak train step"]
        body = [[
            str(r.seq_len), "-" if r.frame_size is None else f"{r.frame_size[0]}x{r.frame_size[1]}",
            _si(r.flops_forward, "FLOP"), _si(r.flops_train, "FLOP"), _bytes(r.activation_bytes),
            _bytes(r.peak_inference_bytes), _bytes(r.peak_train_bytes),
        ] for r in self.rows]
        if any(r.cached_feature_bytes is not None for r in self.rows):
            header.append("cached features/clip")  # float32; data.feature_cache_dtype: float16 halves it
            for row, r in zip(body, self.rows, strict=True):
                row.append("-" if r.cached_feature_bytes is None else _bytes(r.cached_feature_bytes))
        if any(r.measured_train_bytes is not None for r in self.rows):
            header += ["allocator inference", "allocator train step"]
            for row, r in zip(body, self.rows, strict=True):
                row += [_bytes(r.measured_inference_bytes or 0), _bytes(r.measured_train_bytes or 0)]
        return header, body

    def _block_cells(self) -> tuple[list[str], list[list[str]]]:
        body = [[b.name, f"{b.trainable:,}", f"{b.frozen:,}"] for b in self.blocks]
        body.append(["total", f"{self.trainable_params:,}", f"{self.frozen_params:,}"])
        return ["block", "trainable", "frozen"], body

    def _caption(self) -> str:
        return (f"{self.model_name}: batch {self.batch_size} on {self.device}; train step = forward + backward + "
                f"{self.optimizer} step; memory from {self.memory_source}")

    def to_text(self) -> str:
        """Both tables as aligned plain text."""

        def table(header: list[str], body: list[list[str]]) -> list[str]:
            widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

            def fmt(row: list[str]) -> str:  # first column left-aligned, numbers right-aligned
                cells = zip(row, widths, strict=True)
                return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells))

            return [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)]

        return "\n".join([self._caption(), "", *table(*self._block_cells()), "", *table(*self._cells())])

    def to_markdown(self) -> str:
        """Both tables in GitHub Markdown."""

        def table(header: list[str], body: list[list[str]]) -> list[str]:
            rule = ["---"] + ["---:"] * (len(header) - 1)
            return ["| " + " | ".join(row) + " |" for row in [header, rule, *body]]

        return "\n".join([f"**{self._caption()}**", "", *table(*self._block_cells()), "", *table(*self._cells())])

    def __str__(self) -> str:
        return self.to_text()

    def plot(self, path: str | Path) -> Path:
        """FLOPs per sample (left) and peak memory (right) against ``T``, one line per frame size, log-log.

        Args:
            path: the PNG to write (parent folders are created).

        Example:
            >>> cost_report("lstm_fcn", in_channels=2, num_classes=3, seq_lens=(8, 16)).plot("cost.png")
            ... # doctest: +SKIP
        """
        import matplotlib

        matplotlib.use("Agg")  # headless
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        for size in dict.fromkeys(r.frame_size for r in self.rows):
            rows = [r for r in self.rows if r.frame_size == size]
            ts = [r.seq_len for r in rows]
            tag = "" if size is None else f" {size[0]}x{size[1]}"
            left.plot(ts, [r.flops_forward for r in rows], marker="o", label=f"forward{tag}")
            left.plot(ts, [r.flops_train for r in rows], marker="s", ls="--", label=f"train step{tag}")
            right.plot(ts, [r.peak_inference_bytes / 2**20 for r in rows], marker="o", label=f"inference{tag}")
            right.plot(ts, [r.peak_train_bytes / 2**20 for r in rows], marker="s", ls="--", label=f"train step{tag}")
            right.plot(ts, [r.activation_bytes / 2**20 for r in rows], marker="^", ls=":",
                       label=f"saved activations{tag}")
        left.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="FLOPs per sample", title="compute")
        right.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="MiB",
                  title=f"peak memory (batch {self.batch_size})")
        for ax in (left, right):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(self._caption(), fontsize=9)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


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


def _frame_sizes(sizes: Iterable[int | Sequence[int]] | None, shaper: _InputShaper) -> list[tuple[int, int] | None]:
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
        output, activations = _saved_activation_bytes(resident_set, lambda: model(**inputs))
        _scalar_loss(output).backward()
        if optimizer is not None:
            optimizer.step()

    resident_set = _Storages()
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
        shaper = _InputShaper(model, batch_size)
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
