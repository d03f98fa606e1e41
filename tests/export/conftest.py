"""Fixtures of the export tests (helpers in export_toys.py): one ONNX export per model, shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from export_toys import build, example
from torch import nn

from cnnlstm.export import ExportReport, export_onnx


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[nn.Module, ExportReport]]:
    """``onnx_export(name) -> (model, report)``, exported once per test module (exports take about a second)."""
    cache: dict[str, tuple[nn.Module, ExportReport]] = {}

    def get(name: str) -> tuple[nn.Module, ExportReport]:
        if name not in cache:
            model = build(name)
            path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
            cache[name] = (model, export_onnx(model, path, example_inputs=example(model)))
        return cache[name]

    return get
