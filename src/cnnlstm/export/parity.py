"""Parity between the eager model and an exported one, checked on inputs the export never saw.

Every export runs it: fresh random inputs with a *different* batch size and length than the export example
(so a frozen axis or a baked-in constant shows up), eager outputs against exported outputs, the largest
absolute difference against a tolerance (1e-4 for fp32). The result travels in the export report and is
written next to the exported file as ``parity.json`` (one entry per exported file in that folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cnnlstm.export.spec import ExportSpec, resized_inputs

__all__ = ["ParityReport", "check_parity", "write_parity", "PARITY_TOLERANCE"]

#: max abs difference allowed between eager and exported fp32 outputs.
PARITY_TOLERANCE = 1e-4


@dataclass
class ParityReport:
    """Outcome of one parity check.

    Attributes:
        format: ``"onnx"`` or ``"torchscript"``.
        max_abs_diff: largest ``|eager - exported|`` over all checked outputs.
        tolerance: the allowed maximum.
        passed: ``max_abs_diff <= tolerance`` (and both finite).
        example_shapes: input shapes the export was traced with.
        checked_shapes: input shapes of the checks (other batch size and length), one dict per check.
        padded: whether the checks had ragged ``lengths``.
    """

    format: str
    max_abs_diff: float
    tolerance: float
    passed: bool
    example_shapes: dict[str, list[int]]
    checked_shapes: list[dict[str, list[int]]] = field(default_factory=list)
    padded: bool = False

    def summary(self) -> str:
        """One line for the CLI, e.g. ``onnx parity: max |diff| 3.1e-08 <= 1e-04 on B=3, T=17 (padded): ok``."""
        verdict = "ok" if self.passed else "FAILED"
        shapes = "; ".join(", ".join(f"{k}={tuple(v)}" for k, v in s.items()) for s in self.checked_shapes)
        padded = " (padded)" if self.padded else ""
        return (
            f"{self.format} parity: max |diff| {self.max_abs_diff:.1e} "
            f"{'<=' if self.passed else '>'} {self.tolerance:.0e} on {shapes}{padded}: {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _shapes(inputs: dict[str, Tensor]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in inputs.items()}


@torch.no_grad()
def check_parity(
    model: nn.Module,
    run_exported: Callable[[dict[str, Tensor]], np.ndarray | Tensor],
    example: dict[str, Tensor],
    spec: ExportSpec,
    fmt: str,
    tolerance: float = PARITY_TOLERANCE,
    seed: int = 0,
) -> ParityReport:
    """Compare ``model`` (eager, eval) with ``run_exported`` on two fresh inputs of other sizes.

    The checks use batch sizes ``B + 1`` and ``1`` and, where time is dynamic, lengths ``T + 5`` and ``T - 1``
    (at least 2), so neither the traced batch nor the traced length can pass by accident.

    Args:
        model: the eager model.
        run_exported: maps keyword inputs to the exported model's output.
        example: the inputs the export was traced with.
        spec: the export spec (which axes are dynamic).
        fmt: format name for the report.
        tolerance: allowed max abs difference.
        seed: seed of the fresh inputs.

    Example:
        >>> report = check_parity(model, run, example, spec, "onnx")  # doctest: +SKIP
        >>> report.passed  # doctest: +SKIP
        True
    """
    model.eval()
    B = next(iter(example.values())).shape[0]
    T = next((example[k].shape[a] for k, a in spec.time_axes.items()), None)
    sizes = [(B + 1, None if T is None else T + 5), (1, None if T is None else max(2, T - 1))]
    worst, checked = 0.0, []
    for k, (batch, time) in enumerate(sizes):
        inputs = resized_inputs(example, spec, batch, time, seed=seed + k)
        expected = model(**inputs).float().numpy()
        got = run_exported(inputs)
        got = got.float().numpy() if isinstance(got, Tensor) else np.asarray(got, dtype=np.float32)
        if got.shape != expected.shape or not np.isfinite(got).all():
            worst = float("inf")
        else:
            worst = max(worst, float(np.abs(got - expected).max(initial=0.0)))
        checked.append(_shapes(inputs))
    return ParityReport(
        format=fmt, max_abs_diff=worst, tolerance=tolerance, passed=bool(worst <= tolerance),
        example_shapes=_shapes(example), checked_shapes=checked, padded="lengths" in example,
    )


def write_parity(exported: str | Path, report: ParityReport) -> Path:
    """Record ``report`` under the exported file's name in ``parity.json`` beside it; returns the JSON path.

    Example:
        >>> write_parity("out/model.onnx", report)  # doctest: +SKIP
        PosixPath('out/parity.json')
    """
    exported = Path(exported)
    path = exported.parent / "parity.json"
    entries = json.loads(path.read_text()) if path.is_file() else {}
    entry = report.to_dict()
    if not np.isfinite(entry["max_abs_diff"]):
        entry["max_abs_diff"] = None  # JSON has no inf: shapes differed or outputs were not finite
    entries[exported.name] = entry
    path.write_text(json.dumps(entries, indent=2) + "\n")
    return path
