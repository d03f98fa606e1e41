"""Host-side loss reading and the weighted mean: behaviour against hand-computed answers."""

import math

import pytest
import torch

from cnnlstm.tasks.loss_reader import DeferredLoss
from cnnlstm.tasks.weighted_mean import WeightedMean


def test_cpu_tensors_are_read_at_once_by_default():
    reader = DeferredLoss()
    reading = reader.push(torch.tensor(2.5), epoch=1, step=7)
    assert (reading.value, reading.epoch, reading.step, reading.finite) == (2.5, 1, 7, True)
    assert reader.flush() is None


def test_deferred_reads_come_one_push_late_with_their_own_step():
    reader = DeferredLoss(deferred=True)
    losses = [torch.tensor(v) for v in (3.0, float("nan"), 1.0)]
    readings = [reader.push(loss, epoch=0, step=i) for i, loss in enumerate(losses)]
    assert readings[0] is None
    assert readings[1].value == 3.0 and readings[1].step == 0
    assert math.isnan(readings[2].value) and readings[2].step == 1 and not readings[2].finite
    last = reader.flush()
    assert last.value == 1.0 and last.step == 2
    assert reader.flush() is None


def test_deferred_reading_is_a_copy_not_a_view():
    reader = DeferredLoss(deferred=True)
    loss = torch.tensor(4.0)
    reader.push(loss, epoch=0, step=0)
    loss.fill_(-1.0)  # an in-place change after the push must not alter what was read
    assert reader.flush().value == 4.0


@pytest.mark.gpu
def test_deferred_cuda_reading_matches_the_value():
    # The pinned, non-blocking copy path: CUDA losses are deferred by default, CPU ones are not.
    reader = DeferredLoss()
    x = torch.randn(1000, device="cuda")
    assert reader.push(x.square().mean(), epoch=0, step=0) is None
    reading = reader.push(torch.tensor(2.0, device="cuda"), epoch=0, step=1)
    assert reading.step == 0 and reading.value == pytest.approx(float(x.cpu().square().mean()), rel=1e-5)
    assert reader.flush().value == 2.0


def test_weighted_mean_matches_a_hand_computation():
    values = [torch.tensor(0.5), torch.tensor([1.0, 3.0]), torch.tensor(2.0)]
    weights = [4, torch.tensor([1.0, 0.0]), 2.0]
    m = WeightedMean()
    for v, w in zip(values, weights, strict=True):
        m.update(v, weight=w)
    expected = (0.5 * 4 + 1.0 * 1 + 3.0 * 0 + 2.0 * 2) / (4 + 1 + 0 + 2)
    assert float(m.compute()) == pytest.approx(expected)


def test_weighted_mean_keeps_nan_and_an_empty_mean_is_nan():
    m = WeightedMean()
    assert math.isnan(float(m.compute()))
    m.update(torch.tensor(1.0), weight=1)
    m.update(torch.tensor(float("nan")), weight=1)
    assert math.isnan(float(m.compute()))  # a NaN loss shows as NaN, it is not silently dropped
