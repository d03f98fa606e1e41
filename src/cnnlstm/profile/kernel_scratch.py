"""Scratch memory that CPU kernels allocate and free inside one operator, which a live-tensor tracker cannot see.

:func:`~cnnlstm.profile.memory.track_peak_memory` counts every tensor an operator returns. Some CPU kernels also
allocate buffers from the same allocator for the length of the call: oneDNN (mkldnn) convolutions reorder their
operands into channel-blocked layouts, PyTorch's fallback convolution builds an im2col matrix, and oneDNN's LSTM
copies its weights and keeps every step's states in a scratchpad. :func:`kernel_scratch_bytes` gives, from the
operator's arguments and outputs, the bytes those buffers add *on top of the outputs* at the busiest moment of the
call; the tracker adds it to the live total for that moment only.

The rules model the CPU kernels of torch 2.x with oneDNN 3.x on an AVX-512 CPU (16 f32 channels per block), and
were checked against the allocator's own peak (``benchmarks/bench_cost_memory.py``, ``tests/profile``). On an
AVX2-only CPU oneDNN blocks by 8 channels and picks other convolution kernels; checked there with
``ONEDNN_MAX_CPU_ISA=AVX2``, every benchmark row stays within 2 % except one small convolution stack, overestimated
by 11 % (the 16-channel padding), and ``tests/profile`` passes (docs/benchmarks.md, 3d):

* ``aten.convolution`` / ``aten.convolution_backward``, backend chosen by ``torch._C._select_conv_backend`` (the
  same choice the kernel makes):

  - **mkldnn**, plain (NCHW) tensors: the input is reordered to a blocked copy (``nChw16c``: channels padded to a
    multiple of 16) unless it is a "first layer" input (fewer than 16 channels, no groups), the weights are
    reordered, the output is computed in a blocked buffer and then copied into the dense output. Input and
    weight copies are freed before the dense output is allocated, so the call peaks at
    ``blocked_out + max(blocked_in + weights, out)``. The backward computes the input gradient the same way
    (blocked ``grad_output`` + weights, blocked ``grad_input``, then the dense one), then the weight gradient from
    blocked ``grad_output`` and input into a blocked weight buffer that is copied out last.
    Channels-last tensors skip the activation copies; only the weights are reordered.
  - **slow2d** (chosen e.g. for batch 1 with small kernels): the im2col matrix
    ``N * C_in * prod(kernel) * prod(out_spatial)`` elements (none for an unpadded, unstrided 1x1 convolution);
    the backward rebuilds one such matrix at a time and copies a non-contiguous ``grad_output``.
  - other backends (dilated or transposed fallbacks, NNPACK): no scratch is modelled.

* ``aten.mkldnn_rnn_layer`` / ``aten.mkldnn_rnn_layer_backward`` (one LSTM layer and direction): the summed bias,
  the weights reordered for the kernel (inference: brgemm ``ldgOi32o``, each gate's rows padded to 32; training:
  ``ldigo`` with a padded leading dimension; the backward also transposes weights whose leading dimension is not
  already a good one), and the oneDNN scratchpad laid out as ``rnn_utils::set_offsets`` does (page-aligned
  spaces). Inference keeps all ``T + 1`` steps' hidden and cell states there, and one step's gates (every step's
  for a batch of one sequence); training keeps the states in the workspace the op returns, so only the gate
  buffer (all steps at once while the batch is under 128) remains.

Not modelled: a few KiB per call of per-thread brgemm/GEMM buffers, oneDNN's per-thread reduction buffers of some
weight-gradient kernels (up to one extra weight-gradient copy), and kernels that allocate outside PyTorch's
allocator (MKL GEMM), which the allocator cannot report either. CUDA is measured directly by
``torch.cuda.max_memory_allocated`` and needs none of this.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["KERNEL_SCRATCH", "kernel_scratch_bytes"]

_PAGE = 4096  # oneDNN aligns every space of an RNN scratchpad to a page
_BLOCK = 16  # f32 channels per oneDNN block on AVX-512 (nChw16c)
_RNN_GATE_BLOCK = 32  # brgemm LSTM inference weights: ldgOi32o
_RNN_MERGE_MAX_BATCH = 128  # training: below this batch oneDNN runs the input GEMM over all steps at once
_F32 = 4  # oneDNN keeps gates and cell states in f32

Args = dict[str, Any]


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _good_ld(n: int, itemsize: int = _F32) -> int:
    # oneDNN rnn_utils::get_good_ld: 64-byte aligned rows, never a multiple of 256 elements (4K aliasing).
    ld = _round_up(n, 64 // itemsize)
    return ld + 64 // itemsize if ld % 256 == 0 else ld


def _bind(func: Any, args: tuple, kwargs: dict) -> Args:
    names = [a.name for a in func._schema.arguments]
    return {**dict(zip(names, args, strict=False)), **kwargs}


def _nbytes(t: Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


# ---------------------------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------------------------


def _backend(a: Args, x: Tensor, weight: Tensor) -> Any:
    return torch._C._select_conv_backend(x, weight, None, list(a["stride"]), list(a["padding"]),
                                         list(a["dilation"]), a["transposed"], list(a["output_padding"]),
                                         a["groups"], None)


def _blocked(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of an (N, C, *spatial) tensor with channels padded to a whole block."""
    return shape[0] * _round_up(shape[1], _BLOCK) * math.prod(shape[2:]) * itemsize


