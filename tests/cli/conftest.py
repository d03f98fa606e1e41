"""CLI tests reuse the engine's toy model and data (tests/engine/toys.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import toys  # noqa: E402,F401  (registers toy_lstm and the toy: source)
