"""FLOPs of a forward pass and a training step, fused LSTM kernels included.

Counted by PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode`. Its convention counts the multiply-adds
of matrix products and convolutions (``2 * m * n * k``) and no elementwise work (bias adds, activations,
normalisation). It has no formula for the fused LSTM kernels (``aten.mkldnn_rnn_layer`` on CPU, ``aten._cudnn_rnn``
on CUDA), so an ``nn.LSTM`` counted 0 FLOPs; :data:`RNN_FLOP_FORMULAS` adds them under the same convention (every
weight matrix multiplies every token once: ``2 * tokens * (4H*I + 4H*H)`` per LSTM layer and direction; backward
twice that, as for ``mm``). ``nn.LSTMCell`` and packed sequences on CPU decompose into ``addmm`` and were already
counted; ``aten._thnn_fused_lstm_cell`` (CUDA cells) is elementwise only, so 0 under the convention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from cnnlstm.errors import ConfigError

__all__ = ["RNN_FLOP_FORMULAS", "count_flops", "scalar_loss"]


def _tokens(input_shape: Sequence[int]) -> int:
    # (T, B, I), (B, T, I) or packed (sum(batch_sizes), I): every leading position is one step of one sequence.
    return math.prod(input_shape[:-1])


def _mkldnn_rnn_layer_flop(input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int], *args: Any,
                           **kwargs: Any) -> int:
    """One layer and direction on CPU: input (T, B, I), w_ih (G*H, I), w_hh (G*H, H); G gates (4 for LSTM)."""
    return 2 * _tokens(input_shape) * (math.prod(w_ih) + math.prod(w_hh))


def _mkldnn_rnn_layer_backward_flop(input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int],
                                    *args: Any, **kwargs: Any) -> int:
    # Gradients for the inputs and for the weights: two products per forward product, as torch counts mm.
    return 2 * _mkldnn_rnn_layer_flop(input_shape, w_ih, w_hh)


def _cudnn_rnn_flop(input_shape: Sequence[int], weights: Sequence[Sequence[int]], *args: Any, **kwargs: Any) -> int:
    """All layers and directions at once: every weight matrix (w_ih, w_hh, w_hr) multiplies every token."""
    return 2 * _tokens(input_shape) * sum(math.prod(w) for w in weights if len(w) == 2)


def _cudnn_rnn_backward_flop(input_shape: Sequence[int], weights: Sequence[Sequence[int]], *args: Any,
                             **kwargs: Any) -> int:
    return 2 * _cudnn_rnn_flop(input_shape, weights)


def _rnn_formulas() -> dict[Any, Callable[..., int]]:
    formulas = {
        "mkldnn_rnn_layer": _mkldnn_rnn_layer_flop,
        "mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward_flop,
        "_cudnn_rnn": _cudnn_rnn_flop,
        "_cudnn_rnn_backward": _cudnn_rnn_backward_flop,
    }
    # Builds without oneDNN or cuDNN may lack an op; keep the ones this torch knows.
    return {getattr(torch.ops.aten, n): f for n, f in formulas.items() if hasattr(torch.ops.aten, n)}


#: Formulas for the fused RNN kernels FlopCounterMode has none for (op packet -> formula on shapes).
RNN_FLOP_FORMULAS: dict[Any, Callable[..., int]] = _rnn_formulas()


def scalar_loss(output: Any) -> Tensor:
    """The sum of every trainable floating output: what the measured training steps backpropagate.

    A sum reads every output element once; its backward is a broadcast view, so it adds no memory of note.

    Args:
        output: a model's output (a tensor or a nest of them).

    Raises:
        ConfigError: no output depends on trainable parameters.
    """
    floats = [t for t in tree_leaves(output) if isinstance(t, Tensor) and t.is_floating_point() and t.requires_grad]
    if not floats:
        raise ConfigError("cost_report needs a model output that depends on trainable parameters")
    return sum(t.sum() for t in floats)


def count_flops(model: nn.Module, inputs: dict[str, Tensor], *, backward: bool = True) -> tuple[int, int]:
    """FLOPs of one forward pass and of the backward pass that follows, for the whole batch.

    Counted by :class:`~torch.utils.flop_counter.FlopCounterMode` with :data:`RNN_FLOP_FORMULAS` added. The model
    runs in its current mode; parameters' ``.grad`` receive the backward's gradients.

    Args:
        model: the model to run.
        inputs: keyword inputs of ``model``.
        backward: also run and count the backward pass of ``sum(outputs)``.

    Returns:
        ``(forward_flops, backward_flops)``; ``backward_flops`` is 0 when ``backward=False``.

    Example:
        >>> fwd, bwd = count_flops(nn.Linear(3, 4), {"input": torch.randn(2, 3)})
        >>> fwd, bwd  # 2*2*3*4; backward: gradient of the weight only (the input needs none)
        (48, 48)
    """
    with FlopCounterMode(display=False, custom_mapping=RNN_FLOP_FORMULAS) as counter:
        output = model(**inputs)
        forward = counter.get_total_flops()
        if backward:
            scalar_loss(output).backward()
    return forward, counter.get_total_flops() - forward
