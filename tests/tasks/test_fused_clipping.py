"""A fused AdamW under bf16-mixed with gradient clipping: Lightning's plugin refuses it, the task clips itself.

On a GPU the task picks ``fused=True`` and recurrent models clip at 1.0 by default, so every bf16-mixed GPU fit of
an LSTM model went through this path. CPU AdamW has a fused kernel too, so forcing it here reproduces the GPU case.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from cnnlstm import create_model
from cnnlstm.tasks import base, build_task


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(8, 12, 3, generator=g) * 50, "y": torch.randint(0, 2, (8,), generator=g)}


def _one_step(model: nn.Module, *, precision: str, clip: float, algorithm: str) -> None:
    task = build_task("classification", model, {}, {"lr": 1e-2, "scheduler": "none"})
    batch = _batch()
    loader = torch.utils.data.DataLoader([batch], batch_size=None)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", precision=precision, gradient_clip_val=clip,
                         gradient_clip_algorithm=algorithm, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=loader)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_fused_adamw_under_bf16_mixed_clips_like_the_reference(monkeypatch: pytest.MonkeyPatch,
                                                               algorithm: str) -> None:
    monkeypatch.setattr(base, "use_fused_adamw", lambda params, loss_scaled: True)
    torch.manual_seed(0)
    model = create_model("lstm_fcn", in_channels=3, num_classes=2, hidden_size=8, filters=(4, 4, 4),
                         kernel_sizes=(3, 3, 3), dropout=0.0)
    reference = copy.deepcopy(model)
    _one_step(model, precision="bf16-mixed", clip=0.01, algorithm=algorithm)  # raised RuntimeError before

    # The same step by hand: bf16 autocast forward, clip the true gradients, one fused AdamW step.
    reference.train()
    opt = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=1e-2, fused=True)
    batch = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = reference(batch["x"])
    nn.functional.cross_entropy(logits.float(), batch["y"]).backward()
    params = [p for p in reference.parameters() if p.grad is not None]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, 0.01)
    else:
        torch.nn.utils.clip_grad_norm_(params, 0.01)
    opt.step()
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, msg=f"{name} differs from the hand-clipped step")


def test_the_gradients_reaching_the_fused_step_have_the_clipped_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "use_fused_adamw", lambda params, loss_scaled: True)
    seen: list[float] = []
    torch.manual_seed(0)
    model = create_model("lstm_fcn", in_channels=3, num_classes=2, hidden_size=8, filters=(4, 4, 4),
                         kernel_sizes=(3, 3, 3), dropout=0.0)
    orig = torch.optim.AdamW.step

    def step(self, closure=None):  # noqa: ANN001, ANN202
        loss = closure() if closure is not None else None  # Lightning's closure: forward, backward, then clip
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        orig(self)
        return loss

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    _one_step(model, precision="bf16-mixed", clip=0.01, algorithm="norm")
    assert seen and seen[0] == pytest.approx(0.01, rel=1e-3)  # unclipped, these gradients are far larger


def test_fused_only_on_cuda_and_never_under_loss_scaling() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    assert base.use_fused_adamw(p, loss_scaled=False) is None
    assert base.use_fused_adamw(p, loss_scaled=True) is None
    assert base.use_fused_adamw([], loss_scaled=False) is None
