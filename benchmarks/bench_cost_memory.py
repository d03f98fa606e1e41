"""Check the cost report's memory figures against the allocator's own peak, for a few models and lengths.

``cnnlstm.report.cost_report`` tracks every live tensor storage (weights and inputs included) and reports the
peak for inference and for a training step (forward, backward, Adam step). Here each step runs a second time
under the torch profiler with ``profile_memory=True``, whose allocation events carry the CPU allocator's running
total, so the measured peak also holds the scratch buffers kernels allocate internally (oneDNN convolutions and
LSTMs, im2col), which the tracker cannot see; ratios below 1 measure that blind spot.

Run (CPU, about 4 minutes on 2 shared cores)::

    python benchmarks/bench_cost_memory.py            # prints a Markdown table
    python benchmarks/bench_cost_memory.py --quick    # smaller lengths
"""

from __future__ import annotations

import argparse
import time

import torch

from cnnlstm.report.cost import cost_report

__all__ = ["CASES", "main"]

#: (model name, constructor kwargs, sequence lengths, frame sizes, batch size)
CASES = [
    ("lstm_fcn", {"in_channels": 3, "num_classes": 4}, (64, 256, 1024), None, 8),
    ("deep_conv_lstm", {"in_channels": 6, "num_classes": 5}, (32, 128, 512), None, 8),
    ("crnn", {"num_classes": 20, "hidden_size": 64, "widths": (16, 32, 64, 64, 128, 128)}, (25, 100), None, 4),
    ("captioner", {"vocab_size": 50}, (8, 32), None, 4),
    ("conv_lstm_forecaster", {"in_channels": 1, "hidden_size": 16}, (4, 8), (32,), 2),
]


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest length of each case")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    print("| model | T | frame | batch | tracked inference MiB | allocator inference MiB | ratio "
          "| tracked train MiB | allocator train MiB | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    start = time.perf_counter()
    worst = 0.0
    for name, kwargs, seq_lens, frames, batch in CASES:
        table = cost_report(name, seq_lens=seq_lens[:1] if args.quick else seq_lens, frame_sizes=frames,
                            batch_size=batch, measure=True, **kwargs)
        for r in table.rows:
            ri = r.peak_inference_bytes / r.measured_inference_bytes
            rt = r.peak_train_bytes / r.measured_train_bytes
            worst = max(worst, abs(ri - 1), abs(rt - 1))
            frame = "-" if r.frame_size is None else f"{r.frame_size[0]}x{r.frame_size[1]}"
            print(f"| {name} | {r.seq_len} | {frame} | {batch} | {_mib(r.peak_inference_bytes)} | "
                  f"{_mib(r.measured_inference_bytes)} | {ri:.2f} | {_mib(r.peak_train_bytes)} | "
                  f"{_mib(r.measured_train_bytes)} | {rt:.2f} |")
    print(f"\nlargest deviation {worst:.0%}; {time.perf_counter() - start:.0f} s on {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
