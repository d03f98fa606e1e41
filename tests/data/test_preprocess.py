"""A pretrained encoder's mean/std: applied to frames by the pipeline, recorded in the run, used again by predict."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from user_images import random_clips

from cnnlstm.data import DataInfo, load_dataset
from cnnlstm.data.preprocess import apply_encoder_preprocessing, encoder_normalization, recorded_normalization
from cnnlstm.encoders import build_encoder, save_encoder
from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model

MEAN, STD = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_clips(tmp_path_factory.mktemp("clips"), labels=("left", "right"), clips=4, frames=3)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    enc = build_encoder("cnn", widths=(4, 8))
    enc.pretrained_config = {**enc.pretrained_config, "mean": MEAN, "std": STD}  # what "its" training used
    return save_encoder(enc, tmp_path_factory.mktemp("enc") / "enc.safetensors")


@pytest.fixture(scope="module")
def bicubic_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights whose config names a resize filter, as timm's pretrained_cfg does (bicubic for most models)."""
    enc = build_encoder("cnn", widths=(4, 8))
    enc.pretrained_config = {**enc.pretrained_config, "mean": MEAN, "std": STD, "interpolation": "bicubic"}
    return save_encoder(enc, tmp_path_factory.mktemp("enc") / "enc.safetensors")


def _resized(clip: Path, filter_: Image.Resampling, size: int = 8) -> torch.Tensor:
    """A clip's frames resized by PIL directly and scaled to [0, 1]: (T, C, H, W)."""
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p).resize((size, size), filter_), dtype=np.float32)
                                         / 255).permute(2, 0, 1) for p in sorted(clip.iterdir())])


def _model(weights: Path | bool) -> torch.nn.Module:
    return create_model("frame_lstm", num_classes=2, encoder_kwargs={"widths": (4, 8)}, hidden_size=4,
                        pretrained=str(weights) if weights else False, freeze="all")


def test_pretrained_encoder_mean_std_is_applied_to_every_split_and_recorded(clips: Path, weights: Path) -> None:
    bundle = load_dataset(f"frames:{clips}", num_frames=3, test_fraction=0.5)
    model = _model(weights)
    assert encoder_normalization(model)["mean"] == pytest.approx(MEAN)
    out = apply_encoder_preprocessing(bundle, model)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for raw, normed in ((bundle.train, out.train), (bundle.test, out.test),
                        (bundle.train.without_augmentation(), out.train.without_augmentation())):
        torch.testing.assert_close(normed[1]["x"], (raw[1]["x"] - mean) / std)
        assert normed[1]["y"] == raw[1]["y"]
    assert out.train.targets == bundle.train.targets and len(out.train) == len(bundle.train)
    recorded = out.info.normalization
    assert recorded["mean"] == pytest.approx(MEAN) and "encoder 'cnn'" in recorded["source"]
    replayed = DataInfo.from_dict(json.loads(json.dumps(out.info.to_dict())))  # as data_info.json holds it
    assert recorded_normalization(replayed)["std"] == pytest.approx(STD)


def test_untrained_encoder_or_series_data_are_left_alone(clips: Path) -> None:
    bundle = load_dataset(f"frames:{clips}", num_frames=3, test_fraction=0.5)
    assert apply_encoder_preprocessing(bundle, _model(False)) is bundle
    assert recorded_normalization(bundle.info) is None  # given by nobody: nothing to replay


def test_given_mean_std_win_and_a_disagreement_is_one_warning_line(clips: Path, weights: Path, caplog) -> None:
    model = _model(weights)
    agreeing = load_dataset(f"frames:{clips}", num_frames=3, test_fraction=0.5, mean=list(MEAN), std=list(STD))
    with caplog.at_level(logging.WARNING, logger="cnnlstm.data.preprocess"):
        assert apply_encoder_preprocessing(agreeing, model) is agreeing
    assert not caplog.records
    given = load_dataset(f"frames:{clips}", num_frames=3, test_fraction=0.5, mean=0.5, std=0.25)
    with caplog.at_level(logging.WARNING, logger="cnnlstm.data.preprocess"):
        assert apply_encoder_preprocessing(given, model) is given  # the user's values are used as given
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "differ" in record.getMessage()


def test_encoder_interpolation_resizes_every_split_and_is_recorded(clips: Path, bicubic_weights: Path,
                                                                  caplog) -> None:
    model = _model(bicubic_weights)
    assert encoder_normalization(model)["interpolation"] == "bicubic"
    bundle = load_dataset(f"frames:{clips}", num_frames=3, size=8, test_fraction=0.5)
    out = apply_encoder_preprocessing(bundle, model)
    assert out.info.normalization["interpolation"] == "bicubic"
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    for split in (out.train, out.test, out.train.without_augmentation()):
        clip = Path(split.clips[1].path)
        torch.testing.assert_close(split[1]["x"], (_resized(clip, Image.Resampling.BICUBIC) - mean) / std)
        assert not torch.allclose(split[1]["x"], (_resized(clip, Image.Resampling.BILINEAR) - mean) / std)
    # given mean/std stay as given; the encoder's filter still applies, and is recorded with them
    given = load_dataset(f"frames:{clips}", num_frames=3, size=8, test_fraction=0.5, mean=list(MEAN), std=list(STD))
    out = apply_encoder_preprocessing(given, model)
    assert out.train.interpolation == "bicubic" and out.info.normalization["mean"] == pytest.approx(MEAN)
    torch.testing.assert_close(out.train[1]["x"], (_resized(Path(out.train.clips[1].path),
                                                            Image.Resampling.BICUBIC) - mean) / std)
    # a filter given in the data options wins, with one warning line
    chosen = load_dataset(f"frames:{clips}", num_frames=3, size=8, test_fraction=0.5, interpolation="bilinear")
    with caplog.at_level(logging.WARNING, logger="cnnlstm.data.preprocess"):
        out = apply_encoder_preprocessing(chosen, model)
    assert out.train.dataset.interpolation == "bilinear" and out.info.normalization["interpolation"] == "bilinear"
    (record,) = caplog.records
    assert "\n" not in record.getMessage() and "interpolation=bilinear" in record.getMessage()
    with pytest.raises(ConfigError, match="interpolation must be one of"):
        load_dataset(f"frames:{clips}", num_frames=3, interpolation="cubic")


