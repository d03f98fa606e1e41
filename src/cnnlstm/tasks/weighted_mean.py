"""A weighted mean metric that never reads its inputs on the host."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["WeightedMean"]


class WeightedMean(Metric):
    """``sum(value * weight) / sum(weight)`` over every update, summed across processes.

    torchmetrics' ``MeanMetric`` checks each update for NaN on the host (a device sync per step on a GPU), and
    its ``nan_strategy="disable"`` drops the weights. This mean does neither: NaN propagates into the result,
    where it belongs for a loss. A mean of no weight is NaN.

    Args:
        **kwargs: torchmetrics ``Metric`` options.

    Shape:
        - value: any shape; weight: broadcastable to it.

    Example:
        >>> m = WeightedMean()
        >>> m.update(torch.tensor(2.0), weight=3)
        >>> m.update(torch.tensor([1.0, 0.0]), weight=torch.tensor([1.0, 0.0]))
        >>> float(m.compute())
        1.75
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # MeanMetric's state names and dtype, so checkpoints written with it still load.
        self.add_state("mean_value", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: Tensor | float = 1.0) -> None:
        """Add ``value`` with ``weight`` (a scalar weight applies to every element)."""
        value = torch.as_tensor(value, device=self.weight.device).float()
        weight = torch.broadcast_to(torch.as_tensor(weight, device=self.weight.device).float(), value.shape)
        self.mean_value += (value * weight).sum()  # the weighted sum, named as MeanMetric names it
        self.weight += weight.sum()

    def compute(self) -> Tensor:
        """The weighted mean (NaN when no weight was seen)."""
        return self.mean_value / self.weight
