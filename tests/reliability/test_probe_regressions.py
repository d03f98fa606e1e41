"""Regressions of the bad inputs a new-user probe found (issue 15): each is exit 2 and one line naming the file or
key and what to change, or, for Ctrl-C, exit 130 with the resume command. Refused fits leave no run folder.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import yaml
from PIL import Image
from reliability_helpers import TINY_FIT, assert_usage_error, run_cli, tiny_series, tree_hashes

X, Y = tiny_series(12, 0)
XT, YT = tiny_series(6, 1)


def _fit(spec: str, out: Path, *extra: str) -> list[str]:
    return ["fit", "--recipe", "basic_motions", "--data", spec, *TINY_FIT, *extra, "--out", str(out)]


@pytest.mark.parametrize(("arrays", "fragment"), [
    (dict(X=X[:0], y=Y[:0]), "X/y has no samples"),
    (dict(X_train=X[:0], y_train=Y[:0], X_test=XT[:0], y_test=YT[:0]), "(train) has no samples"),
    (dict(X=X[:1], y=Y[:1]), "too few samples"),
], ids=["X/y empty", "train/test empty", "one sample"])
def test_empty_and_one_sample_npz(tmp_path: Path, arrays: dict, fragment: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    assert_usage_error(run_cli(_fit(f"npz:{tmp_path / 'd.npz'}", tmp_path / "run")), fragment)
    assert not (tmp_path / "run").exists()


def test_zero_byte_npz_in_fit_and_predict(tiny_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert_usage_error(run_cli(_fit(f"npz:{empty}", tmp_path / "run")), str(empty), "is empty (0 bytes)")
    assert_usage_error(run_cli(["predict", "--run", str(tiny_run), str(empty)]), str(empty), "is empty (0 bytes)")
    assert not (tmp_path / "run").exists()


def test_a_model_too_large_to_allocate(tiny_npz: Path, tmp_path: Path) -> None:
    huge = ["--set", "model.hidden_size=100000000"]
    result = run_cli([*_fit(f"npz:{tiny_npz}", tmp_path / "run"), *huge])
    assert_usage_error(result, "too large to build", "model.hidden_size=100000000")
    assert not (tmp_path / "run").exists()
    result = run_cli(["summary", "--recipe", "basic_motions", "--seq-len", "8", *huge])
    assert_usage_error(result, "too large to build", "model.hidden_size=100000000")


@pytest.mark.parametrize(("setting", "fragments"), [
    ("trainer.max_epochs=0", ["trainer.max_epochs must be >= 1", "got 0"]),
    ("trainer.devices=0", ["rejected by Lightning", "devices=0"]),  # refused by Lightning, before the run exists
])
def test_trainer_settings_refused_before_training_leave_no_run(tiny_npz: Path, tmp_path: Path, setting: str,
                                                               fragments: list[str]) -> None:
    result = run_cli(_fit(f"npz:{tiny_npz}", tmp_path / "run", setting))
    assert_usage_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_saved_configs_are_validated_again(tiny_run: Path, tiny_npz: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(tiny_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["batch_size"] = -3
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = tree_hashes(run)
    for argv in (["test", "--run", str(run)], ["predict", "--run", str(run), str(tiny_npz)],
                 ["export", "--run", str(run), "--out", str(tmp_path / "export")], ["fit", "--resume", str(run)]):
        assert_usage_error(run_cli(argv), f"{run / 'config.yaml'}", "data.batch_size must be >= 1, got -3")
    assert tree_hashes(run) == before


class _CtrlC(pl.Callback):
    """Raises KeyboardInterrupt (what SIGINT raises in the main thread) at the start of the second epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_ctrl_c_during_fit_prints_the_resume_command(tiny_npz: Path, tmp_path: Path, monkeypatch) -> None:
    import importlib
    import signal

    fit_module = importlib.import_module("cnnlstm.engine.fit")  # the package's `fit` function hides the module
    make_trainer = fit_module.make_trainer

    def with_ctrl_c(*args, callbacks=(), **kwargs):
        return make_trainer(*args, callbacks=[*callbacks, _CtrlC()], **kwargs)

    out = tmp_path / "run"
    argv = _fit(f"npz:{tiny_npz}", out, "trainer.max_epochs=2")
    with monkeypatch.context() as patch:
        patch.setattr(fit_module, "make_trainer", with_ctrl_c)
        result = run_cli(argv)
    assert result.code == 130, result.err[-1500:]
    assert f"continue it with `cnnlstm fit --resume {out}`" in result.err.splitlines()[-1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN is undone
    assert not (out / ".cnnlstm.lock").exists() and (out / "checkpoints" / "last.ckpt").is_file()
    resumed = run_cli(["fit", "--resume", str(out)])
    assert resumed.code == 0, resumed.err[-1500:]
    assert (out / "metrics.json").is_file()


def _clips(root: Path) -> None:
    for label, value in (("dark", 20), ("light", 230)):
        for k in range(3):
            folder = root / label / f"clip{k}"
            folder.mkdir(parents=True)
            for t in range(2):
                Image.new("RGB", (8, 8), (value, value, value)).save(folder / f"{t}.png")


def test_corrupt_frames_are_named_before_the_run_folder_exists(tmp_path: Path) -> None:
    _clips(tmp_path / "clips")
    bad = tmp_path / "clips" / "light" / "clip2" / "1.png"
    recipe = tmp_path / "frames.yaml"
    recipe.write_text(
        f'name: frames_tiny\ndata: {{spec: "frames:{tmp_path / "clips"}", batch_size: 2, val_fraction: 0.25,\n'
        "  options: {num_frames: 2, size: 8, test_fraction: 0.34}}\n"
        "model: {name: frame_lstm, hidden_size: 4, encoder_kwargs: {widths: [4, 8]}}\n"
        "trainer: {max_epochs: 1, accelerator: cpu, enable_progress_bar: false}\n")
    for content in (b"", b"\x89PNG\r\n\x1a\n", b"not an image at all"):
        bad.write_bytes(content)
        result = run_cli(["fit", "--recipe", str(recipe), "--out", str(tmp_path / "run")])
        assert_usage_error(result, str(bad), "replace or remove it")
        assert not (tmp_path / "run").exists()
