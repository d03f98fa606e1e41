"""trainer.tbptt_steps from a recipe: a CLI fit runs in chunks; k >= T trains as the normal path (to rounding);
settings TBPTT cannot honour are one-line ConfigErrors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlstm.cli import main
from cnnlstm.data import DataInfo
from cnnlstm.engine import fit, load_weights
from cnnlstm.engine.recipe import apply_overrides, load_recipe, resolve_config, validate_recipe
from cnnlstm.errors import ConfigError
from cnnlstm.tasks import tbptt

RECIPE = """\
name: tiny_tbptt
seed: 0
data:
  spec: "builtin:digit_sequences"
  val_fraction: 0.25
  batch_size: 4
  options: {n_train: 16, n_test: 4, min_length: 2, max_length: 3}
model:
  name: frame_lstm
  encoder_kwargs: {widths: [4]}
  hidden_size: 4
trainer: {max_epochs: 1, accelerator: cpu, enable_progress_bar: false}
"""


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CNNLSTM_CACHE_DIR", str(tmp_path / "feature_cache"))  # frozen encoders cache features


@pytest.fixture
def calls(monkeypatch) -> list[tuple[int, int, int, int]]:
    """(T, k, chunks, backward chunks) of every batch the TBPTT task trained on."""
    seen = []
    original = tbptt.truncated_bptt

    def counting(forward_chunk, x, k, *args, **kwargs):
        result = original(forward_chunk, x, k, *args, **kwargs)
        seen.append((x.shape[1], k, result.chunks, result.backward_chunks))
        return result

    monkeypatch.setattr(tbptt, "truncated_bptt", counting)
    return seen


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_tbptt.yaml"
    path.write_text(RECIPE)
    return path


def test_cli_fit_trains_in_chunks_and_writes_the_run(recipe: Path, tmp_path: Path, calls: list) -> None:
    out = tmp_path / "run"
    assert main(["fit", "--recipe", str(recipe), "--out", str(out), "--set", "trainer.tbptt_steps=2"]) == 0
    for name in ("config.yaml", "metrics.json", "checkpoints/best.safetensors", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test/acc", "val/acc", "train/loss"} <= set(metrics)
    # 12 training clips (16 minus a quarter for validation) in batches of 4, every batch cut into chunks of 2.
    assert len(calls) == 3
    assert all(k == 2 and chunks == -(-T // 2) and backward == 1 for T, k, chunks, backward in calls)
    assert any(chunks == 2 for _, _, chunks, _ in calls)  # clips of 3 frames: two chunks, one truncation


@pytest.mark.parametrize("freeze", ["none", "all"])  # "all": cached encoder features, the recurrent part alone
@pytest.mark.slow
def test_chunks_longer_than_the_clips_train_exactly_as_full_bptt(recipe: Path, tmp_path: Path, freeze: str,
                                                                  calls: list) -> None:
    sets = [f"model.freeze={freeze}"]
    normal = fit(str(recipe), overrides=sets, out=tmp_path / "normal", verbose=False)
    assert calls == []
    chunked = fit(str(recipe), overrides=[*sets, "trainer.tbptt_steps=50"], out=tmp_path / "chunked", verbose=False)
    a = load_weights(normal.run_dir / "checkpoints" / "best.safetensors").state_dict()
    b = load_weights(chunked.run_dir / "checkpoints" / "best.safetensors").state_dict()
    assert len(calls) == 3 and all(chunks == backward == 1 for _, _, chunks, backward in calls)  # TBPTT ran
    assert a.keys() == b.keys()
    # Equal up to float rounding, not bit for bit: the full-length path runs the fused LSTM kernel on the padded
    # batch (cnnlstm.layers.padded_lstm), a chunk packs (it needs the cell state at each clip's end).
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert normal.metrics[key] == pytest.approx(chunked.metrics[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("sets, match", [
    (["model.bidirectional=true"], "bidirectional=false"),
    (["model.pooling=mean"], "pooling='last'"),
    (["trainer.accumulate_grad_batches=2"], "accumulate_grad_batches=1"),
    (["trainer.tbptt_steps=0"], ">= 1"),
    (["optim.swa={lr: 0.001}"], "optim.swa"),
])
def test_settings_tbptt_cannot_honour_exit_2(recipe: Path, tmp_path: Path, capsys, sets: list[str],
                                             match: str) -> None:
    args = ["fit", "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--set", "trainer.tbptt_steps=2", *sets]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_series_model_is_refused_naming_the_models_that_can(tmp_path: Path, capsys) -> None:
    args = ["fit", "--recipe", "basic_motions", "--out", str(tmp_path / "run"), "--set", "trainer.tbptt_steps=2",
            "trainer.accelerator=cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lstm_fcn cannot train with truncated BPTT" in err and "frame_lstm" in err


def test_other_tasks_and_the_pretrain_stage_are_refused() -> None:
    from cnnlstm.models import create_model
    from cnnlstm.tasks import build_task

    model = create_model("frame_lstm", num_classes=3, in_channels=1, hidden_size=4, encoder_kwargs={"widths": (4,)})
    with pytest.raises(ConfigError, match="classification only"):
        build_task("forecasting", model, DataInfo(), tbptt_steps=2)
    config = apply_overrides(load_recipe("digit_sequences"), ["pretrain.trainer.tbptt_steps=2"])
    with pytest.raises(ConfigError, match="pretrain.trainer.tbptt_steps"):
        validate_recipe(config)
    assert resolve_config({"data": {"spec": "x"}, "model": {"name": "frame_lstm"},
                           "trainer": {"tbptt_steps": None}})["trainer"]["tbptt_steps"] is None


def test_a_nan_chunk_loss_stops_training_before_its_backward(recipe: Path, tmp_path: Path, monkeypatch) -> None:
    from cnnlstm.tasks import TrainingDivergedError
    from cnnlstm.tasks.tbptt_classification import TBPTTClassificationTask

    original = TBPTTClassificationTask.tbptt_loss
    backwards = []

    def nan_in_epoch_2(self, out, state, batch, chunk):
        loss = original(self, out, state, batch, chunk)
        return loss * float("nan") if loss is not None and self.current_epoch >= 1 else loss

    monkeypatch.setattr(TBPTTClassificationTask, "tbptt_loss", nan_in_epoch_2)
    monkeypatch.setattr(TBPTTClassificationTask, "manual_backward", lambda self, loss: backwards.append(
        bool(torch.isfinite(loss))) or loss.backward())
    with pytest.raises(TrainingDivergedError, match=r"epoch 2.*nan"):
        fit(str(recipe), overrides=["trainer.tbptt_steps=2", "trainer.max_epochs=2"], out=tmp_path / "run",
            verbose=False)
    assert backwards == [True, True, True]  # epoch 1's three batches; the NaN never reached a backward
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
