"""ONNX translations that keep dynamic shapes where the TorchScript-based exporter's own do not.

The exporter's ``pixel_shuffle`` / ``pixel_unshuffle`` / ``unflatten`` read the traced tensors' static sizes,
which stamps the example's batch size and length into the graph: an exported ConvLSTM forecaster then reshapes
a batch of 3 into the example's 2 and fails (or silently mixes samples). ONNX's own ``DepthToSpace`` (mode
``CRD``) *is* ``pixel_shuffle``; ``pixel_unshuffle`` (``SpaceToDepth`` orders channels differently) and
``unflatten`` become reshapes that copy, infer or read every size at run time. They are registered only while
an export runs (:func:`dynamic_shape_symbolics`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["dynamic_shape_symbolics"]


def _int(value: torch._C.Value) -> int:
    return int(value.node().t("value"))  # a constant int argument of the traced call


def _pixel_shuffle(g, x, upscale_factor):  # noqa: ANN001, ANN202 (exporter callback signature)
    return g.op("DepthToSpace", x, blocksize_i=_int(upscale_factor), mode_s="CRD")


def _pixel_unshuffle(g, x, downscale_factor):  # noqa: ANN001, ANN202
    p = _int(downscale_factor)

    def const(values: list[int]) -> torch._C.Value:
        return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    # Reshape's 0 copies a dim and -1 infers one, so no size is baked in (the exporter's dynamic-shape recipe).
    x = g.op("Unsqueeze", x, const([3]))  # (N, C, H, 1, W)
    x = g.op("Reshape", x, const([0, 0, -1, p, 0]))  # (N, C, H/p, p, W)
    x = g.op("Reshape", x, const([0, 0, 0, 0, -1, p]))  # (N, C, H/p, p, W/p, p)
    x = g.op("Transpose", x, perm_i=[0, 1, 3, 5, 2, 4])  # (N, C, p, p, H/p, W/p)
    x = g.op("Reshape", x, const([0, -1, 1, 1, 0, 0]))  # (N, C*p*p, 1, 1, H/p, W/p)
    return g.op("Squeeze", x, const([2, 3]))  # (N, C*p*p, H/p, W/p)


def _unflatten(g, x, dim, sizes):  # noqa: ANN001, ANN202
    # Reshape to shape[:dim] + sizes + shape[dim + 1:], the sizes as traced (the built-in reads static sizes).
    d = _int(dim)
    shape = g.op("Shape", x)
    parts = [g.op("Slice", shape, _const(g, [0]), _const(g, [d]))] if d > 0 else []
    parts.append(g.op("Cast", sizes, to_i=7) if sizes.type().kind() == "TensorType" else _sizes(g, sizes))
    parts.append(g.op("Slice", shape, _const(g, [d + 1]), _const(g, [2**62])))
    return g.op("Reshape", x, g.op("Concat", *parts, axis_i=0))


def _const(g, values: list[int]) -> torch._C.Value:  # noqa: ANN001
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _sizes(g, sizes: torch._C.Value) -> torch._C.Value:  # noqa: ANN001
    # A traced list of ints (prim::ListConstruct of scalars) -> a 1-D int64 tensor.
    items = list(sizes.node().inputs())
    return g.op("Concat", *[g.op("Unsqueeze", g.op("Cast", v, to_i=7), _const(g, [0])) for v in items], axis_i=0)


@contextlib.contextmanager
def dynamic_shape_symbolics(opset: int) -> Iterator[None]:
    """Use the shape-agnostic translations above for the duration of one export.

    Args:
        opset: the ONNX opset being exported.

    Example:
        >>> with dynamic_shape_symbolics(17):
        ...     pass
    """
    symbolics = {"::pixel_shuffle": _pixel_shuffle, "::pixel_unshuffle": _pixel_unshuffle, "::unflatten": _unflatten}
    for name, fn in symbolics.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    try:
        yield
    finally:
        for name in symbolics:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
