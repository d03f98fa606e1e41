"""frame_lstm training throughput: frames folded into the batch (the library) vs a per-frame Python loop.

The loop is what tutorials write: ``torch.stack([cnn(x[:, t]) for t in range(T)], 1)``. Both paths share the
very same module (encoder, LSTM, head weights), batch and optimiser settings; their logits are checked equal
before timing, so the ratio measures only how the frames reach the CNN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.timing import interleaved, throughput

__all__ = ["FRAME_SIZES", "per_frame_loop", "frame_lstm_speed"]

#: (clips B, frames T, channels C, side S, encoder widths, LSTM hidden size)
FRAME_SIZES = {"full": (16, 8, 3, 32, (32, 64, 128), 128), "small": (2, 3, 3, 16, (8, 16), 8)}


def per_frame_loop(model: nn.Module, x: Tensor) -> Tensor:
    """Logits of a ``frame_lstm`` computed the tutorial way: one CNN call per time step.

    Shape:
        - x: ``(B, T, C, H, W)``; output: ``(B, K)``.

    Example:
        >>> from cnnlstm import create_model
        >>> model = create_model("frame_lstm", num_classes=3, encoder_kwargs={"widths": (8,)}, hidden_size=4)
        >>> per_frame_loop(model, torch.rand(2, 3, 3, 16, 16)).shape
        torch.Size([2, 3])
    """
    feats = torch.stack([model.encoder(x[:, t]) for t in range(x.shape[1])], dim=1)  # (B, T, D)
    return model.forward_head(model.forward_recurrent(feats))  # (B, K)


def frame_lstm_speed(*, repeats: int, small: bool = False, steps: int = 20) -> dict[str, Any]:
    """Clips/s of one training step (forward, backward, AdamW) for the folded and the per-frame-loop paths.

    Args:
        repeats: timed units per path (median reported).
        small: tiny sizes, for smoke tests.
        steps: training steps per timed unit.

    Returns:
        ``{"sizes", "paths": {name: {"rates", "median"}}, "ratio_folded_over_loop", "max_abs_diff"}``.

    Example:
        >>> frame_lstm_speed(repeats=3)["ratio_folded_over_loop"]  # doctest: +SKIP
    """
    from cnnlstm import create_model

    B, T, C, S, widths, hidden = FRAME_SIZES["small" if small else "full"]
    torch.manual_seed(0)
    model = create_model("frame_lstm", num_classes=10, in_channels=C, encoder_kwargs={"widths": widths},
                         hidden_size=hidden, image_size=S)
    x = torch.rand(B, T, C, S, S)  # (B, T, C, H, W)
    y = torch.randint(0, 10, (B,))
    model.eval()
    with torch.no_grad():  # same logits, or the comparison means nothing
        diff = float((model(x) - per_frame_loop(model, x)).abs().max())
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step(logits: Tensor) -> None:
        nn.functional.cross_entropy(logits, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def folded() -> None:
        train_step(model(x))  # the library: B*T frames in one encoder call

    def loop() -> None:
        train_step(per_frame_loop(model, x))  # T encoder calls of B frames

    for warm in (folded, loop, folded, loop):
        warm()
    paths = interleaved({"folded (cnnlstm frame_lstm)": lambda: throughput(folded, B, steps),
                         "per-frame Python loop": lambda: throughput(loop, B, steps)}, repeats)
    ratio = paths["folded (cnnlstm frame_lstm)"]["median"] / paths["per-frame Python loop"]["median"]
    return {"sizes": {"B": B, "T": T, "C": C, "H": S, "W": S, "widths": list(widths), "hidden": hidden,
                      "steps_per_unit": steps},
            "paths": paths, "ratio_folded_over_loop": round(ratio, 3), "max_abs_diff": diff}
