"""Helpers for the tune tests: a tiny learnable series dataset (.npz) and a recipe with a search section."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# A process given this hook pauses after each epoch it reports, so "mid-trial" lasts seconds rather than the tenths
# of a second a toy epoch takes: a test that kills it mid-trial cannot miss its window however busy the machine is.
# It is a site hook for that one process (a test-only shim; the library is not changed), and Optuna's heartbeat
# thread keeps beating meanwhile.
SLOW_REPORT = """
import time
import optuna.trial

_report = optuna.trial.Trial.report


def _slow_report(self, value, step):
    _report(self, value, step)
    time.sleep(2.0)


optuna.trial.Trial.report = _slow_report
"""


def with_slow_reports(env: dict[str, str], where: Path) -> dict[str, str]:
    """``env`` with :data:`SLOW_REPORT` installed as ``sitecustomize`` (written under ``where``) for a child process."""
    hook = where / "slow_site"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(SLOW_REPORT)
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH", "")) if p)}


def write_series(path: Path, seed: int = 0) -> Path:
    """Two classes of 16-step, 2-channel series drifting up or down, plus noise."""
    def make(n: int, s: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(s)
        y = np.arange(n) % 2
        t = np.linspace(0, 1, 16)[None, :, None]
        x = (2 * y[:, None, None] - 1) * t * 1.5 + rng.normal(scale=0.6, size=(n, 16, 2))
        return x.astype(np.float32), y

    x_tr, y_tr = make(32, seed)
    x_te, y_te = make(16, seed + 1)
    np.savez(path, X_train=x_tr, y_train=y_tr, X_test=x_te, y_test=y_te)
    return path


def toy_recipe(tmp: Path, **search: object) -> dict:
    """A recipe for a tiny LSTM-FCN on the toy series, searched over a small space."""
    data = write_series(tmp / "toy.npz")
    return {
        "name": "toy",
        "seed": 0,
        "data": {"spec": f"npz:{data}", "batch_size": 8, "val_fraction": 0.25},
        "model": {"name": "lstm_fcn", "hidden_size": 4, "filters": [4, 8], "kernel_sizes": [3, 3], "dropout": 0.0},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False},
        "early_stopping": {"monitor": "val/loss", "mode": "min"},
        "search": {
            "space": {
                "model.hidden_size": {"low": 2, "high": 6},
                "model.num_layers": 1,
                "conv": {"type": "stack", "widths": "model.filters", "shape": "bottleneck", "depth": [2, 3],
                         "width": [4, 8], "kernels": "model.kernel_sizes", "kernel": [3, 5]},
                "data.batch_size": [8, 16],
            },
            **search,
        },
    }


__all__ = ["write_series", "toy_recipe"]
