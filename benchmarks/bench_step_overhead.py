"""Host time the engine adds to a training step: a tiny model, where the step is almost all overhead.

``lstm_fcn`` at widths 4 (LSTM 4, convs 4/4/4) on a batch of 8 series x 10 steps x 2 channels: its arithmetic takes
a fraction of a millisecond, so what is left of a step is host work. The same model is trained by the engine
(classification task + :func:`~cnnlstm.engine.trainer.make_trainer`, as ``cnnlstm fit`` runs it: metrics, loss
reading, gradient clipping, Lightning's loop) and by a bare AdamW loop with the same clipping; windows of each
alternate, and the medians are reported. On a GPU the same host work decides whether the CPU can queue steps ahead
of a short kernel stream (docs/benchmarks.md 3f').

Usage:
    OMP_NUM_THREADS=1 python -m benchmarks.bench_step_overhead [--steps 150] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from benchmarks.gpu import _hand_step, engine_rate, loop_rate
from benchmarks.machine import machine_info

__all__ = ["step_overhead"]


def _model() -> nn.Module:
    from cnnlstm import create_model

    torch.manual_seed(0)
    return create_model("lstm_fcn", in_channels=2, num_classes=4, hidden_size=4, filters=(4, 4, 4),
                        kernel_sizes=(3, 3, 3), dropout=0.0)


def step_overhead(steps: int = 150, repeats: int = 7) -> dict[str, float]:
    """Median ms per step of the engine and of the hand loop, windows alternating; and their ratio."""
    torch.set_num_threads(1)
    device = torch.device("cpu")
    x, y = torch.randn(8, 10, 2), torch.randint(0, 4, (8,))
    engine, hand = [], []
    for _ in range(repeats):  # alternate, so drift in the machine's load hits both alike
        rates = engine_rate(_model(), {"x": x, "y": y}, items=1, trainer={"precision": "32-true"}, warmup=20,
                            steps=steps, repeats=1, device=device)
        engine.append(1000 / rates[0])
        step = _hand_step(_model(), x, y, bf16=False, clip=1.0)  # the engine clips recurrent models at 1.0
        hand.append(1000 / loop_rate(step, items=1, warmup=20, steps=steps, repeats=1, device=device)[0])
    e, h = statistics.median(engine), statistics.median(hand)
    return {"engine_ms": round(e, 3), "hand_ms": round(h, 3), "ratio": round(e / h, 2),
            "engine_windows": [round(v, 3) for v in engine], "hand_windows": [round(v, 3) for v in hand]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    print(machine_info())
    print(step_overhead(args.steps, args.repeats))


if __name__ == "__main__":
    main()
