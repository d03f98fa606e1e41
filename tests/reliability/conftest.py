"""Fixtures of the reliability tests: a tiny finished run directory, made once through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import run_cli


def tiny_series(n: int, seed: int, length: int = 8, channels: int = 2, classes: int = 2) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Class c's series are offset by c: separable, float32 (N, T, F), labels 0..classes-1 in turn."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, length, channels)) + 2.0 * y[:, None, None]
    return x.astype(np.float32), y


#: a tiny LSTM-FCN over the basic_motions recipe, one epoch: a real run directory in a few seconds
TINY_FIT = ["--set", "trainer.max_epochs=1", "model.hidden_size=4", "model.filters=[4,4,4]", "data.batch_size=4",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An npz series dataset: 12 train / 6 test series of (8, 2), two classes."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    x_train, y_train = tiny_series(12, 0)
    x_test, y_test = tiny_series(6, 1)
    np.savez(path, X_train=x_train, y_train=y_train, X_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path) -> Path:
    """A finished run directory (``cnnlstm fit``) on :func:`tiny_npz`."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_cli(["fit", "--recipe", "basic_motions", "--data", f"npz:{tiny_npz}", *TINY_FIT, "--out", str(out)])
    assert result.code == 0, result.err[-2000:]
    assert (out / "checkpoints" / "best.safetensors").is_file()
    return out
