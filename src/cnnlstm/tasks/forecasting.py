"""Next-frame forecasting: predict the next K frames of a clip from its first T frames.

MSE loss; metrics MSE, MAE and SSIM of the forecast, plus the MSE of the copy-last-frame baseline
(repeat the last input frame K times), so a number like ``val/mse`` always has its context: a model that
does not beat ``val/baseline_mse`` has learned nothing about motion.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection
from torchmetrics.image import StructuralSimilarityIndexMeasure

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.tasks.base import OptimConfig, Task

__all__ = ["ForecastingTask"]


class ForecastingTask(Task):
    """Train and evaluate a frame forecaster (``output_kind == "frames"``).

    Logged metrics: ``{stage}/loss`` (MSE), ``{stage}/mse``, ``{stage}/mae``, ``{stage}/ssim`` and
    ``{stage}/baseline_mse`` (copy the last input frame).

    Args:
        model: a registered model mapping frames (B, T, C, H, W) to (B, K, C, H, W).
        data_range: value range of the pixels, for SSIM (1.0 for frames in [0, 1]).
        ssim_kernel: odd SSIM window side; at most the frames' smaller side.
        optim: optimiser settings.

    Shape:
        - batch ``x``: (B, T, C, H, W); ``y``: (B, K, C, H, W).

    Example:
        >>> task = ForecastingTask(create_model("conv_lstm_forecaster", in_channels=1))  # doctest: +SKIP
    """

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(self, model: nn.Module, *, data_range: float = 1.0, ssim_kernel: int = 11,
                 optim: OptimConfig | dict[str, Any] | None = None) -> None:
        if getattr(model, "output_kind", None) != "frames":
            raise ConfigError("the forecasting task needs a model that outputs frames, "
                              f"{getattr(model, 'model_name', type(model).__name__)} outputs {model.output_kind}")
        self.data_range = float(data_range)
        self.ssim_kernel = int(ssim_kernel)
        super().__init__(model, optim)

    def make_metrics(self, stage: str) -> MetricCollection:
        if stage == "train":
            return MetricCollection({})
        return MetricCollection({
            "mse": MeanSquaredError(),
            "mae": MeanAbsoluteError(),
            "ssim": StructuralSimilarityIndexMeasure(  # Gaussian window: sigma 1.5 for the standard 11, scaled down
                data_range=self.data_range, sigma=1.5 * self.ssim_kernel / 11),
            "baseline_mse": MeanSquaredError(),
        })

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        x, y = batch["x"], batch["y"]  # (B, T, C, H, W), (B, K, C, H, W)
        pred = self(batch).float()  # (B, K, C, H, W)
        if pred.shape != y.shape:
            raise ShapeError(f"the forecaster predicts {tuple(pred.shape)} but the data's targets are "
                             f"{tuple(y.shape)}; "
                             "set model.horizon to the data's number of future frames")
        loss = F.mse_loss(pred, y)
        if stage != "train":
            metrics = self.metrics[stage]
            pred, target = pred.detach(), y.float()
            metrics["mse"].update(pred, target)
            metrics["mae"].update(pred, target)
            metrics["ssim"].update(pred.flatten(0, 1), target.flatten(0, 1))  # (B*K, C, H, W)
            last = x[:, -1:].float().expand_as(target).contiguous()  # (B, K, C, H, W): copy-last-frame forecast
            metrics["baseline_mse"].update(last, target)
        return loss

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> Tensor:
        """Forecast frames (B, K, C, H, W) for a batch."""
        return self(batch).float()
