"""Soak test: train a small recipe for many epochs through the real ``fit`` path and watch the process's memory.

Every epoch a Lightning callback records the resident set size (RSS, from ``/proc/self/status``) after the
validation epoch, i.e. after checkpoints, the CSV log and the history were written. A leak (tensors kept in a
growing list, metric states never reset, file handles, an autograd graph held across epochs) shows as a
steady RSS slope; allocator noise and one-off warm-up do not. The verdict fits a least-squares line to the
last ``--window`` epochs and calls memory flat when the fitted growth over that window stays under
``--tolerance-mib``.

Usage:
    python -m benchmarks.soak                       # gunpoint, shrunk DeepConvLSTM, 200 epochs
    python -m benchmarks.soak --epochs 50 --json soak.json

Prints one line per 10 epochs and a summary; ``--json`` writes every epoch's RSS and the verdict.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from cnnlstm.engine import fit

# ``cnnlstm.engine.fit`` the attribute is the function; the module (whose make_trainer fit calls) is this one.
fit_module = importlib.import_module("cnnlstm.engine.fit")

__all__ = ["rss_mib", "RssRecorder", "slope_mib_per_epoch", "main"]

#: the recipe and overrides soaked by default: GunPoint (50 train series of 150 steps), a shrunk DeepConvLSTM,
#: early stopping off so every epoch runs, checkpoints on so every epoch writes files
DEFAULT_RECIPE = "gunpoint"
DEFAULT_OVERRIDES = ["model.hidden_size=8", "model.filters=8", "model.num_conv_layers=2",
                     "early_stopping.enabled=false", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                     "trainer.log_every_n_steps=50"]


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux ``/proc``; falls back to peak RSS elsewhere).

    Example:
        >>> rss_mib() > 0
        True
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB -> MiB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class RssRecorder(pl.Callback):
    """Record RSS (MiB) and wall time at the end of every validation epoch of a fit.

    Args:
        collect: run ``gc.collect()`` first, so garbage that Python would free anyway is not counted as a leak.

    Example:
        >>> recorder = RssRecorder()
        >>> trainer = pl.Trainer(callbacks=[recorder])  # doctest: +SKIP
    """

    def __init__(self, collect: bool = True) -> None:
        self.collect = collect
        self.rows: list[dict[str, float]] = []
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.collect:
            gc.collect()
        self.rows.append({"epoch": trainer.current_epoch + 1, "rss_mib": round(rss_mib(), 2),
                          "seconds": round(time.perf_counter() - self._start, 2)})
        if len(self.rows) % 10 == 0:
            row = self.rows[-1]
            print(f"epoch {row['epoch']:4d}  rss {row['rss_mib']:8.1f} MiB  {row['seconds']:7.1f} s", flush=True)


def slope_mib_per_epoch(rows: list[dict[str, float]], window: int) -> tuple[float, float]:
    """Least-squares slope of RSS over the last ``window`` epochs, and the growth it implies over that window.

    Example:
        >>> slope_mib_per_epoch([{"epoch": e, "rss_mib": 100 + 0.5 * e} for e in range(1, 11)], 5)
        (0.5, 2.0)
    """
    tail = rows[-window:]
    if len(tail) < 2:
        return 0.0, 0.0
    epochs = np.array([r["epoch"] for r in tail], dtype=np.float64)
    rss = np.array([r["rss_mib"] for r in tail], dtype=np.float64)
    slope = float(np.polyfit(epochs, rss, 1)[0])
    return round(slope, 4), round(float(slope * (epochs[-1] - epochs[0])), 2)


def _with_recorder(recorder: RssRecorder) -> Any:
    """``make_trainer`` as ``fit`` calls it, plus the recorder: the soak runs the real fit path unchanged."""
    original = fit_module.make_trainer

    def make_trainer(*args: Any, **kwargs: Any) -> Any:
        trainer, ckpt = original(*args, **kwargs)
        trainer.callbacks.append(recorder)
        return trainer, ckpt

    return make_trainer


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit status 0 when memory is flat, 1 when it grows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=DEFAULT_RECIPE)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--window", type=int, default=150, help="epochs at the end the slope is fitted on")
    parser.add_argument("--tolerance-mib", type=float, default=20.0, help="largest fitted growth over the window")
    parser.add_argument("--set", nargs="*", action="extend", default=[], dest="overrides",
                        help="extra recipe overrides")
    parser.add_argument("--json", help="write per-epoch RSS and the verdict here")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared machines: 1)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    recorder = RssRecorder()
    fit_module.make_trainer = _with_recorder(recorder)
    overrides = [*DEFAULT_OVERRIDES, f"trainer.max_epochs={args.epochs}", *args.overrides]
    start_rss = rss_mib()
    with tempfile.TemporaryDirectory(prefix="cnnlstm-soak-") as out:
        result = fit(args.recipe, overrides=overrides, out=out, verbose=False)
    slope, growth = slope_mib_per_epoch(recorder.rows, args.window)
    rss = [r["rss_mib"] for r in recorder.rows]
    flat = bool(growth < args.tolerance_mib)
    summary = {
        "recipe": args.recipe, "overrides": overrides, "epochs": len(recorder.rows), "window": args.window,
        "rss_before_fit_mib": round(start_rss, 1), "rss_first_epoch_mib": rss[0], "rss_last_epoch_mib": rss[-1],
        "rss_max_mib": max(rss), "slope_mib_per_epoch": slope, "fitted_growth_over_window_mib": growth,
        "tolerance_mib": args.tolerance_mib, "flat": flat, "seconds": recorder.rows[-1]["seconds"],
        "test_acc": result.metrics.get("test/acc"), "params": result.metrics.get("params"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{args.threads} thread(s)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "overrides"}, indent=2))
    print(f"memory {'flat' if flat else 'GROWS'}: {slope:+.4f} MiB/epoch over the last {args.window} epochs "
          f"({growth:+.1f} MiB fitted, tolerance {args.tolerance_mib} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({**summary, "per_epoch": recorder.rows}, indent=1) + "\n")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
