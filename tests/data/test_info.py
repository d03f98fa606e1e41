"""DataInfo: typed fields, kind-specific extras, and the data_info.json round trip (older plain files too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlstm.data import DataInfo, load_dataset
from cnnlstm.engine.predict import read_data_info
from cnnlstm.tasks import CaptioningTask, ClassificationTask, CTCTask, build_task
from cnnlstm.tasks.forecasting import ForecastingTask


def _write(run_dir: Path, data: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "data_info.json").write_text(json.dumps(data))
    return run_dir


def test_round_trip_through_data_info_json(tmp_path: Path) -> None:
    info = DataInfo(model_kwargs={"num_classes": 2, "in_channels": 3, "image_size": [8, 8]},
                    class_names=["a", "b"], normalization={"mean": [0.5], "std": [0.25], "source": "encoder"},
                    image_size=(8, 8), extras={"vocab": ["<pad>", "x"], "num_frames": 4})
    record = info.for_run("builtin:demo", "frames", "classification")
    back = read_data_info(_write(tmp_path / "run", record.to_dict()))
    assert back == record
    assert back.image_size == (8, 8) and back.extras == {"vocab": ["<pad>", "x"], "num_frames": 4}


def test_per_sample_entries_stay_out_of_the_run_record() -> None:
    info = DataInfo(class_names=["a", "b"], targets=torch.tensor([0, 1]), groups=[0, 0],
                    extras={"references": [["a b"]], "charset": ["<blank>", "a"]})
    record = info.to_dict()
    assert "targets" not in record and "groups" not in record and "references" not in record
    assert record == {"model_kwargs": {}, "class_names": ["a", "b"], "charset": ["<blank>", "a"]}
    assert "targets" in info.to_dict(per_sample=True) and "references" in info.to_dict(per_sample=True)


def test_legacy_plain_file_with_unknown_keys_loads(tmp_path: Path) -> None:
    # A data_info.json as older versions wrote it: flat, image_size a list, and an entry nothing reads any more.
    legacy = {"name": "vqa:data", "kind": "vqa", "task": "classification", "class_names": ["no", "yes"],
              "model_kwargs": {"num_classes": 2, "vocab_size": 5}, "vocab": ["<pad>", "<unk>", "red"],
              "answers": ["no", "yes"], "question_types": ["a", "b"], "image_size": [16, 16],
              "some_old_entry": {"kept": True}}
    info = read_data_info(_write(tmp_path / "old", legacy))
    assert (info.name, info.kind, info.task) == ("vqa:data", "vqa", "classification")
    assert info.class_names == ["no", "yes"] and info.image_size == (16, 16) and info.normalization == {}
    assert info.extras["some_old_entry"] == {"kept": True} and info.extras["question_types"] == ["a", "b"]
    assert DataInfo.from_dict(info.to_dict(per_sample=True)) == info  # nothing lost on the way back


def test_square_image_size_and_missing_fields_load() -> None:
    info = DataInfo.from_dict({"image_size": 12, "class_names": None})
    assert info.image_size == (12, 12) and info.class_names is None and info.model_kwargs == {}


def test_missing_file_says_the_fit_did_not_finish(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no data_info.json"):
        read_data_info(tmp_path)


class _Fixed(torch.nn.Module):
    def __init__(self, output_kind: str, num_classes: int = 2) -> None:
        super().__init__()
        self.output_kind, self.num_classes, self.input_names = output_kind, num_classes, ("x",)
        self.weight = torch.nn.Parameter(torch.zeros(1))


@pytest.mark.parametrize(("name", "output_kind", "cls", "info", "check"), [
    ("classification", "logits", ClassificationTask,
     DataInfo(class_names=["a", "b"], extras={"question_types": ["t"]}),
     lambda t: t.class_names == ["a", "b"] and t.question_types == ["t"]),
    ("ctc", "sequence_logits", CTCTask, DataInfo(extras={"charset": ["<blank>", "x"]}),
     lambda t: t.charset == ["<blank>", "x"]),
    ("forecasting", "frames", ForecastingTask, DataInfo(model_kwargs={"image_size": (7, 9)},
                                                         extras={"data_range": 2.0}),
     lambda t: t.data_range == 2.0 and t.ssim_kernel == 7),
    ("captioning", "caption_logits", CaptioningTask,
     DataInfo(extras={"vocab": ["<pad>", "<start>", "<end>", "<unk>", "hi"], "max_caption_length": 6}),
     lambda t: t.max_length == 6),
])
def test_each_task_takes_what_it_declares_from_the_info(name, output_kind, cls, info, check) -> None:
    task = build_task(name, _Fixed(output_kind, 5 if name == "captioning" else 2), info)
    assert type(task) is cls and check(task)


def test_a_loaded_bundle_carries_a_data_info() -> None:
    bundle = load_dataset("builtin:captcha", n_train=4, n_test=2)
    assert isinstance(bundle.info, DataInfo) and bundle.info.extras["charset"][0] == "<blank>"
