"""Feature cache: cached training gives the full model's logits; the key tracks weights, pipeline and data;
unchanged setups compute nothing; shards are memory-mapped; interrupted writes leave no valid cache."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from user_images import random_clips

from cnnlstm.data import load_dataset, pad_collate
from cnnlstm.data.feature_cache import FeatureCache
from cnnlstm.engine.feature_cache import cache_problem, use_feature_cache
from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model
from cnnlstm.models.cached_features import CachedFeaturesModel, FrameFeatures

IDENTITY = {"spec": "builtin:digit_sequences", "options": {"n_train": 6}, "seed": 0}


def frame_model(in_channels: int = 1, freeze: str = "all") -> torch.nn.Module:
    return create_model("frame_lstm", num_classes=4, in_channels=in_channels, encoder_kwargs={"widths": (8, 16)},
                        hidden_size=8, freeze=freeze, pooling="mean")


def count_frames(model: torch.nn.Module) -> list[int]:
    """A one-element list holding how many frames the encoder has encoded so far."""
    seen = [0]
    model.encoder.register_forward_hook(lambda module, args, out: seen.__setitem__(0, seen[0] + len(args[0])))
    return seen


@pytest.fixture(scope="module")
def digits():
    # Ragged lengths 2..4, so padding, lengths and row offsets all matter.
    return load_dataset("builtin:digit_sequences", n_train=6, n_test=4, min_length=2, max_length=4)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_clips(tmp_path_factory.mktemp("clips"), labels=("jump", "wave"), clips=3, frames=5)


def test_cached_training_path_gives_the_full_models_logits(digits, tmp_path: Path) -> None:
    model = frame_model().eval()
    bundle, fast = use_feature_cache(digits, model, mode=True, identity=IDENTITY, root=tmp_path)
    assert isinstance(fast, CachedFeaturesModel) and fast.model is model
    frames = pad_collate([digits.train[i] for i in range(6)])
    cached = pad_collate([bundle.train[i] for i in range(6)])
    assert torch.equal(cached["lengths"], frames["lengths"]) and torch.equal(cached["y"], frames["y"])
    assert cached["x"].shape == (6, frames["x"].shape[1], model.encoder.out_features)
    expected = model(frames["x"], frames["lengths"])  # (B, K) from frames, encoder included
    torch.testing.assert_close(fast(cached["x"], cached["lengths"]), expected, atol=1e-5, rtol=0)
    # The wrapper trains only the recurrent part: the frozen encoder gets no gradient, the LSTM does.
    fast.train()
    torch.nn.functional.cross_entropy(fast(cached["x"], cached["lengths"]), cached["y"]).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.rnn.parameters())


def test_unchanged_setup_computes_nothing_the_second_time(digits, tmp_path: Path) -> None:
    model = frame_model()
    seen = count_frames(model)
    rng = torch.get_rng_state()
    first = FeatureCache(tmp_path).get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY)
    assert torch.equal(torch.get_rng_state(), rng)  # building leaves the run's random stream where it was
    assert seen[0] == int(digits.train.fields["x"].lengths.sum())  # every valid frame once, no padding
    again = FeatureCache(tmp_path).get_or_build(FrameFeatures(frame_model_copy(model)), digits.train, identity=IDENTITY)
    assert seen[0] == int(digits.train.fields["x"].lengths.sum())  # 0 further encoder calls
    assert again.path == first.path and len(again) == len(digits.train)


def frame_model_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A freshly built model with the same weights: the key must not depend on object identity."""
    twin = frame_model()
    twin.load_state_dict(model.state_dict())
    return twin


def test_changing_encoder_weights_changes_the_key_and_recomputes(digits, tmp_path: Path) -> None:
    model = frame_model()
    cache = FeatureCache(tmp_path)
    before = cache.get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY)
    with torch.no_grad():
        model.encoder.stages[0].conv.weight[0, 0, 0, 0] += 0.5  # one weight of the first conv
    seen = count_frames(model)
    after = cache.get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY)
    assert after.path != before.path and seen[0] > 0
    assert not torch.equal(after[0]["x"], before[0]["x"])
    # The data identity is part of the key too: another seed or split is another cache.
    other = cache.get_or_build(FrameFeatures(model), digits.train, identity={**IDENTITY, "seed": 1})
    assert other.path not in (before.path, after.path)


