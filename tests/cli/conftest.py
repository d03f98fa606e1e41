"""CLI tests reuse the engine's toy model and data (tests/engine/toys.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import pytest  # noqa: E402
import toys  # noqa: E402,F401  (registers toy_lstm and the toy: source)


@pytest.fixture(autouse=True)
def _feature_cache_in_tmp(tmp_path_factory, monkeypatch) -> None:
    """Frozen-encoder recipes cache features (data.feature_cache: auto); keep them out of ~/.cache."""
    monkeypatch.setenv("CNNLSTM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "feature-cache"))
