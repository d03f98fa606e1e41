"""Check the cost report's memory figures against the allocator's own peak, for a few models and lengths.

``cnnlstm.profile.cost_report`` tracks every live tensor storage (weights and inputs included), adds the scratch
buffers CPU kernels hold while they run (``cnnlstm.profile.kernel_scratch``: oneDNN convolutions' blocked copies,
oneDNN LSTM scratchpads and weight reorders, im2col columns), and reports the peak for inference and for a
training step (forward, backward, Adam step). Here each step runs a second time under the torch profiler with
``profile_memory=True``, whose allocation events carry the CPU allocator's running total, so the measured peak
holds every buffer a kernel allocates through PyTorch's allocator; the ratio is estimate / measured.

The scratch rules model oneDNN on an AVX-512 CPU; the footer names the CPU capability torch saw and any
``ONEDNN_MAX_CPU_ISA`` cap. With the cap set (``ONEDNN_MAX_CPU_ISA=AVX2`` plays an AVX2-only processor), the
record goes to ``cost_memory_<isa>.md|json`` beside the default one.

Run (CPU, about 6 minutes on 2 shared cores)::

    OMP_NUM_THREADS=2 python -m benchmarks.bench_cost_memory            # Markdown table, also written to
                                                                        # benchmarks/results/cost_memory.md|json
    OMP_NUM_THREADS=2 python -m benchmarks.bench_cost_memory --quick    # smallest length of each case only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from cnnlstm.profile import cost_report

__all__ = ["CASES", "main"]

#: (model name, constructor kwargs, sequence lengths, frame sizes, batch size)
CASES = [
    ("lstm_fcn", {"in_channels": 3, "num_classes": 4}, (64, 256, 1024), None, 8),
    ("deep_conv_lstm", {"in_channels": 6, "num_classes": 5}, (32, 128, 512), None, 8),
    ("crnn", {"num_classes": 20, "hidden_size": 64, "widths": (16, 32, 64, 64, 128, 128)}, (25, 100), None, 4),
    ("captioner", {"vocab_size": 50}, (8, 32), None, 4),
    ("conv_lstm_forecaster", {"in_channels": 1, "hidden_size": 16}, (4, 8), (32,), 2),
]

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.25  # the cost report's promise: within 25 % of the measured peak


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def _markdown(rows: list[dict], footer: str) -> str:
    lines = [
        "| model | T | frame | batch | estimated inference MiB | allocator inference MiB | ratio "
        "| estimated train MiB | allocator train MiB | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['seq_len']} | {r['frame']} | {r['batch']} | {_mib(r['estimated_inference'])} | "
            f"{_mib(r['measured_inference'])} | {r['ratio_inference']:.2f} | {_mib(r['estimated_train'])} | "
            f"{_mib(r['measured_train'])} | {r['ratio_train']:.2f} |")
    return "\n".join([*lines, "", footer])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest length of each case")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    start = time.perf_counter()
    rows = []
    for name, kwargs, seq_lens, frames, batch in CASES:
        table = cost_report(name, seq_lens=seq_lens[:1] if args.quick else seq_lens, frame_sizes=frames,
                            batch_size=batch, measure=True, **kwargs)
        for r in table.rows:
            rows.append({
                "model": name, "seq_len": r.seq_len, "batch": batch,
                "frame": "-" if r.frame_size is None else f"{r.frame_size[0]}x{r.frame_size[1]}",
                "estimated_inference": r.peak_inference_bytes, "measured_inference": r.measured_inference_bytes,
                "ratio_inference": r.peak_inference_bytes / r.measured_inference_bytes,
                "estimated_train": r.peak_train_bytes, "measured_train": r.measured_train_bytes,
                "ratio_train": r.peak_train_bytes / r.measured_train_bytes,
            })
            print(f"{name} T={r.seq_len}: inference {rows[-1]['ratio_inference']:.2f}, "
                  f"train {rows[-1]['ratio_train']:.2f}", flush=True)
    worst = max(max(abs(r["ratio_inference"] - 1), abs(r["ratio_train"] - 1)) for r in rows)
    outside = [f"{r['model']} T={r['seq_len']}" for r in rows
               if max(abs(r["ratio_inference"] - 1), abs(r["ratio_train"] - 1)) > TOLERANCE]
    machine = {
        "cpu": platform.processor() or platform.machine(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.perf_counter() - start),
    }
    footer = (f"Largest deviation {worst:.0%} ({'all rows within' if not outside else 'outside: ' + ', '.join(outside)}"
              f" {TOLERANCE:.0%}); {machine['seconds']} s on {machine['threads']} threads, "
              f"{machine['cpu_capability']}"
              + (f" with ONEDNN_MAX_CPU_ISA={machine['onednn_max_cpu_isa']}" if machine["onednn_max_cpu_isa"] else "")
              + f", torch {machine['torch']}, {machine['date']}.")
    text = _markdown(rows, footer)
    print("\n" + text)
    if not args.no_write and not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = "cost_memory" + (f"_{machine['onednn_max_cpu_isa'].lower()}" if machine["onednn_max_cpu_isa"] else "")
        (RESULTS / f"{stem}.md").write_text(text + "\n")
        record = {"machine": machine, "tolerance": TOLERANCE, "largest_deviation": worst, "rows": rows}
        (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
