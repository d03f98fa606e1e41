"""Resume reads last.ckpt with weights_only=True: a crafted or damaged file is a one-line WeightsError (exit 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from cnnlstm.cli import main
from cnnlstm.engine import fit
from cnnlstm.engine.resume import AtomicCheckpointIO
from cnnlstm.errors import WeightsError

TOY = Path(__file__).with_name("toy.yaml")
# Resuming into an existing run directory: Lightning's notes about it are expected here.
pytestmark = pytest.mark.filterwarnings("ignore:.*exists and is not empty")


class _Payload:
    """Pickles as "call Path.touch(marker)": loading it with weights_only=False would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished one-epoch toy run (config.yaml and checkpoints/last.ckpt)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    fit(str(TOY), out=out, overrides=["trainer.max_epochs=1"], verbose=False)
    return out


def test_last_checkpoint_is_saved_without_lightnings_weights_only_notice(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="lightning.pytorch.trainer.connectors.checkpoint_connector")
    fit(str(TOY), out=tmp_path / "run", verbose=False)  # two epochs: last.ckpt written twice
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not [r for r in caplog.records if "weights_only" in r.getMessage()]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["optimizer_states"] and state["epoch"] == 1  # the full training state, as resume needs


def test_crafted_last_checkpoint_is_refused_without_running_it(run_dir, tmp_path, capsys) -> None:
    marker = tmp_path / "code-ran"
    last = run_dir / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    state = torch.load(last, weights_only=True)
    torch.save({**state, "payload": _Payload(marker)}, last)
    try:
        assert main(["fit", "--resume", str(run_dir)]) == 2
    finally:
        last.write_bytes(good)
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.startswith("cnnlstm: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot be resumed from" in err and "delete it" in err


@pytest.mark.parametrize("damage", ["truncated", "text"])
def test_damaged_last_checkpoint_is_a_one_line_error(run_dir, capsys, damage: str) -> None:
    last = run_dir / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2] if damage == "truncated" else b"not a checkpoint")
    try:
        assert main(["fit", "--resume", str(run_dir)]) == 2
    finally:
        last.write_bytes(good)
    err = capsys.readouterr().err
    assert err.startswith("cnnlstm: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert f"{last} cannot be resumed from" in err


def test_checkpoint_io_loads_tensors_only_even_when_asked_for_more(tmp_path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="cannot be resumed from"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, path)
    assert AtomicCheckpointIO().load_checkpoint(path)["epoch"] == 3