@pytest.mark.slow
def test_fit_records_the_encoders_mean_std_and_predict_and_test_apply_it(clips: Path, bicubic_weights: Path,
                                                                         tmp_path: Path) -> None:
    from cnnlstm.engine import evaluate_run, fit
    from cnnlstm.engine.fit import rebuild_run
    from cnnlstm.engine.predict import predict
    from cnnlstm.engine.rundir import load_weights, weights_path

    recipe = {"seed": 0, "data": {"spec": f"frames:{clips}", "val_fraction": 0.5, "batch_size": 4,
                                  "options": {"num_frames": 3, "size": 8, "test_fraction": 0.5},
                                  "feature_cache": False},
              "model": {"name": "frame_lstm", "encoder_kwargs": {"widths": [4, 8]}, "hidden_size": 4,
                        "pretrained": str(bicubic_weights), "freeze": "all"},
              "optim": {"lr": 0.01}, "trainer": {"max_epochs": 1, "enable_progress_bar": False}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML; a file gets the recipe defaults merged in
    result = fit(str(path), out=tmp_path / "run", verbose=False)
    info = json.loads((result.run_dir / "data_info.json").read_text())
    assert info["normalization"]["mean"] == pytest.approx(MEAN) and info["normalization"]["interpolation"] == "bicubic"
    assert rebuild_run(result.run_dir)[1].train.interpolation == "bicubic"  # the run alone replays the filter
    # `cnnlstm test` rebuilds the data from the run alone and scores the same as fit's own test.
    assert evaluate_run(result.run_dir).metrics["test/acc"] == pytest.approx(result.metrics["test/acc"])
    clip = clips / "left" / "clip0"
    (prediction,) = predict(result.run_dir, [str(clip)])
    frames = _resized(clip, Image.Resampling.BICUBIC)  # (T, C, 8, 8) in [0, 1], resized as the encoder wants
    normed = (frames - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    with torch.no_grad():
        probs = torch.softmax(load_weights(weights_path(result.run_dir))(normed[None]), dim=1)[0]
    assert prediction["probability"] == pytest.approx(float(probs.max()), abs=1e-5)


def test_vqa_and_captions_images_are_normalised_for_a_pretrained_encoder(tmp_path: Path, weights: Path) -> None:
    from user_images import make_captions, make_vqa

    for spec, key, model in (
        (f"vqa:{make_vqa(tmp_path / 'vqa')}", "image",
         create_model("multi_input", num_classes=2, vocab_size=8, encoder_kwargs={"widths": (4, 8)},
                      pretrained=str(weights), freeze="all")),
        (f"captions:{make_captions(tmp_path / 'cap')}", "images",
         create_model("captioner", vocab_size=8, encoder_kwargs={"widths": (4, 8)}, pretrained=str(weights),
                      freeze="all")),
    ):
        bundle = load_dataset(spec)
        out = apply_encoder_preprocessing(bundle, model)
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        for raw, normed in ((bundle.train, out.train), (bundle.test, out.test)):
            torch.testing.assert_close(normed[0][key], (raw[0][key] - mean) / std)
        assert out.info.normalization["mean"] == pytest.approx(MEAN), spec


@pytest.mark.slow
def test_a_vqa_run_with_a_pretrained_encoder_predicts_on_normalised_images(tmp_path: Path, weights: Path) -> None:
    from user_images import make_vqa

    from cnnlstm.data.builtin._vocab import Vocabulary
    from cnnlstm.data.manifest import read_image_array
    from cnnlstm.data.vqa import tokenize
    from cnnlstm.engine import fit
    from cnnlstm.engine.predict import predict
    from cnnlstm.engine.rundir import load_weights, weights_path

    root = make_vqa(tmp_path / "vqa")
    recipe = {"seed": 0, "data": {"spec": f"vqa:{root}", "val_fraction": 0.25, "batch_size": 4},
              "model": {"name": "multi_input", "encoder_kwargs": {"widths": [4, 8]}, "hidden_size": 4,
                        "embedding_dim": 4, "pretrained": str(weights), "freeze": "all", "fusion": "film",
                        "feature_stage": 0},
              "optim": {"lr": 0.01}, "trainer": {"max_epochs": 1, "enable_progress_bar": False}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    result = fit(str(path), out=tmp_path / "run", verbose=False)
    info = json.loads((result.run_dir / "data_info.json").read_text())
    assert info["normalization"]["mean"] == pytest.approx(MEAN)
    (prediction,) = predict(result.run_dir, [str(root / "test.csv")])[:1]
    image_name, question = (root / "test.csv").read_text().splitlines()[1].split(",")[:2]
    size = tuple(info["image_size"]) if info.get("image_size") else None
    image = torch.from_numpy(read_image_array(root / image_name, 3, size, "")).float() / 255  # (C, H, W)
    normed = (image - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    ids = Vocabulary.from_itos(info["vocab"]).encode(tokenize(question))
    with torch.no_grad():
        probs = torch.softmax(load_weights(weights_path(result.run_dir))(normed[None], ids[None]), dim=1)[0]
    assert prediction["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
