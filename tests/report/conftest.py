"""Report tests reuse the engine's toy model and data (tests/engine/toys.py) and share one toy run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import pytest  # noqa: E402
import toys  # noqa: E402,F401  (registers toy_lstm and the toy: source)

TOY = str(Path(__file__).resolve().parents[1] / "engine" / "toy.yaml")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished toy run (12 test series, 3 classes) with the report.html its fit wrote."""
    from cnnlstm.engine import fit

    out = tmp_path_factory.mktemp("toy") / "toy-run"
    fit(TOY, out=out, verbose=False)
    return out
