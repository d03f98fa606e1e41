"""CUDA graphs for a model's training forward and backward (``trainer.cuda_graphs``).

A training step of a small or mid-sized model on a fast GPU is often bound by the host: Python and the CUDA
driver launch hundreds of kernels a step, and the GPU waits between them. A CUDA graph records the launches of
one forward and one backward once and replays them with a single call, so the host cost of the model's part of
the step no longer grows with its kernel count. :class:`GraphedForward` keeps one graph pair per input
signature (shapes, dtypes, which parameters train, the autocast state), made with
:func:`torch.cuda.make_graphed_callables`; the loss, the optimiser step and the metrics stay eager around it.

What a graph needs, and what happens otherwise:

- Static shapes. Each new signature is captured once (a few warm-up passes plus the capture); after
  ``max_graphs`` signatures (a full batch and the last, smaller one) further ones run eagerly, with one warning.
- No host synchronisation inside the forward (a ``.item()``, a data-dependent branch): capture then fails, a
  warning names the error, and that model trains eagerly from then on.
- Tensor inputs only; other inputs run eagerly.
- Changing which parameters train (``optim.unfreeze_at_epoch``) is a new signature: it is captured again.

Capturing runs the model's forward a few times on the first batch of a signature; the buffers those passes
update (batch-norm running statistics) are put back afterwards, so the statistics see every batch once, as
in eager training. Randomness (dropout) draws from the same generator, at other offsets than eager training.

Only the training forward is graphed: evaluation, prediction and a model in ``eval()`` mode run eagerly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GraphedForward"]

#: make_graphed_callables' signature: (module, sample_args) -> the module, its training forward now replayed
GraphMaker = Callable[[nn.Module, tuple[Tensor, ...]], nn.Module]


class _Positional(nn.Module):
    """Calls ``model(**dict(zip(names, args)))``: graphed callables take positional tensors only."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args: Tensor) -> Any:
        return self.model(**dict(zip(self.names, args, strict=True)))


def _make_graphed(module: nn.Module, args: tuple[Tensor, ...]) -> nn.Module:
    # allow_unused_input: a parameter the forward never reads (a head a model keeps but skips) gets no gradient,
    # as in eager training, instead of failing the capture
    return torch.cuda.make_graphed_callables(module, args, allow_unused_input=True)


class GraphedForward:
    """Run ``model``'s training forward (and so its backward) from CUDA graphs, one per input signature.

    Not an ``nn.Module``: it holds the model without registering it, so the task's ``state_dict`` and
    checkpoints are unchanged.

    Args:
        model: the task's model (its parameters are the graphs' parameters; they must not be replaced).
        max_graphs: signatures captured at most; later ones run eagerly.
        make_graphed: the capture function (:func:`torch.cuda.make_graphed_callables`; tests pass a stand-in).
        device_type: the device whose tensors are graphed (``cuda``; tests of the bookkeeping use ``cpu``).

    Example:
        >>> graphs = GraphedForward(model)  # doctest: +SKIP
        >>> logits = graphs({"x": x})  # training mode, CUDA tensors: replayed from a graph  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, *, max_graphs: int = 2, make_graphed: GraphMaker = _make_graphed,
                 device_type: str = "cuda") -> None:
        self.model = model
        self.device_type = device_type
        self.max_graphs = max_graphs
        self.make_graphed = make_graphed
        self.graphs: dict[tuple[Any, ...], nn.Module] = {}
        self.failed: str | None = None  # the capture error, once a capture failed: eager from then on
        self._warned_full = False

    def signature(self, inputs: dict[str, Tensor]) -> tuple[Any, ...]:
        """What a graph is specific to: the inputs' names, shapes, dtypes and devices, the trainable
        parameters, and the autocast state the forward runs under."""
        tensors = tuple((k, tuple(v.shape), v.dtype, v.device) for k, v in inputs.items())
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        autocast = (torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type))
        return tensors, trainable, autocast

    def eligible(self, inputs: dict[str, Any]) -> bool:
        """Whether this call may use a graph: a training forward with gradients, on the GPU's tensors only."""
        return (self.failed is None and self.model.training and torch.is_grad_enabled() and bool(inputs)
                and all(isinstance(v, Tensor) and v.device.type == self.device_type for v in inputs.values()))

    def __call__(self, inputs: dict[str, Any]) -> Any:
        if not self.eligible(inputs):
            return self.model(**inputs)
        key = self.signature(inputs)
        graphed = self.graphs.get(key)
        if graphed is None:
            if len(self.graphs) >= self.max_graphs:
                if not self._warned_full:
                    self._warned_full = True
                    warnings.warn(f"trainer.cuda_graphs: more than {self.max_graphs} batch shapes; the others train "
                                  "without a graph (batches of one shape replay one graph: drop or pad the "
                                  "ragged ones)", stacklevel=2)
                return self.model(**inputs)
            graphed = self._capture(inputs)
            if graphed is None:
                return self.model(**inputs)
            self.graphs[key] = graphed
        return graphed(*inputs.values())

    def _capture(self, inputs: dict[str, Tensor]) -> nn.Module | None:
        """Capture one signature; ``None`` (and eager training from then on) if the model cannot be captured."""
        names = tuple(inputs)
        # The graph's static inputs: every later batch is copied into them, so they must be private tensors (the
        # first batch may be a view into data the caller keeps, e.g. a dataset resident on the GPU).
        args = tuple(v.detach().clone() for v in inputs.values())
        saved = [b.detach().clone() for b in self.model.buffers()]  # the warm-up passes update running stats
        enabled, dtype = torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type)
        try:
            # make_graphed_callables refuses autocast's weight cache (cast weights cached across the capture)
            with torch.autocast(self.device_type, dtype=dtype, enabled=enabled, cache_enabled=False):
                graphed = self.make_graphed(_Positional(self.model, names), args)
        except Exception as err:  # noqa: BLE001 - any capture failure: train eagerly, say why once
            self.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            warnings.warn(f"trainer.cuda_graphs: this model cannot be captured in a CUDA graph ({self.failed}); "
                          "it trains without graphs", stacklevel=3)
            graphed = None
        finally:
            with torch.no_grad():
                for buffer, value in zip(self.model.buffers(), saved, strict=True):
                    buffer.copy_(value)
        return graphed
