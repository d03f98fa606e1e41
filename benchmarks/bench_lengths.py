"""Cost of ``lengths``: an ``lstm_fcn`` training step on a variable-length batch, with and without them.

The same padded batch trains three ways, in turn within each repeat (so load drift hits all alike), medians
reported:

- ``no lengths``: the padded batch as if every series were full length (the fused LSTM kernel; wrong answers
  for the short series, the cost floor);
- ``lengths``: what the models do now on the CPU, :func:`cnnlstm.layers.padded_lstm.run_lstm`'s unpacked, exact
  path (fused kernel, then a gather at ``lengths - 1``; per-length reversal for a backward direction);
- ``lengths, packed``: the ``PackedSequence`` path that the models took before (and still take on CUDA), which
  the CPU runs step by step.

One step is forward, cross-entropy, backward and an Adam update. The script also checks that the two
length-aware paths give the same loss and gradients on the batch it times.

Run (CPU, about a minute per case on one thread)::

    OMP_NUM_THREADS=1 python -m benchmarks.bench_lengths
    python -m benchmarks.bench_lengths --batch 32 --length 500 --repeats 9
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial

import torch
from torch import nn

from benchmarks.machine import machine_info
from benchmarks.timing import interleaved
from cnnlstm import create_model
from cnnlstm.layers import padded_lstm

__all__ = ["CASES", "main"]

#: (label, lstm_fcn kwargs beyond num_classes/in_channels)
CASES = [
    ("lstm_fcn (128 units)", {}),
    ("lstm_fcn bidirectional, 2 layers", {"bidirectional": True, "num_layers": 2}),
]


@contextlib.contextmanager
def packing() -> Iterator[None]:
    """Route ``run_lstm``'s CPU path through ``packed_lstm``: the models' behaviour before the unpacked path."""
    original = padded_lstm.masked_lstm
    padded_lstm.masked_lstm = padded_lstm.packed_lstm
    try:
        yield
    finally:
        padded_lstm.masked_lstm = original


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          lengths: torch.Tensor | None, packed: bool) -> float:
    """One training step; returns its wall time in ms."""
    start = time.perf_counter()
    with packing() if packed else contextlib.nullcontext():
        loss = nn.functional.cross_entropy(model(x, lengths=lengths), y)
        opt.zero_grad()
        loss.backward()
    opt.step()
    return (time.perf_counter() - start) * 1e3


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    nn.functional.cross_entropy(model(x, lengths=lengths), y).backward()
    return [p.grad.clone() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=300, help="padded length T; series hold T/3..T steps")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per path (after 2 warm-up steps)")
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.length, args.channels, generator=generator)
    lengths = torch.randint(args.length // 3, args.length + 1, (args.batch,), generator=generator)
    lengths[0] = args.length  # the longest fills the padded length, as a collated batch does
    y = torch.randint(0, 4, (args.batch,), generator=generator)

    rows = []
    for label, kwargs in CASES:
        torch.manual_seed(0)
        model = create_model("lstm_fcn", num_classes=4, in_channels=args.channels, dropout=0.0, **kwargs)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # small steps: every path trains the same model
        unpacked = _grads(model, x, y, lengths)
        with packing():
            packed = _grads(model, x, y, lengths)
        max_diff = max(float((a - b).abs().max()) for a, b in zip(unpacked, packed, strict=True))
        paths: dict[str, Callable[[], float]] = {
            "no lengths": partial(_step, model, opt, x, y, None, False),
            "lengths": partial(_step, model, opt, x, y, lengths, False),
            "lengths, packed": partial(_step, model, opt, x, y, lengths, True),
        }
        interleaved(paths, repeats=2)  # warm-up: allocator and oneDNN primitive caches
        ms = {name: r["median"] for name, r in interleaved(paths, repeats=args.repeats).items()}
        rows.append((label, ms, max_diff))

    info = machine_info()
    print(f"**Machine:** {info['cpu']}, {info['usable_cores']} usable cores, torch threads {info['torch_threads']}, "
          f"load average {info['load_average']}  ")
    print(f"**Date:** {info['date']}; torch {info['torch']}  ")
    print(f"**Command:** `{' '.join(sys.orig_argv)}`; batch {args.batch} x T={args.length} x F={args.channels}, "
          f"lengths {int(lengths.min())}..{int(lengths.max())} (mean {lengths.float().mean():.0f})\n")
    print("| model | no lengths (ms) | lengths (ms) | lengths, packed (ms) | lengths / no lengths "
          "| packed / no lengths | max grad diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, ms, diff in rows:
        base = ms["no lengths"]
        print(f"| {label} | {base:.0f} | {ms['lengths']:.0f} | {ms['lengths, packed']:.0f} | "
              f"{ms['lengths'] / base:.2f}x | {ms['lengths, packed'] / base:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
