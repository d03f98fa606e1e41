"""Mixed precision: under bf16 autocast the LSTM runs in low precision, the losses (CTC above all) in fp32."""

from __future__ import annotations

import torch

from cnnlstm.models import create_model
from cnnlstm.tasks import CTCTask


def test_ctc_loss_is_computed_in_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    model = create_model("crnn", num_classes=5, in_channels=1, hidden_size=8, widths=[4, 4, 8, 8, 8, 8])
    task = CTCTask(model).eval()
    batch = {"x": torch.rand(2, 1, 32, 64), "targets": torch.tensor([[1, 2, 3], [4, 1, 0]]),
             "target_lengths": torch.tensor([3, 2])}
    reference = task.step(batch, "train")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, _ = task.scores(batch)
        loss = task.step(batch, "train")
    assert log_probs.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.isfinite(loss) and abs(float(loss) - float(reference)) < 0.05 * float(reference)
