"""Engine tests: register the toy model and dataset (tests/engine/toys.py)."""

import toys  # noqa: F401  (registers toy_lstm and the toy: source)
