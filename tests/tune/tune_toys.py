"""Helpers for the tune tests: a tiny learnable series dataset (.npz) and a recipe with a search section."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
