"""The tables of a cost report: parameters per block and costs per sequence length and frame size."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BlockParams", "CostRow", "CostTable", "format_si", "format_bytes"]


@dataclass(frozen=True)
class BlockParams:
    """Parameter count of one top-level block (``"(own)"`` for parameters held by the model itself)."""

    name: str
    trainable: int
    frozen: int


@dataclass(frozen=True)
class CostRow:
    """Costs at one sequence length and frame size.

    FLOPs are per sample; memory is for the whole batch of ``CostTable.batch_size``, in bytes.
    """

    seq_len: int
    frame_size: tuple[int, int] | None
    input_shapes: dict[str, tuple[int, ...]]
    flops_forward: int
    flops_train: int
    activation_bytes: int
    peak_inference_bytes: int
    peak_train_bytes: int
    measured_inference_bytes: int | None = None
    measured_train_bytes: int | None = None
    cached_feature_bytes: int | None = None


def format_si(value: float, unit: str) -> str:
    """``value`` with an SI prefix and three significant digits.

    Example:
        >>> format_si(1234567, "FLOP")
        '1.23 MFLOP'
    """
    for prefix in ("", "K", "M", "G", "T", "P"):
        if abs(value) < 1000 or prefix == "P":
            return f"{value:.3g} {prefix}{unit}" if prefix else f"{value:.0f} {unit}"
        value /= 1000
    raise AssertionError


def format_bytes(value: float) -> str:
    """``value`` bytes with a binary prefix and three significant digits.

    Example:
        >>> format_bytes(3 * 2**20)
        '3 MiB'
    """
    for prefix in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or prefix == "TiB":
            return f"{value:.0f} B" if prefix == "B" else f"{value:.3g} {prefix}"
        value /= 1024
    raise AssertionError


@dataclass
class CostTable:
    """What :func:`~cnnlstm.profile.run.cost_report` returns: parameters per block, one :class:`CostRow` per (T, frame).

    ``str(table)`` is the plain-text table; :meth:`to_markdown` the Markdown one; :meth:`plot` a PNG.
    """

    model_name: str
    batch_size: int
    device: str
    optimizer: str
    memory_source: str
    blocks: list[BlockParams]
    rows: list[CostRow] = field(default_factory=list)

    @property
    def trainable_params(self) -> int:
        return sum(b.trainable for b in self.blocks)

    @property
    def frozen_params(self) -> int:
        return sum(b.frozen for b in self.blocks)

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["T", "frame", "FLOPs fwd/sample", "FLOPs train/sample", "saved activations", "peak inference",
                  "peak train step"]
        body = [[
            str(r.seq_len), "-" if r.frame_size is None else f"{r.frame_size[0]}x{r.frame_size[1]}",
            format_si(r.flops_forward, "FLOP"), format_si(r.flops_train, "FLOP"), format_bytes(r.activation_bytes),
            format_bytes(r.peak_inference_bytes), format_bytes(r.peak_train_bytes),
        ] for r in self.rows]
        if any(r.cached_feature_bytes is not None for r in self.rows):
            header.append("cached features/clip")  # float32; data.feature_cache_dtype: float16 halves it
            for row, r in zip(body, self.rows, strict=True):
                row.append("-" if r.cached_feature_bytes is None else format_bytes(r.cached_feature_bytes))
        if any(r.measured_train_bytes is not None for r in self.rows):
            header += ["allocator inference", "allocator train step"]
            for row, r in zip(body, self.rows, strict=True):
                row += [format_bytes(r.measured_inference_bytes or 0), format_bytes(r.measured_train_bytes or 0)]
        return header, body

    def _block_cells(self) -> tuple[list[str], list[list[str]]]:
        body = [[b.name, f"{b.trainable:,}", f"{b.frozen:,}"] for b in self.blocks]
        body.append(["total", f"{self.trainable_params:,}", f"{self.frozen_params:,}"])
        return ["block", "trainable", "frozen"], body

    def _caption(self) -> str:
        return (f"{self.model_name}: batch {self.batch_size} on {self.device}; train step = forward + backward + "
                f"{self.optimizer} step; memory from {self.memory_source}")

    def to_text(self) -> str:
        """Both tables as aligned plain text."""

        def table(header: list[str], body: list[list[str]]) -> list[str]:
            widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

            def fmt(row: list[str]) -> str:  # first column left-aligned, numbers right-aligned
                cells = zip(row, widths, strict=True)
                return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells))

            return [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, body)]

        return "\n".join([self._caption(), "", *table(*self._block_cells()), "", *table(*self._cells())])

    def to_markdown(self) -> str:
        """Both tables in GitHub Markdown."""

        def table(header: list[str], body: list[list[str]]) -> list[str]:
            rule = ["---"] + ["---:"] * (len(header) - 1)
            return ["| " + " | ".join(row) + " |" for row in [header, rule, *body]]

        return "\n".join([f"**{self._caption()}**", "", *table(*self._block_cells()), "", *table(*self._cells())])

    def __str__(self) -> str:
        return self.to_text()

    def plot(self, path: str | Path) -> Path:
        """FLOPs per sample (left) and peak memory (right) against ``T``; see :func:`~cnnlstm.profile.plots.plot_cost`.

        Args:
            path: the PNG to write (parent folders are created).
        """
        from cnnlstm.profile.plots import plot_cost  # matplotlib only when a plot is asked for

        return plot_cost(self, path)
