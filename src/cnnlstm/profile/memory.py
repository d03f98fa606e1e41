"""Peak memory of a piece of work: every live tensor storage tracked from birth to release, or the allocator's peak.

On CPU every tensor storage an operator creates is tracked from birth to release (a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` with weak references), so the figure is the exact peak of
live tensor memory, weights and inputs included. Buffers that kernels allocate and free inside one call (oneDNN's
reordered convolution operands and LSTM scratchpad, the im2col matrix of the fallback convolution) are added for
the length of that call by the rules of :mod:`cnnlstm.profile.kernel_scratch`, which model oneDNN on an AVX-512
CPU. ``benchmarks/bench_cost_memory.py`` compares the estimate with the CPU allocator's own peak
(:func:`measure_allocator_peak`; every row within 25 %). On CUDA the allocator's figure is exact.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cnnlstm.errors import ConfigError
from cnnlstm.profile.kernel_scratch import kernel_scratch_bytes

__all__ = ["LiveStorages", "track_peak_memory", "measure_allocator_peak", "saved_activation_bytes"]


class LiveStorages:
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
    """Adds every tensor an operator returns to a :class:`LiveStorages` set (forward, backward and optimiser ops).

    With ``scratch``, the kernel's internal buffers (:func:`~cnnlstm.profile.kernel_scratch.kernel_scratch_bytes`)
    count beside the outputs for the moment of the call.
    """

    def __init__(self, storages: LiveStorages, scratch: bool = True) -> None:
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
    of :mod:`cnnlstm.profile.kernel_scratch` (CPU convolutions and oneDNN LSTM layers) and counted while the
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
    storages = LiveStorages()
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


def saved_activation_bytes(resident: LiveStorages, run: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``run`` and count the bytes autograd saves for backward, each storage once, ``resident`` excluded.

    Args:
        resident: storages not to count (weights, inputs).
        run: the forward pass.

    Returns:
        ``(output of run, saved bytes)``.
    """
    saved = LiveStorages()

    def pack(tensor: Tensor) -> Tensor:
        if tensor not in resident:
            saved.add(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, saved.current
