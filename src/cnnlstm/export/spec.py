"""What an exported graph takes and gives: input order, dynamic axes, and inputs of other sizes to check it with.

The model contract fixes the input names (``model.input_names``) and the time axis (dim 1; the width, dim 3,
for CRNN's text images), so one table serves every registered model. Batch is always dynamic; time is
dynamic unless the model's time loop is unrolled by tracing (:data:`STATIC_TIME` says which and why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = ["ExportSpec", "export_spec", "STATIC_TIME", "resized_inputs"]

#: models whose time axis is frozen in an exported graph, with the reason.
STATIC_TIME: dict[str, str] = {
    "captioner": (
        "the teacher-forced decoder steps through the caption in a Python loop with attention; tracing unrolls "
        "it, so the caption length L is fixed to the example's (generation is not exported: beam search is "
        "data-dependent control flow)"
    ),
}


def _time_axis(name: str, tensor: Tensor) -> int | None:
    if name in ("x", "sequence", "captions"):
        return 3 if (name == "x" and tensor.dim() == 4) else 1  # CRNN images: width is the sequence
    return None


@dataclass
class ExportSpec:
    """Names and dynamic axes of an exported model.

    Attributes:
        input_names: ``forward`` keywords in graph order (``lengths`` included when the model takes it).
        output_names: ``("output",)``.
        dynamic_axes: ``{name: {axis: label}}`` for ``torch.onnx.export``.
        time_axes: ``{input name: axis}`` of the axes that carry time (used to vary the parity inputs).
        notes: why an axis that one might expect to be dynamic is not.
    """

    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ("output",)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    time_axes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def export_spec(model: nn.Module, example: dict[str, Tensor], dynamic_time: bool = True) -> ExportSpec:
    """The :class:`ExportSpec` of ``model`` for inputs like ``example``.

    Args:
        model: a registered model.
        example: its keyword inputs (``model.example_input()``).
        dynamic_time: make the time axis dynamic where the model allows it.

    Example:
        >>> from cnnlstm import create_model
        >>> m = create_model("lstm_fcn", num_classes=2, in_channels=3, hidden_size=4)
        >>> export_spec(m, m.example_input()).dynamic_axes["x"]
        {0: 'batch', 1: 'time'}
    """
    names = tuple(n for n in model.input_names if n in example)
    # an ensemble's members decide (EnsembleClassifier.base_model_name); a single model is its own base
    name = getattr(model, "base_model_name", None) or getattr(model, "model_name", type(model).__name__)
    spec = ExportSpec(input_names=names)
    time_ok = dynamic_time and name not in STATIC_TIME
    if dynamic_time and name in STATIC_TIME:
        spec.notes.append(f"{name}: time axis static: {STATIC_TIME[name]}")
    for key in names:
        axes = {0: "batch"}
        axis = _time_axis(key, example[key])
        if axis is not None and time_ok:
            axes[axis] = "time"
            spec.time_axes[key] = axis
        spec.dynamic_axes[key] = axes
    out_axes = {0: "batch"}
    if model.output_kind == "sequence_logits" and time_ok:
        out_axes[1] = "steps"  # CRNN: W // 4 columns
    spec.dynamic_axes["output"] = out_axes
    return spec


def resized_inputs(
    example: dict[str, Tensor], spec: ExportSpec, batch_size: int, time_size: int | None, seed: int = 0
) -> dict[str, Tensor]:
    """Fresh inputs like ``example`` with another batch size and time length, for the parity check.

    Values are drawn (seeded) from the example's own values, so token ids stay in the vocabulary and images in
    their range, whatever the model. ``lengths`` become ragged: the first sequence is full, the others random
    in ``[1, T]``; their padded steps keep random values, which a correct model ignores.

    Args:
        example: inputs from ``model.example_input()``.
        spec: the export spec (which axes carry time).
        batch_size: the new ``B``.
        time_size: the new length of every time axis, or ``None`` to keep the example's.
        seed: random seed.

    Shape:
        - each output: the example's shape with ``B`` and the time axes replaced.

    Example:
        >>> spec = ExportSpec(input_names=("x",), time_axes={"x": 1})
        >>> resized_inputs({"x": torch.rand(2, 5, 3)}, spec, batch_size=4, time_size=9)["x"].shape
        torch.Size([4, 9, 3])
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    steps = None
    for key, value in example.items():
        if key == "lengths":
            continue
        shape = [batch_size, *value.shape[1:]]
        if key in spec.time_axes and time_size is not None:
            shape[spec.time_axes[key]] = time_size
        pool = value.flatten()
        out[key] = pool[torch.randint(pool.numel(), shape, generator=gen)]  # values drawn from the example's
        if key in spec.time_axes:
            steps = shape[spec.time_axes[key]]
    if "lengths" in example:
        steps = steps if steps is not None else int(example["lengths"].max())
        lengths = torch.randint(1, steps + 1, (batch_size,), generator=gen)
        lengths[0] = steps  # one full sequence, so the padded length is really T
        out["lengths"] = lengths
    return {k: out[k] for k in example}