def _first_layer(x: Tensor, groups: int) -> bool:
    # oneDNN reads a plain input directly when it has fewer channels than a block (RGB, single-channel series).
    return groups == 1 and x.shape[1] < _BLOCK


def _blocked_weights(weight: Tensor, pad_inputs: bool) -> int:
    out_ch, in_ch, *kernel = weight.shape  # (O, I / groups, *kernel)
    in_ch = _round_up(in_ch, _BLOCK) if pad_inputs and in_ch > 1 else in_ch
    return _round_up(out_ch, _BLOCK) * in_ch * math.prod(kernel) * weight.element_size()


def _channels_last(x: Tensor) -> bool:
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt)


def _im2col(x: Tensor, weight: Tensor, out_shape: Sequence[int], a: Args) -> int:
    kernel = weight.shape[2:]
    if all(k == 1 for k in kernel) and all(s == 1 for s in a["stride"]) and all(p == 0 for p in a["padding"]):
        return 0  # an unpadded, unstrided 1x1 convolution reads the input itself as the column matrix
    return x.shape[0] * x.shape[1] * math.prod(kernel) * math.prod(out_shape[2:]) * x.element_size()


def _conv_forward(a: Args, out: Tensor) -> int:
    x, weight, groups = a["input"], a["weight"], a["groups"]
    if a["transposed"]:
        return 0  # not modelled
    backend = _backend(a, x, weight)
    if backend == torch._C._ConvBackend.Slow2d:
        return _im2col(x, weight, out.shape, a)
    if backend != torch._C._ConvBackend.Mkldnn:
        return 0
    first = _first_layer(x, groups)
    weights = _blocked_weights(weight, pad_inputs=not first)
    if _channels_last(x):
        return weights
    src = 0 if first else _blocked(x.shape, x.element_size())
    dst = _blocked(out.shape, out.element_size())
    # Peak: blocked output + (blocked input + weights) while computing, or blocked + dense output after.
    return dst + max(src + weights, _nbytes(out)) - _nbytes(out)


def _conv_backward(a: Args, out: tuple[Tensor | None, ...]) -> int:
    grad_out, x, weight, groups = a["grad_output"], a["input"], a["weight"], a["groups"]
    mask = a["output_mask"]
    if a["transposed"]:
        return 0
    backend = _backend(a, x, weight)
    grad_in = _nbytes(x) if mask[0] else 0
    returned = sum(_nbytes(t) for t in out if isinstance(t, Tensor))
    if backend == torch._C._ConvBackend.Slow2d:
        # One im2col matrix at a time (gradient columns, then the input's columns), plus a dense grad_output.
        cols = _im2col(x, weight, grad_out.shape, a)
        return cols + (0 if grad_out.is_contiguous() else _nbytes(grad_out))
    if backend != torch._C._ConvBackend.Mkldnn:
        return 0
    first = _first_layer(x, groups)
    weights_fwd = _blocked_weights(weight, pad_inputs=not first)
    if _channels_last(x):
        copy = 0 if grad_out.is_contiguous(memory_format=torch.channels_last) else _nbytes(grad_out)
        return copy + weights_fwd + (_nbytes(weight) if mask[1] else 0)
    # A grad_output with other strides (e.g. the broadcast gradient of a sum) is made dense first and kept.
    dense = 0 if grad_out.is_contiguous() else _nbytes(grad_out)
    go = _blocked(grad_out.shape, grad_out.element_size())
    phases = [0]
    if mask[0]:  # blocked grad_input from blocked grad_output and weights, then its dense copy
        x_blocked = _blocked(x.shape, x.element_size())
        phases.append(x_blocked + max(go + _blocked_weights(weight, pad_inputs=True), grad_in))
    if mask[1]:  # blocked weight gradient from blocked grad_output and input, then its dense copy
        src = 0 if first else _blocked(x.shape, x.element_size())
        phases.append(grad_in + go + src + weights_fwd)
        phases.append(grad_in + weights_fwd + _nbytes(weight))
    return dense + max(0, max(phases) - returned)


# ---------------------------------------------------------------------------------------------------------------
# oneDNN LSTM layer
# ---------------------------------------------------------------------------------------------------------------


