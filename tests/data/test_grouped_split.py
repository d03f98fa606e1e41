"""Validation carved by group: no group on both sides, seeded, and Sort-of-CLEVR carves whole scenes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from cnnlstm.data import grouped_split, load_dataset, split_train_val
from cnnlstm.engine.data import RecipeData
from cnnlstm.errors import ConfigError, DataError


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=60), st.floats(0.05, 0.95), st.integers(0, 5))
def test_groups_never_straddle_and_the_parts_cover_everything(groups, fraction, seed):
    if len(set(groups)) < 2:
        with pytest.raises(DataError, match="at least 2 groups"):
            grouped_split(groups, fraction, seed)
        return
    a, b = grouped_split(groups, fraction, seed)
    g = np.asarray(groups)
    assert not set(g[a]) & set(g[b])
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(len(groups)))
    n_groups = len(set(groups))
    assert len(set(g[b])) == min(max(int(np.floor(fraction * n_groups + 0.5)), 1), n_groups - 1)
    again = grouped_split(groups, fraction, seed)
    assert np.array_equal(again[0], a) and np.array_equal(again[1], b)


def test_bad_fraction_and_mismatched_groups():
    with pytest.raises(ConfigError):
        grouped_split([0, 1], 1.0, 0)
    ds = TensorDataset(torch.arange(4))
    with pytest.raises(DataError, match="groups has 3 entries"):
        split_train_val(ds, 0.5, 0, groups=[0, 1, 2])


def test_sort_of_clevr_validation_takes_whole_scenes():
    bundle = load_dataset("builtin:sort_of_clevr", n_train=200, n_test=20, image_size=32, object_size=6)
    data = RecipeData(bundle, val_fraction=0.2, batch_size=8)
    scenes = bundle.train.meta["scene_index"].numpy()
    train_scenes = set(scenes[data.train_set.indices])
    val_scenes = set(scenes[data.val_set.indices])
    assert val_scenes and not train_scenes & val_scenes
    assert len(data.train_set) + len(data.val_set) == 200


def test_group_batches_fill_training_batches_with_whole_scenes():
    bundle = load_dataset("builtin:sort_of_clevr", n_train=200, n_test=20, image_size=32, object_size=6)
    data = RecipeData(bundle, val_fraction=0.2, batch_size=20, group_batches=True)
    loader = data._loader(data.train_set, shuffle=True)
    for batch in loader:
        ids = batch["image_id"].tolist()
        assert len(set(ids)) <= len(ids) // 10 + 2  # 10 questions a scene: whole scenes, split at the ends only
        changes = sum(a != b for a, b in zip(ids, ids[1:], strict=False))
        assert changes == len(set(ids)) - 1  # each scene's questions side by side
        assert all(torch.equal(batch["image"][i], batch["image"][ids.index(s)]) for i, s in enumerate(ids))
    assert sum(len(b["y"]) for b in loader) == len(data.train_set)
    plain = RecipeData(bundle, val_fraction=0.2, batch_size=20)
    ids = next(iter(plain._loader(plain.train_set, shuffle=True)))["image_id"].tolist()
    assert len(set(ids)) > 10  # without it, questions are drawn one by one
    series = load_dataset("ucr:GunPoint")
    with pytest.raises(ConfigError, match="data.group_batches needs data whose samples name their group"):
        RecipeData(series, val_fraction=0.2, batch_size=8, group_batches=True)
