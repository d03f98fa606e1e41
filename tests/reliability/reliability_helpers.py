"""Shared helpers of the reliability tests: deterministic hypothesis settings and a CLI runner.

Every property test here uses :data:`FUZZ` (derandomised, no example database, no deadline) so the suite
is reproducible on any machine and writes nothing outside ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings

from cnnlstm.cli import main

__all__ = ["FUZZ", "TINY_FIT", "CliResult", "run_cli", "assert_usage_error", "tiny_series", "tree_hashes"]

#: deterministic hypothesis settings; ``max_examples`` is set per test to keep the area under a minute
#: (no shrinking: a failing run stays as fast as a passing one; the failing example is printed as drawn)
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False, report_multiple_bugs=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.filter_too_much])


@dataclass
class CliResult:
    """What one ``cnnlstm`` invocation did: exit status, stdout and stderr."""

    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The ``cnnlstm: error: ...`` line (the last one), or ``""``."""
        lines = [line for line in self.err.splitlines() if line.startswith("cnnlstm: error:")]
        return lines[-1] if lines else ""


def run_cli(argv: Sequence[str]) -> CliResult:
    """Run ``cnnlstm.cli.main(argv)`` in-process, capturing both streams.

    An exception escaping ``main`` is a bug in itself (the CLI must answer every bad input with a message and
    exit status 2), so it is turned into a test failure that names the exception.

    Example:
        >>> run_cli(["recipes"]).code  # doctest: +SKIP
        0
    """
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
    except BaseException as exc:  # noqa: BLE001 - any escape is the failure being reported
        pytest.fail(f"cnnlstm {' '.join(argv)} raised {type(exc).__name__}: {exc} (stderr: {err.getvalue()[-500:]})")
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_usage_error(result: CliResult, *fragments: str) -> None:
    """Exit status 2, one ``cnnlstm: error:`` line holding every fragment (case-insensitive), no traceback."""
    assert "Traceback" not in result.err, result.err[-2000:]
    line = result.error_line()
    assert result.code == 2, f"exit {result.code}, stderr: {result.err[-1000:]}"
    for fragment in fragments:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"


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


def tree_hashes(*paths: Path) -> dict[str, str]:
    """SHA-256 of every file under ``paths`` (files or folders), keyed by path: equal before and after a command
    means it changed, added and removed nothing there.

    Example:
        >>> before = tree_hashes(run_dir, data_file)  # doctest: +SKIP
    """
    found: dict[str, str] = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for f in files:
            found[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found
