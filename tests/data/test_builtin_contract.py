"""Every built-in dataset keeps the data contract: kinds, per-kind sample keys, info, collate, strict options."""

import pytest
import torch

from cnnlstm.data import list_datasets, load_dataset
from cnnlstm.data.builtin._common import Field, FieldDataset, resolve_lengths
from cnnlstm.errors import ConfigError, UnknownNameError

SMALL = {
    "digits": {"n_train": 20, "n_test": 10},
    "digit_sequences": {"n_train": 8, "n_test": 4},
    "moving_digits": {"n_train": 4, "n_test": 2},
    "captcha": {"n_train": 4, "n_test": 2},
    "sort_of_clevr": {"n_train": 8, "n_test": 4},
    "shape_captions": {"n_train": 6, "n_test": 3},
}
# Per-kind sample keys, from docs/architecture.md.
KEYS = {
    "images": {"x", "y"},
    "frames": {"x", "y"},
    "forecast": {"x", "y"},
    "text_image": {"x", "targets"},
    "vqa": {"image", "image_id", "sequence", "y", "qtype"},
    "captions": {"images", "captions"},
}
CLASSIFICATION = {"images", "frames", "vqa"}


def test_all_six_are_registered() -> None:
    listed = {k.removeprefix("builtin:"): v[0] for k, v in list_datasets().items() if k.startswith("builtin:")}
    assert {name: listed[name] for name in SMALL} == {
        "digits": "images", "digit_sequences": "frames", "moving_digits": "forecast", "captcha": "text_image",
        "sort_of_clevr": "vqa", "shape_captions": "captions",
    }


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bundle_contract(name: str) -> None:
    bundle = load_dataset(f"builtin:{name}", seed=0, **SMALL[name])
    assert bundle.name == f"builtin:{name}" and bundle.kind == list_datasets()[f"builtin:{name}"][0]
    assert bundle.info.model_kwargs and len(bundle.train) == SMALL[name]["n_train"]
    samples = [bundle.train[i] for i in range(2)]
    assert set(samples[0]) == KEYS[bundle.kind]
    for key, value in samples[0].items():
        assert isinstance(value, torch.Tensor)
        assert value.dtype in (torch.float32, torch.int64), (key, value.dtype)
    batch = bundle.collate_fn(samples)
    assert all(batch[k].shape[0] == 2 for k in KEYS[bundle.kind])
    if bundle.kind in CLASSIFICATION:
        targets = bundle.info.targets
        assert targets.shape == (len(bundle.train),) and targets.dtype == torch.int64
        assert targets.max() < bundle.info.model_kwargs["num_classes"] == len(bundle.info.class_names)
        assert int(bundle.train[1]["y"]) == int(targets[1])
    with pytest.raises(UnknownNameError, match="valid options: seed"):
        load_dataset(f"builtin:{name}", no_such_option=1)
    with pytest.raises(ConfigError, match="n_train"):
        load_dataset(f"builtin:{name}", n_train=0)


def test_resolve_lengths() -> None:
    kw = {"default": 4, "low": 1, "high": 10, "dataset": "t"}
    assert resolve_lengths(None, None, None, **kw) == (4, 4)
    assert resolve_lengths(6, None, None, **kw) == (6, 6)
    assert resolve_lengths(None, 2, None, **kw) == (2, 4)
    assert resolve_lengths(None, 7, None, **kw) == (7, 7)
    assert resolve_lengths(None, None, 3, **kw) == (3, 3)
    assert resolve_lengths(None, None, 8, **kw) == (4, 8)
    with pytest.raises(ConfigError, match="must not exceed"):
        resolve_lengths(None, 6, 5, **kw)
    with pytest.raises(ConfigError, match="integer"):
        resolve_lengths(2.5, None, None, **kw)


def test_field_dataset_gathers_trims_and_scales() -> None:
    table = torch.arange(5 * 2, dtype=torch.uint8).view(5, 2) * 25  # (5, 2) lookup rows
    index = torch.tensor([[4, 0, 1], [2, 3, 3]])
    ds = FieldDataset({"x": Field(table, index=index, lengths=torch.tensor([3, 1])), "y": Field(torch.tensor([7, 8]))},
                      meta={"note": "kept"})
    first, second = ds[0], ds[-1]
    torch.testing.assert_close(first["x"], table[[4, 0, 1]].float() / 255)
    torch.testing.assert_close(second["x"], table[[2]].float() / 255)
    assert first["x"].dtype == torch.float32 and int(second["y"]) == 8 and ds.meta["note"] == "kept"
    with pytest.raises(IndexError):
        ds[2]
