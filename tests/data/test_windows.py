"""Sliding windows against hand-computed and loop references; windows: source keeps splits and recordings apart."""

from collections import Counter

import numpy as np
import pytest
import torch

from cnnlstm.data import load_dataset, sliding_windows
from cnnlstm.errors import ConfigError, DataError

LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 0, 0])


def test_hand_computed_example():
    signals = torch.arange(10.0)[:, None]  # (10, 1), value = step index
    w, last = sliding_windows(signals, LABELS, window=4, step=3, policy="last")
    assert w[:, :, 0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert last.tolist() == [1, 2, 0]  # labels at steps 3, 6, 9
    assert sliding_windows(signals, LABELS, window=4, step=3, policy="center")[1].tolist() == [1, 2, 0]  # steps 2, 5, 8
    # [0,0,1,1] and [1,1,2,2] tie: the smaller id wins; [2,0,0,0] -> 0
    assert sliding_windows(signals, LABELS, window=4, step=3, policy="majority")[1].tolist() == [0, 1, 0]


@pytest.mark.parametrize("policy", ["last", "majority", "center"])
def test_matches_a_per_window_loop(policy):
    rng = np.random.default_rng(0)
    signals, labels = rng.normal(size=(53, 3)), rng.integers(0, 4, size=53)
    windows, ids = sliding_windows(signals, labels, window=7, step=5, policy=policy)
    starts = range(0, 53 - 7 + 1, 5)
    ref_w = np.stack([signals[s : s + 7] for s in starts])
    pick = {
        "last": lambda seg: seg[-1],
        "center": lambda seg: seg[len(seg) // 2],
        "majority": lambda seg: min(c for c, n in Counter(seg.tolist()).items()
                                    if n == max(Counter(seg.tolist()).values())),
    }[policy]
    np.testing.assert_array_equal(windows.numpy(), ref_w)
    assert ids.tolist() == [pick(labels[s : s + 7]) for s in starts]


def test_short_stream_and_bad_arguments():
    w, y = sliding_windows(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), window=4, step=1)
    assert w.shape == (0, 4, 2) and y.shape == (0,)
    assert sliding_windows(torch.zeros(5), window=2, step=2)[0].shape == (2, 2, 1)  # (N,) is one channel
    with pytest.raises(ConfigError, match="positive integers"):
        sliding_windows(torch.zeros(5, 1), window=0, step=1)
    with pytest.raises(ConfigError, match="label policy"):
        sliding_windows(torch.zeros(5, 1), LABELS[:5], window=2, step=1, policy="first")
    with pytest.raises(DataError, match="one integer label per step"):
        sliding_windows(torch.zeros(5, 1), torch.zeros(4, dtype=torch.long), window=2, step=1)


def stream_file(tmp_path, n=100, **extra):
    signals = np.stack([np.arange(n), np.sin(np.arange(n))], axis=1).astype(np.float32)  # channel 0 = step
    labels = np.array(["walk", "sit", "stand", "walk"] * (n // 4))
    np.savez(tmp_path / "s.npz", signals=signals, labels=labels, **extra)
    return f"windows:{tmp_path / 's.npz'}", signals, labels


def steps_of(dataset):
    return [dataset[i]["x"][:, 0].long().tolist() for i in range(len(dataset))]


def test_chronological_split_never_straddles(tmp_path):
    spec, _, labels = stream_file(tmp_path)
    bundle = load_dataset(spec, window=8, step=3, test_fraction=0.25)
    train, test = steps_of(bundle.train), steps_of(bundle.test)
    assert max(max(s) for s in train) < 75 <= min(min(s) for s in test)
    assert train[0] == list(range(8)) and test[0] == list(range(75, 83))  # test windows start at the cut
    assert bundle.info.class_names == ["sit", "stand", "walk"]
    assert bundle.info.model_kwargs == {"num_classes": 3, "in_channels": 2}
    assert bundle.train[0]["y"].item() == ["sit", "stand", "walk"].index(labels[7])  # last step's label


def test_groups_keep_windows_inside_one_recording(tmp_path):
    groups = np.repeat([0, 1, 2], [30, 45, 25])
    spec, _, _ = stream_file(tmp_path, groups=groups)
    bundle = load_dataset(spec, window=10, step=4, test_fraction=0.25)
    for steps in steps_of(bundle.train) + steps_of(bundle.test):
        assert len(set(groups[steps])) == 1
    assert steps_of(bundle.train)[6] == list(range(30, 40))  # recording 0 gives 6 windows; 1 starts afresh
    batch = bundle.collate_fn([bundle.train[i] for i in range(len(bundle.train))])
    assert batch["x"].shape == (len(bundle.train), 10, 2) and "lengths" not in batch


def test_test_stream_and_channel_normalization(tmp_path):
    rng = np.random.default_rng(1)
    train, test = rng.normal(3, 2, size=(60, 2)), rng.normal(size=(20, 2))
    np.savez(tmp_path / "s.npz", signals=train, labels=[0, 1] * 30, test_signals=test, test_labels=[1, 0] * 10)
    bundle = load_dataset(f"windows:{tmp_path / 's.npz'}", window=5, step=5, normalize="channel")
    assert len(bundle.train) == 12 and len(bundle.test) == 4
    np.testing.assert_allclose(bundle.test[1]["x"].numpy(), (test[5:10] - train.mean(0)) / train.std(0), rtol=1e-5)
    with pytest.raises(ConfigError, match="drop test_fraction"):
        load_dataset(f"windows:{tmp_path / 's.npz'}", test_fraction=0.2)


def test_stream_errors(tmp_path):
    spec, signals, labels = stream_file(tmp_path)
    signals[17, 1] = np.nan
    np.savez(tmp_path / "s.npz", signals=signals, labels=labels)
    with pytest.raises(DataError, match="1 NaN/inf values in 1 step.*step 17, channel 1"):
        load_dataset(spec)
    np.savez(tmp_path / "s.npz", signals=signals[:10], labels=labels[:9])
    with pytest.raises(DataError, match="10 samples but 9 labels"):
        load_dataset(spec)
    np.savez(tmp_path / "s.npz", signals=signals, labels=labels, test_signals=signals)
    with pytest.raises(DataError, match="optionally test_signals and test_labels"):
        load_dataset(spec)
    spec, _, _ = stream_file(tmp_path)
    with pytest.raises(DataError, match="as long as window=30"):
        load_dataset(spec, window=30, test_fraction=0.2)


def _steps_of(signals: np.ndarray, window_values: torch.Tensor) -> set[int]:
    return {int(v) for v in window_values[:, 0].tolist()}  # channel 0 holds the global step index


@pytest.mark.parametrize("groups", [None, np.repeat([0, 1, 2], [800, 700, 500])])
def test_validation_takes_whole_stretches_so_it_shares_no_steps_with_training_beyond_their_edges(tmp_path, groups):
    # Overlapping windows (step 5 < window 20) share steps: a per-window validation split would let training
    # see most of every validation window. The windows: source names stretches of time as groups instead.
    from cnnlstm.data.splits import split_train_val

    n = 2000
    signals = np.stack([np.arange(n), np.sin(np.arange(n) / 7.0)], axis=1).astype(np.float32)  # step index, signal
    labels = (np.arange(n) // 40) % 3
    arrays = {"signals": signals, "labels": labels, "test_signals": signals[:60], "test_labels": labels[:60]}
    if groups is not None:
        arrays["groups"] = groups
    np.savez(tmp_path / "rec.npz", **arrays)
    bundle = load_dataset(f"windows:{tmp_path / 'rec.npz'}", window=20, step=5)
    assert len(bundle.info.groups) == len(bundle.train)
    train, val = split_train_val(bundle.train, 0.2, seed=0, groups=bundle.info.groups)
    train_steps = set().union(*(_steps_of(signals, bundle.train[i]["x"]) for i in train.indices))
    val_windows = [_steps_of(signals, bundle.train[i]["x"]) for i in val.indices]
    shared = [w for w in val_windows if w & train_steps]
    val_ids = sorted(set(np.asarray(bundle.info.groups)[val.indices].tolist()))
    # only windows at a stretch's two edges touch training: ceil(20 / 5) - 1 = 3 per edge
    assert len(val) > 0 and len(shared) <= 2 * 3 * len(val_ids)
    assert len(shared) < len(val_windows) / 2
    # the reference the split replaces: the same share of single windows drawn at random shares far more
    rng = np.random.default_rng(0)
    pick = rng.choice(len(bundle.train), size=len(val), replace=False)
    rest = set().union(*(_steps_of(signals, bundle.train[i]["x"]) for i in set(range(len(bundle.train))) - set(pick)))
    assert sum(bool(_steps_of(signals, bundle.train[i]["x"]) & rest) for i in pick) > 0.9 * len(pick)
    if groups is not None:  # no stretch spans two recordings
        first_step = np.array([int(bundle.train[i]["x"][0, 0]) for i in range(len(bundle.train))])
        recording = groups[first_step]
        for g in set(bundle.info.groups):
            assert len(set(recording[np.asarray(bundle.info.groups) == g])) == 1