def _pages(spaces: Sequence[int]) -> int:
    # rnn_utils::set_offsets: each space starts on a page boundary.
    offset = 0
    for size in spaces:
        offset = _round_up(offset, _PAGE) + size
    return offset


def _rnn_dims(a: Args, w_ih: Tensor) -> tuple[int, int, int, int, int, int]:
    x = a["input"]  # (T, B, I): torch moves time first before the call, whatever batch_first says
    hidden = a["hidden_size"]
    return x.shape[0], x.shape[1], x.shape[-1], hidden, w_ih.shape[0] // hidden, x.element_size()


def _rnn_layer(a: Args, out: Any) -> int:
    steps, batch, inputs, hidden, gates, size = _rnn_dims(a, a["weight0"])
    bias = gates * hidden * size if a["has_biases"] else 0  # b_ih + b_hh, summed before the call
    if a["train"]:
        # Reference kernel: weights as ldigo with a good leading dimension; states live in the returned workspace.
        ld = _good_ld(gates * hidden)
        weights = (inputs + hidden) * ld * size
        merged = steps if batch < _RNN_MERGE_MAX_BATCH else 1
        pad = _pages([merged * batch * ld * _F32, batch * _good_ld(hidden) * size, batch * _good_ld(hidden) * _F32])
        return bias + weights + pad
    # Inference, brgemm kernel: ldgOi32o weights; the scratchpad holds every step's states (h and c).
    weights = (inputs + hidden) * gates * _round_up(hidden, _RNN_GATE_BLOCK) * size
    states = 2 * (steps + 1) * batch  # (layers + 1) x (steps + 1) x batch rows
    # A single sequence runs the input GEMM over all steps at once ("merged layer compute"), gates for every step.
    merged = steps if batch == 1 and steps >= 2 else 1
    pad = _pages([
        states * _good_ld(max(inputs, hidden)) * size,  # ws_states_layer (h of every step, input copied in)
        states * hidden * _F32,  # ws_states_iter_c (c of every step)
        merged * batch * _good_ld(max(hidden, gates * hidden)) * _F32,  # scratch_gates
        batch * _good_ld(hidden) * size,  # scratch_ht
    ])
    return bias + weights + pad


def _rnn_layer_backward(a: Args, out: Any) -> int:
    steps, batch, inputs, hidden, gates, size = _rnn_dims(a, a["weight1"])
    ld = _good_ld(gates * hidden)
    weights = (inputs + hidden) * ld * size  # forward weights as ldigo
    for k in (inputs, hidden):  # transposed weights (ldgoi), unless torch's layout already has a good ld
        weights += 0 if _good_ld(k) == k else gates * hidden * _good_ld(k) * size
    bias = 2 * gates * hidden * size if a["has_biases"] else 0  # the summed bias and oneDNN's copy of it
    pad = _pages([steps * batch * ld * _F32, batch * _good_ld(hidden) * size, batch * _good_ld(hidden) * _F32])
    return bias + weights + pad


def _scratch_table() -> dict[Any, Callable[[Args, Any], int]]:
    rules = {
        "convolution": _conv_forward,
        "convolution_backward": _conv_backward,
        "mkldnn_rnn_layer": _rnn_layer,
        "mkldnn_rnn_layer_backward": _rnn_layer_backward,
    }
    return {getattr(torch.ops.aten, n).default: f for n, f in rules.items() if hasattr(torch.ops.aten, n)}


#: Operator overload -> rule ``(bound arguments, outputs) -> scratch bytes``.
KERNEL_SCRATCH: dict[Any, Callable[[Args, Any], int]] = _scratch_table()


def kernel_scratch_bytes(func: Any, args: tuple, kwargs: dict | None, out: Any) -> int:
    """Bytes a CPU kernel holds internally, beyond its outputs, at the busiest moment of one call.

    Args:
        func: the ATen operator overload that ran (as a ``TorchDispatchMode`` sees it).
        args: its positional arguments.
        kwargs: its keyword arguments.
        out: what it returned.

    Returns:
        The scratch bytes; 0 for operators without a rule and for tensors not on the CPU.

    Example:
        >>> x, w = torch.randn(4, 16, 8, 8), torch.randn(32, 16, 3, 3)
        >>> out = torch.ops.aten.convolution.default(x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
        >>> kernel_scratch_bytes(torch.ops.aten.convolution.default,
        ...                      (x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1), {}, out) > 0
        True
    """
    rule = KERNEL_SCRATCH.get(func)
    if rule is None:
        return 0
    bound = _bind(func, args, kwargs or {})
    first = next((v for v in bound.values() if isinstance(v, Tensor)), None)
    if first is None or first.device.type != "cpu":
        return 0
    return max(0, int(rule(bound, out)))
