"""The cost report's plot: FLOPs and peak memory against the sequence length."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnlstm.profile.tables import CostTable

__all__ = ["plot_cost"]


def plot_cost(table: CostTable, path: str | Path) -> Path:
    """FLOPs per sample (left) and peak memory (right) against ``T``, one line per frame size, log-log.

    Args:
        table: a :func:`~cnnlstm.profile.run.cost_report` result.
        path: the PNG to write (parent folders are created).

    Example:
        >>> from cnnlstm.profile import cost_report
        >>> cost_report("lstm_fcn", in_channels=2, num_classes=3, seq_lens=(8, 16)).plot("cost.png")
        ... # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for size in dict.fromkeys(r.frame_size for r in table.rows):
        rows = [r for r in table.rows if r.frame_size == size]
        ts = [r.seq_len for r in rows]
        tag = "" if size is None else f" {size[0]}x{size[1]}"
        left.plot(ts, [r.flops_forward for r in rows], marker="o", label=f"forward{tag}")
        left.plot(ts, [r.flops_train for r in rows], marker="s", ls="--", label=f"train step{tag}")
        right.plot(ts, [r.peak_inference_bytes / 2**20 for r in rows], marker="o", label=f"inference{tag}")
        right.plot(ts, [r.peak_train_bytes / 2**20 for r in rows], marker="s", ls="--", label=f"train step{tag}")
        right.plot(ts, [r.activation_bytes / 2**20 for r in rows], marker="^", ls=":",
                   label=f"saved activations{tag}")
    left.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="FLOPs per sample", title="compute")
    right.set(xscale="log", yscale="log", xlabel="sequence length T", ylabel="MiB",
              title=f"peak memory (batch {table.batch_size})")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(table._caption(), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
