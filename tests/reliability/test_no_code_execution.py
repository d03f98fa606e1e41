"""No file cnnlstm reads may run code: crafted pickles handed to every entry point that loads weights.

The payload is an object whose ``__reduce__`` calls ``open(marker, "w")``: unpickling it creates the marker
file. Each test first proves the payload is live (a plain ``pickle.load`` / ``torch.load(weights_only=False)``
creates the marker), then hands the same bytes to a cnnlstm entry point and checks that the load is refused
with cnnlstm's error and the marker never appears.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import assert_usage_error, run_cli

from cnnlstm.encoders import build_encoder, load_encoder, load_weights, read_state_dict
from cnnlstm.engine import load_weights as load_run_weights
from cnnlstm.errors import CnnLstmError, WeightsError
from cnnlstm.models import create_model


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for any code an attacker would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable, tuple]:
        return open, (str(self.marker), "w")


def write_payload(path: Path, marker: Path, fmt: str) -> Path:
    """A weights-looking file whose state dict hides the payload: torch's zip or legacy format, or a bare pickle."""
    state = {"state_dict": {"weight": Payload(marker)}}
    if fmt == "raw":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    return path


def unsafe_load(path: Path, fmt: str) -> None:
    """What an unsafe reader would do (the control that proves the payload runs)."""
    if fmt == "raw":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)


@pytest.fixture(params=["zip", "legacy", "raw"])
def evil(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = write_payload(tmp_path / "weights.pth", marker, request.param)
    yield path, marker
    assert not marker.exists(), "the crafted pickle ran"


def test_the_payload_is_live(tmp_path: Path) -> None:
    for fmt in ("zip", "legacy", "raw"):
        marker = tmp_path / f"live-{fmt}"
        unsafe_load(write_payload(tmp_path / f"w-{fmt}.pth", marker, fmt), fmt)
        assert marker.exists(), fmt


def test_read_state_dict_refuses(evil: tuple[Path, Path]) -> None:
    path, _ = evil
    with pytest.raises(WeightsError, match=r"refused|cannot read"):  # a bare pickle is not even torch's format
        read_state_dict(path)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt"])
def test_encoder_load_weights_refuses_every_pickle_suffix(evil: tuple[Path, Path], suffix: str) -> None:
    path, _ = evil
    renamed = path.rename(path.with_suffix(suffix))
    with pytest.raises(WeightsError, match=r"execute code|cannot read"):
        load_weights(build_encoder("cnn", in_channels=1, widths=(4, 8)), renamed)


def test_pretrained_file_given_to_a_model_refuses(evil: tuple[Path, Path]) -> None:
    path, _ = evil
    with pytest.raises(WeightsError):
        create_model("frame_lstm", num_classes=2, in_channels=3, hidden_size=4, encoder_kwargs={"widths": (4, 8)},
                     pretrained=str(path))


def test_a_pickle_named_safetensors_is_refused_by_every_safetensors_reader(evil: tuple[Path, Path]) -> None:
    path, _ = evil
    disguised = path.rename(path.with_suffix(".safetensors"))
    for load in (read_state_dict, load_encoder, load_run_weights):
        with pytest.raises(WeightsError):
            load(disguised)


def test_lightning_checkpoint_loader_refuses(evil: tuple[Path, Path]) -> None:
    """``fit`` reloads its best ``.ckpt`` with ``weights_only=True``; a swapped file must not run."""
    from cnnlstm.engine.fit import load_best

    path, _ = evil
    with pytest.raises(CnnLstmError):  # a raw pickle.UnpicklingError would still be safe, but unexplained
        load_best(torch.nn.Module(), path)


@pytest.fixture
def evil_run(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a finished run whose best weights were swapped for the payload (same file name)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    marker = tmp_path / "PWNED"
    write_payload(run / "checkpoints" / "best.safetensors", marker, "zip")
    write_payload(run / "checkpoints" / "best.ckpt", marker, "zip")
    write_payload(run / "checkpoints" / "last.ckpt", marker, "zip")
    yield run, marker
    assert not marker.exists(), "the crafted pickle ran"


def test_cli_test_refuses_a_run_with_pickled_weights(evil_run: tuple[Path, Path]) -> None:
    run, _ = evil_run
    assert_usage_error(run_cli(["test", "--run", str(run)]), "best.safetensors")


def test_cli_predict_refuses_a_run_with_pickled_weights(evil_run: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = evil_run
    np.savez(tmp_path / "new.npz", X=np.zeros((2, 8, 2), np.float32))
    assert_usage_error(run_cli(["predict", "--run", str(run), str(tmp_path / "new.npz")]), "best.safetensors")


def test_object_arrays_in_npz_inputs_are_never_unpickled(tiny_run: Path, tmp_path: Path) -> None:
    """``.npz`` data (the ``npz:`` source and ``predict`` inputs) is read with ``allow_pickle=False``."""
    marker = tmp_path / "PWNED"
    arrays = np.empty(2, dtype=object)
    arrays[:] = [Payload(marker), Payload(marker)]
    np.savez(tmp_path / "evil.npz", X=arrays, X_train=arrays, y_train=np.arange(2), X_test=arrays,
             y_test=np.arange(2))
    np.load(tmp_path / "evil.npz", allow_pickle=True)["X"]  # proves the payload is live
    assert marker.exists()
    marker.unlink()
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(tmp_path / "evil.npz")]))
    assert_usage_error(run_cli(["test", "--run", str(tiny_run), "--data", f"npz:{tmp_path / 'evil.npz'}"]),
                       "Python objects")
    assert not marker.exists(), "the crafted pickle ran"


def test_export_refuses_a_run_with_pickled_weights(evil_run: tuple[Path, Path], tmp_path: Path) -> None:
    from cnnlstm.export.run import export_run

    run, _ = evil_run
    with pytest.raises(WeightsError, match="best.safetensors"):
        export_run(run, tmp_path / "export", formats=("onnx", "torchscript"))
    assert not (tmp_path / "export" / "model.onnx").exists()


def test_exported_model_loaders_refuse_a_crafted_pickle(evil: tuple[Path, Path]) -> None:
    """``load_torchscript`` / ``OnnxPredictor`` read archives, not pickles: the payload is rejected unrun.

    An exported TorchScript archive is itself code (TorchScript): load only archives you exported.
    """
    from cnnlstm.export.predictor import OnnxPredictor
    from cnnlstm.export.torchscript_export import load_torchscript

    path, _ = evil
    with pytest.raises(WeightsError):
        OnnxPredictor(path)
    with pytest.raises(CnnLstmError):  # torch.jit.load's own RuntimeError would be safe but unexplained
        load_torchscript(path)
