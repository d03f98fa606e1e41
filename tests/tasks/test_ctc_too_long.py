"""CTC labels longer than the model's output: found exactly, and reported once instead of silently ignored."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from cnnlstm.models import create_model
from cnnlstm.tasks import CTCTask
from cnnlstm.tasks.ctc import too_long_for_ctc


def _padded(labels: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(t) for t in labels])
    padded = torch.zeros(len(labels), max(1, int(lengths.max())), dtype=torch.long)
    for i, t in enumerate(labels):
        padded[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return padded, lengths


def test_too_long_matches_where_ctc_loss_is_infinite() -> None:
    """The reference: without zero_infinity, CTC's loss is inf exactly for labels no alignment fits."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = 6
        labels = [torch.randint(1, 3, (int(torch.randint(1, 7, (1,), generator=gen)),), generator=gen).tolist()
                  for _ in range(batch)]
        targets, target_lengths = _padded(labels)
        lengths = torch.randint(1, 8, (batch,), generator=gen)
        log_probs = torch.randn(8, batch, 3, generator=gen).log_softmax(-1)  # (T, B, K)
        raw = F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=0, reduction="none")
        assert too_long_for_ctc(targets, target_lengths, lengths).tolist() == torch.isinf(raw).tolist(), labels


def test_padding_is_not_counted_as_a_repeat() -> None:
    targets, target_lengths = _padded([[1, 2], [1, 1, 1]])  # row 0 is padded with 0, 0 (a "repeat" of pads)
    assert too_long_for_ctc(targets, target_lengths, torch.tensor([2, 5])).tolist() == [False, False]
    assert too_long_for_ctc(targets, target_lengths, torch.tensor([1, 4])).tolist() == [True, True]


def _batch(width: int, labels: list[list[int]]) -> dict[str, torch.Tensor]:
    targets, target_lengths = _padded(labels)
    return {"x": torch.rand(len(labels), 1, 32, width), "targets": targets, "target_lengths": target_lengths}


def test_one_warning_per_run_naming_how_many_labels_are_too_long() -> None:
    torch.manual_seed(0)
    model = create_model("crnn", num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8))
    task = CTCTask(model)
    fits, too_long = [1, 2], [1, 2, 1, 2, 1, 2]  # width 16 -> 4 columns
    with pytest.warns(UserWarning, match=r"2 of 3 training labels in epoch 1 are longer") as record:
        task.step(_batch(16, [fits, too_long]), "train")
        task.step(_batch(16, [too_long]), "train")
        task.step(_batch(16, [fits]), "val")  # evaluation labels are not counted
        task.on_stage_epoch_end("train", {})
    assert "wider images or fewer pooling steps" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the next epoch has as many, and says nothing
        task.step(_batch(16, [too_long]), "train")
        task.on_stage_epoch_end("train", {})


def test_no_warning_when_every_label_fits() -> None:
    model = create_model("crnn", num_classes=5, in_channels=1, hidden_size=8, widths=(4, 8, 8, 8, 8, 8))
    task = CTCTask(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.step(_batch(16, [[1, 2], [3, 3]]), "train")
        task.on_stage_epoch_end("train", {})
    assert not task._warned_too_long
