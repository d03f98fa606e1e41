"""optim.encoder_lr: the encoder's trainable parameters get their own learning rate; misuse is an error."""

from __future__ import annotations

import pytest

from cnnlstm.errors import ConfigError
from cnnlstm.models import create_model
from cnnlstm.tasks import ClassificationTask


def _task(freeze: str | int, **optim) -> ClassificationTask:
    model = create_model("frame_lstm", num_classes=2, encoder_kwargs={"widths": (4, 8)}, hidden_size=4, freeze=freeze)
    return ClassificationTask(model, optim={"lr": 1e-2, "scheduler": "none", **optim})


def test_encoder_parameters_train_at_encoder_lr_and_the_rest_at_lr() -> None:
    task = _task(1, encoder_lr=1e-4)  # only the last encoder stage trains
    rest, enc = task.configure_optimizers().param_groups
    assert (rest["lr"], enc["lr"]) == (1e-2, 1e-4)
    encoder = task.model.encoder
    assert {id(p) for p in enc["params"]} == {id(p) for p in encoder.parameters() if p.requires_grad}
    assert {id(p) for p in rest["params"]} == {id(p) for n, p in task.model.named_parameters()
                                                if not n.startswith("encoder.")}


def test_without_encoder_lr_one_group_and_with_a_frozen_encoder_an_error() -> None:
    (group,) = _task("none").configure_optimizers().param_groups
    assert group["lr"] == 1e-2
    with pytest.raises(ConfigError, match="frozen"):
        _task("all", encoder_lr=1e-4).configure_optimizers()
    with pytest.raises(ConfigError, match="encoder_lr must be > 0"):
        _task("none", encoder_lr=0.0)


def test_the_cpu_optimiser_is_not_fused() -> None:
    (group,) = _task("none").configure_optimizers().param_groups
    assert not group["fused"]


@pytest.mark.gpu
def test_on_cuda_one_fused_step_equals_the_cpu_step() -> None:
    import torch

    cpu, gpu = _task("none"), _task("none")
    gpu.model.load_state_dict(cpu.model.state_dict())
    gpu.model.cuda()
    steps = []
    for task in (cpu, gpu):
        optimizer = task.configure_optimizers()
        for p in task.model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        steps.append((optimizer, [p.detach().cpu() for p in task.model.parameters()]))
    (_, expected), (fused, got) = steps
    assert fused.param_groups[0]["fused"] is True
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
