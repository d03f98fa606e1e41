"""Inference latency: eager PyTorch against ONNX Runtime (CPU), side by side in one run.

Each model is exported once with :func:`cnnlstm.export.export_onnx` (its parity check must pass), then both
runtimes answer the same inputs in alternation, so a busy machine slows both alike; the table shows medians
and their ratio. Models (paper-sized, untrained weights):

- ``lstm_fcn``: BasicMotions-sized series, ``T=100`` steps of ``F=6`` (128-unit LSTM, 128/256/128 filters).
- ``frame_lstm``: clips of ``T=16`` RGB frames 64 x 64 through the built-in CNN encoder, a 128-unit LSTM.

Both with ``lengths`` (the padding-aware path that deployment serves), at batch 1 and 64. Much of ONNX
Runtime's lead on ``frame_lstm`` is its graph optimiser folding each BatchNorm into the convolution before it
and fusing the ReLU, which eager PyTorch runs as three kernels per stage.

Run (CPU, about 3 minutes on 2 shared cores)::

    python -m benchmarks.bench_latency                 # prints a Markdown table
    python -m benchmarks.bench_latency --threads 2     # two intra-op threads on both sides
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import onnxruntime as ort
import torch

from cnnlstm import create_model
from cnnlstm.export import export_onnx

__all__ = ["CASES", "main"]

#: (label, model name, constructor kwargs, per-sample input shape)
CASES = [
    ("lstm_fcn (T=100, F=6)", "lstm_fcn", {"in_channels": 6, "num_classes": 4}, (100, 6)),
    ("frame_lstm (T=16, 3x64x64)", "frame_lstm", {"in_channels": 3, "num_classes": 10, "image_size": 64},
     (16, 3, 64, 64)),
]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _eager(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x, lengths)


def _median_ms(fns: dict[str, Callable[[], object]], budget_s: float, min_runs: int) -> dict[str, float]:
    for fn in fns.values():  # warm-up: allocator, oneDNN primitive caches, ORT's first-run planning
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    # Blocks of 3 calls per runtime, alternating: load changes hit both runtimes alike, while neither runtime's
    # worker threads (ORT spins after each run, OpenMP at barriers) steal the cores of a call of the other.
    while min(len(v) for v in times.values()) < min_runs or time.perf_counter() - start < budget_s:
        for key, fn in fns.items():
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                times[key].append((time.perf_counter() - t0) * 1e3)
        if min(len(v) for v in times.values()) >= 300:
            break
    return {k: statistics.median(v) for k, v in times.items()} | {"runs": min(len(v) for v in times.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # One thread by default: on a shared machine a parallel region waits at its barrier for a core that another
    # process holds (LSTM-FCN at batch 1 took 1.4 s with 2 threads under load, 7 ms with one).
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both runtimes (default 1)")
    parser.add_argument("--budget", type=float, default=8.0, help="seconds of timing per case (at least 5 runs)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, kwargs, shape in CASES:
            torch.manual_seed(0)
            model = create_model(name, **kwargs).eval()
            report = export_onnx(model, Path(tmp) / f"{name}.onnx")
            if not report.parity.passed:
                sys.exit(f"{name}: {report.parity.summary()}")
            session = ort.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
            for batch in args.batches:
                x = torch.rand(batch, *shape)
                lengths = torch.full((batch,), shape[0], dtype=torch.int64)
                lengths[1::2] = shape[0] * 3 // 4  # half the batch padded, as a collated batch would be
                feed = {"x": x.numpy(), "lengths": lengths.numpy()}

                fns = {"eager": partial(_eager, model, x, lengths), "onnx": partial(session.run, None, feed)}
                ms = _median_ms(fns, args.budget, min_runs=5)
                rows.append((label, batch, ms["eager"], ms["onnx"], ms["runs"], report.parity.max_abs_diff))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"**Machine:** {cpu_model()}, {os.cpu_count()} logical cores (load average {load:.1f} at the end)  ")
    print(f"**Date:** {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  ")
    print(f"**Versions:** torch {torch.__version__}, onnxruntime {ort.__version__}, threads {args.threads}  ")
    print(f"**Command:** `{' '.join(sys.orig_argv)}`\n")
    print("| model | batch | eager PyTorch median (ms) | ONNX Runtime median (ms) | eager / ORT | runs | parity |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, batch, eager_ms, onnx_ms, runs, diff in rows:
        ratio = eager_ms / onnx_ms
        print(f"| {label} | {batch} | {eager_ms:.2f} | {onnx_ms:.2f} | {ratio:.2f}x | {runs} | {diff:.1e} |")


if __name__ == "__main__":
    main()