@pytest.mark.parametrize("change", [{"size": 12}, {"num_frames": 4}, {"mean": 0.5, "std": 0.25}])
def test_changing_frame_size_sampling_or_normalisation_recomputes(clips_dir: Path, tmp_path: Path,
                                                                  change: dict) -> None:
    base = {"size": 16, "num_frames": 3}
    model = frame_model(in_channels=3)
    seen = count_frames(model)
    cache = FeatureCache(tmp_path)
    spec = f"frames:{clips_dir}"
    first = cache.get_or_build(FrameFeatures(model), load_dataset(spec, **base).train, identity={"spec": spec})
    assert seen[0] == 4 * 3  # 4 training clips x 3 frames
    changed = load_dataset(spec, **{**base, **change}).train
    # The identity says nothing about the change: the pipeline read from the dataset must catch it.
    second = cache.get_or_build(FrameFeatures(model), changed, identity={"spec": spec})
    assert second.path != first.path
    assert seen[0] == 2 * 4 * 3 if "num_frames" not in change else seen[0] == 4 * 3 + 4 * 4
    assert len(second[0]["x"]) == change.get("num_frames", 3)
    cache.get_or_build(FrameFeatures(model), changed, identity={"spec": spec})
    assert seen[0] == (24 if "num_frames" not in change else 28)  # the changed setup is now cached too


def test_a_subset_is_keyed_by_its_indices(digits, tmp_path: Path) -> None:
    model = frame_model()
    cache = FeatureCache(tmp_path)
    a = cache.get_or_build(FrameFeatures(model), torch.utils.data.Subset(digits.train, [0, 2, 4]), identity=IDENTITY)
    b = cache.get_or_build(FrameFeatures(model), torch.utils.data.Subset(digits.train, [1, 2, 4]), identity=IDENTITY)
    assert a.path != b.path
    assert torch.equal(b[0]["x"], cache.get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY)[1]["x"])


def test_shards_are_memory_mapped_and_never_pickled(digits, tmp_path: Path) -> None:
    model = frame_model()
    ds = FeatureCache(tmp_path, shard_bytes=200).get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY)
    assert len(ds.shards) > 1  # tiny shards: samples spread over several files
    assert all(isinstance(shard, np.memmap) for shard in ds.shards)
    assert sum(len(s) for s in ds.shards) == int(ds.lengths.sum())  # no padding stored
    # Every sample reads back its own rows, whichever shard they live in.
    full = model.forward_sequence_features(*(lambda b: (b["x"], b["lengths"]))(
        pad_collate([digits.train[i] for i in range(6)])))
    for i in range(6):
        length = int(ds.lengths[i])
        torch.testing.assert_close(ds[i]["x"], full[i, :length], atol=1e-6, rtol=0)
    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives
    assert len(pickle.dumps(ds)) < 10_000 and clone._arrays is None
    assert torch.equal(clone[3]["x"], ds[3]["x"])


def test_an_interrupted_write_leaves_no_valid_looking_cache(digits, tmp_path: Path, monkeypatch) -> None:
    model = frame_model()
    cache = FeatureCache(tmp_path, shard_bytes=200)
    key = cache.key(FrameFeatures(model), digits.train, IDENTITY)
    real = model.forward_sequence_features
    calls = [0]

    def dies_on_the_second_batch(x, lengths=None):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt  # Ctrl-C mid-build, after the first shards were written
        return real(x, lengths)

    monkeypatch.setattr(model, "forward_sequence_features", dies_on_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY, batch_size=2)
    assert cache.load(key) is None and list(tmp_path.iterdir()) == []  # temp dir removed, nothing published
    # A writer killed outright (no cleanup) and a partial directory under the key are both ignored.
    (tmp_path / f".tmp-{key}-dead").mkdir()
    (tmp_path / key).mkdir()
    np.save(tmp_path / key / "feats-00000.npy", np.zeros((2, 16), np.float32))
    assert cache.load(key) is None
    monkeypatch.setattr(model, "forward_sequence_features", real)
    rebuilt = cache.get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY, batch_size=2)
    assert rebuilt.path == tmp_path / key and len(rebuilt) == 6


