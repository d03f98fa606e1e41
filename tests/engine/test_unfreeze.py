"""optim.unfreeze_at_epoch: the encoder stays fixed for K epochs, then the stages model.freeze names train."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from user_images import random_clips  # noqa: E402

from cnnlstm.engine import fit
from cnnlstm.engine.unfreeze import unfreeze_callback
from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model
from cnnlstm.models.cached_features import CachedFeaturesModel
from cnnlstm.tasks.base import OptimConfig


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_clips(tmp_path_factory.mktemp("clips"), clips=6, frames=3)


def _recipe(clips: Path, tmp_path: Path, *, feature_cache: bool | str = "auto") -> str:
    recipe = {
        "name": "unfreeze", "seed": 0,
        "data": {"spec": f"frames:{clips}", "batch_size": 4, "val_fraction": 0.25, "feature_cache": feature_cache,
                 "options": {"num_frames": 3, "size": 16, "test_fraction": 0.25}},
        "model": {"name": "frame_lstm", "encoder": "cnn", "encoder_kwargs": {"widths": [4, 8]}, "hidden_size": 4,
                  "freeze": 1},
        "optim": {"lr": 0.05, "encoder_lr": 0.05, "unfreeze_at_epoch": 2},
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "enable_progress_bar": False},
        "early_stopping": {"enabled": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


class _Snapshots(pl.Callback):
    """The encoder's whole state (weights and batch-norm statistics) after each training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.trainable: list[list[bool]] = []
        self.cached: list[bool] = []

    def _state(self, module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.model.encoder.state_dict().items()}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append(self._state(pl_module))
        self.cached.append(isinstance(pl_module.model, CachedFeaturesModel))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append(self._state(pl_module))
        self.trainable.append([p.requires_grad for p in pl_module.model.encoder.parameters()])


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if k.startswith(prefix))


def test_encoder_is_fixed_before_epoch_k_and_its_last_stage_trains_after(clips: Path, tmp_path: Path) -> None:
    snaps = _Snapshots()
    fit(_recipe(clips, tmp_path), out=tmp_path / "run", verbose=False, callbacks=[snaps], test=False)
    assert snaps.cached == [False]  # the encoder will train: frames go through it, not a feature cache
    start, epoch1, epoch2, epoch3 = snaps.states
    assert not _changed(start, epoch1) and not _changed(start, epoch2)  # weights and BN statistics untouched
    assert snaps.trainable[0] == snaps.trainable[1] == [False] * len(snaps.trainable[0])
    assert _changed(epoch2, epoch3)  # epoch 3 trains the encoder's last stage (model.freeze: 1)
    assert any(snaps.trainable[2]) and not all(snaps.trainable[2])
    encoder = create_model("frame_lstm", num_classes=2, encoder_kwargs={"widths": (4, 8)}).encoder
    names = {id(m): n for n, m in encoder.named_modules()}
    last = tuple(f"{names[id(m)]}." for m in encoder.stage_modules()[-1])  # state_dict prefixes of the last stage
    changed = {k for k in epoch2 if not torch.equal(epoch2[k], epoch3[k])}
    assert changed and all(k.startswith(last) for k in changed)  # earlier stages stay frozen when fine-tuning


def test_feature_cache_is_refused_or_skipped_and_misuse_is_an_error(clips: Path, tmp_path: Path) -> None:
    recipe = _recipe(clips, tmp_path, feature_cache=True)
    with pytest.raises(ConfigError, match="unfreeze_at_epoch: 2 trains the encoder") as err:
        fit(recipe, out=tmp_path / "cached", verbose=False, test=False)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="never trains"):
        unfreeze_callback(create_model("frame_lstm", num_classes=2, freeze="all"), 2)
    with pytest.raises(ConfigError, match="no encoder"):
        unfreeze_callback(torch.nn.Linear(2, 2), 2)
    assert unfreeze_callback(create_model("frame_lstm", num_classes=2, freeze=1), None) is None
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="unfreeze_at_epoch must be"):
            OptimConfig(unfreeze_at_epoch=bad)


def test_the_state_follows_the_epoch_counter_so_a_resumed_run_gets_the_right_phase() -> None:
    from types import SimpleNamespace

    model = create_model("frame_lstm", num_classes=2, encoder_kwargs={"widths": (4, 8)}, hidden_size=4, freeze=1)
    encoder = model.encoder
    trained_then = [p.requires_grad for p in encoder.parameters()]  # model.freeze: 1, the unfrozen phase
    callback = unfreeze_callback(model, 2)
    model.train()
    for epoch, frozen in ((3, False), (0, True), (2, False), (1, True)):  # any order: a resume starts anywhere
        callback.on_train_epoch_start(SimpleNamespace(current_epoch=epoch), None)
        grads = [p.requires_grad for p in encoder.parameters()]
        assert grads == ([False] * len(grads) if frozen else trained_then)
        batch_norms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert all(not m.training for m in batch_norms) if frozen else any(m.training for m in batch_norms)
