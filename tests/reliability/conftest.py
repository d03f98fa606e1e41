"""Fixtures of the reliability tests: a tiny finished run directory, made once through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import TINY_FIT, run_cli, tiny_series


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