def test_random_sampling_or_a_trainable_encoder_cannot_be_cached(clips_dir: Path, tmp_path: Path, caplog) -> None:
    spec = f"frames:{clips_dir}"
    random = load_dataset(spec, size=16, num_frames=3, sampling="random")
    model = frame_model(in_channels=3)
    with pytest.raises(ConfigError, match="random frame sampling"):
        use_feature_cache(random, model, mode=True, identity={"spec": spec}, root=tmp_path)
    with caplog.at_level(logging.INFO, logger="cnnlstm.engine.feature_cache"):
        bundle, same = use_feature_cache(random, model, mode="auto", identity={"spec": spec}, root=tmp_path)
    assert bundle is random and same is model and "random frame sampling" in caplog.text
    uniform = load_dataset(spec, size=16, num_frames=3)
    trainable = frame_model(in_channels=3, freeze="none")
    assert "trainable" in cache_problem(trainable)
    with pytest.raises(ConfigError, match="trainable"):
        use_feature_cache(uniform, trainable, mode=True, identity={"spec": spec}, root=tmp_path)
    # feature_cache: false is end-to-end training even when caching would be valid.
    assert use_feature_cache(uniform, model, mode=False, identity={"spec": spec}, root=tmp_path)[1] is model
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="true, false or auto"):
        use_feature_cache(uniform, model, mode="sometimes", identity={"spec": spec}, root=tmp_path)


def test_prune_keeps_only_the_named_caches(digits, tmp_path: Path) -> None:
    model = frame_model()
    cache = FeatureCache(tmp_path)
    old = cache.get_or_build(FrameFeatures(model), digits.train, identity=IDENTITY)
    new = cache.get_or_build(FrameFeatures(model), digits.test, identity={**IDENTITY, "split": "test"})
    (tmp_path / "notes").mkdir()  # not a cache: left alone
    assert cache.prune(keep=[new.path.name]) == [old.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([new.path.name, "notes"])


def test_grid_features_cache_as_flat_rows_and_float16_halves_the_bytes(digits, tmp_path: Path) -> None:
    model = create_model("frame_lstm", num_classes=4, in_channels=1, encoder_kwargs={"widths": (8, 16)},
                         hidden_size=8, freeze="all", frame_features="conv_lstm", feature_stage=0, grid_size=4,
                         frame_difference=True).eval()
    frames = pad_collate([digits.train[i] for i in range(6)])
    expected = model(frames["x"], frames["lengths"])
    stored = {}
    for dtype in ("float32", "float16"):
        bundle, fast = use_feature_cache(digits, model, mode=True, identity=IDENTITY, root=tmp_path, dtype=dtype)
        cached = pad_collate([bundle.train[i] for i in range(6)])
        assert cached["x"].dtype == torch.float32 and cached["x"].shape[2] == model.frame_dim == 8 * 4 * 4
        atol = 1e-5 if dtype == "float32" else 2e-2  # half precision rounds each feature (~1e-3 relative)
        torch.testing.assert_close(fast(cached["x"], cached["lengths"]), expected, atol=atol, rtol=0)
        manifest = bundle.train.manifest
        assert manifest["dtype"] == dtype and bundle.train.shards[0].dtype == np.dtype(dtype)
        stored[dtype] = (bundle.train.path, manifest["bytes_per_sample"])
    assert stored["float32"][0] != stored["float16"][0]  # the storage dtype is part of the key
    assert stored["float16"][1] == pytest.approx(stored["float32"][1] / 2, abs=0.1)  # rounded to 0.1 byte
    # One frame's row holds the whole 4x4 grid: a sample's bytes are its frames x D x itemsize.
    lengths = frames["lengths"].float().mean().item()
    assert stored["float32"][1] == pytest.approx(lengths * model.frame_dim * 4, abs=0.1)


@pytest.mark.gpu
def test_with_cuda_the_cache_is_built_there_and_holds_the_cpu_features(digits, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions, to compare with the CPU
    model = frame_model().eval()
    devices = set()
    model.encoder.register_forward_hook(lambda module, args, out: devices.add(args[0].device.type))
    bundle, _ = use_feature_cache(digits, model, mode=True, identity=IDENTITY, root=tmp_path)
    assert devices == {"cuda"} and next(model.parameters()).device.type == "cpu"  # built on the GPU, model back
    frames = pad_collate([digits.train[i] for i in range(6)])
    cached = pad_collate([bundle.train[i] for i in range(6)])
    with torch.no_grad():
        expected = model.forward_sequence_features(frames["x"], frames["lengths"])  # (B, T, D) on the CPU
    for b, length in enumerate(frames["lengths"].tolist()):
        torch.testing.assert_close(cached["x"][b, :length], expected[b, :length], rtol=1e-4, atol=1e-5)
