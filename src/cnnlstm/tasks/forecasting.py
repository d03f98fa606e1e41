"""Next-frame forecasting: predict the next K frames of a clip from its first T frames.

The loss is the recipe's choice (``optim.loss``, :data:`FORECAST_LOSSES`, MSE by default); the metrics are
MSE, MAE and SSIM of the forecast whatever the loss, plus the MSE of the copy-last-frame baseline (repeat the
last input frame K times), so a number like ``val/mse`` always has its context: a model that does not beat
``val/baseline_mse`` has learned nothing about motion. An MSE-trained forecaster hedges between the futures it
cannot tell apart and blurs; ``bce`` (per-pixel binary cross-entropy, for frames in ``[0, 1]`` such as
digits on black) and ``mse+ssim`` (MSE plus ``1 - SSIM``, which rewards local structure) push towards sharper
frames, ``l1`` towards the per-pixel median.

SSIM is Wang et al. (2004)'s, as scikit-image and the published forecasting tables compute it: a Gaussian
window (11 x 11, sigma 1.5), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, averaged over the positions where the
window fits inside the frame (:func:`frame_ssim`). torchmetrics' SSIM also averages reflect-padded windows over
the border, which on a 32 x 32 frame is more than half the map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection
from torchmetrics.functional.image import structural_similarity_index_measure

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.tasks.base import OptimConfig, Task

if TYPE_CHECKING:
    from cnnlstm.data.info import DataInfo

__all__ = ["FORECAST_LOSSES", "ForecastingTask", "forecast_loss", "frame_ssim", "ssim_sigma"]

#: ``optim.loss`` choices of the forecasting task, the default first
FORECAST_LOSSES = ("mse", "l1", "bce", "mse+ssim")


def ssim_sigma(kernel: int) -> float:
    """The Gaussian SSIM window's sigma for an odd window side: 1.5 at the standard 11, scaled down with it.

    Example:
        >>> ssim_sigma(11), round(ssim_sigma(5), 4)
        (1.5, 0.6818)
    """
    return 1.5 * kernel / 11


def frame_ssim(pred: Tensor, target: Tensor, *, data_range: float = 1.0, sigma: float = 1.5) -> Tensor:
    """SSIM of each frame (Wang et al. 2004): a Gaussian window, averaged where the window fits inside the frame.

    The window's side is ``2 * int(3.5 * sigma + 0.5) + 1`` (11 for sigma 1.5), as in scikit-image's
    ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``; border positions, where the
    window would leave the frame, are not averaged.

    Args:
        pred: frames, compared with ``target``.
        target: reference frames.
        data_range: pixel value range ``L`` (``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``).
        sigma: the Gaussian window's sigma.

    Shape:
        - pred, target: ``(N, C, H, W)`` with ``H`` and ``W`` at least the window's side; output: ``(N,)``.

    Example:
        >>> frames = torch.rand(2, 1, 16, 16)
        >>> frame_ssim(frames, frames).tolist()
        [1.0, 1.0]
    """
    pad = int(3.5 * sigma + 0.5)  # torchmetrics' window is 2 * pad + 1 wide and its map keeps the frame's size
    _, full = structural_similarity_index_measure(pred, target, data_range=data_range, sigma=sigma,
                                                  reduction="none", return_full_image=True)  # (N, C, H, W)
    return full[..., pad : full.shape[-2] - pad, pad : full.shape[-1] - pad].flatten(1).mean(dim=1)  # (N,)


def forecast_loss(name: str, pred: Tensor, target: Tensor, *, data_range: float = 1.0, sigma: float = 1.5) -> Tensor:
    """The forecasting loss ``name`` of a predicted clip, a scalar mean over every pixel (and every window).

    Args:
        name: one of :data:`FORECAST_LOSSES`: ``mse``; ``l1`` (mean absolute error); ``bce`` (binary
            cross-entropy of pixels in ``[0, 1]``, the target read as the probability of a lit pixel);
            ``mse+ssim`` (``mse + 1 - SSIM``, :func:`frame_ssim` with a Gaussian window of ``sigma``).
        pred: predicted frames, in ``[0, 1]`` for ``bce``.
        target: true frames, in ``[0, 1]`` for ``bce``.
        data_range: pixel value range, for SSIM.
        sigma: SSIM's Gaussian window width (1.5 for the standard 11 x 11 window).

    Shape:
        - pred, target: ``(B, K, C, H, W)``; output: ``()``.

    Example:
        >>> pred, target = torch.full((1, 1, 1, 2, 2), 0.5), torch.ones(1, 1, 1, 2, 2)
        >>> round(float(forecast_loss("bce", pred, target)), 4)  # -log(0.5)
        0.6931
    """
    if name == "mse":
        return F.mse_loss(pred, target)
    if name == "l1":
        return F.l1_loss(pred, target)
    if name == "bce":
        # Autocast refuses binary_cross_entropy in half precision (log of a rounded probability); run it in
        # float32, where PyTorch clamps the log at -100 for probabilities of exactly 0 or 1.
        with torch.autocast(pred.device.type, enabled=False):
            return F.binary_cross_entropy(pred.float(), target.float())
    if name == "mse+ssim":
        ssim = frame_ssim(pred.flatten(0, 1), target.flatten(0, 1), data_range=data_range, sigma=sigma)  # (B*K,)
        return F.mse_loss(pred, target) + (1.0 - ssim.mean())
    raise ConfigError(f"unknown forecasting loss {name!r}; optim.loss must be one of {', '.join(FORECAST_LOSSES)}")


class ForecastingTask(Task):
    """Train and evaluate a frame forecaster (``output_kind == "frames"``).

    Logged metrics: ``{stage}/loss`` (the ``optim.loss`` choice, see :func:`forecast_loss`), ``{stage}/mse``,
    ``{stage}/mae``, ``{stage}/ssim`` and ``{stage}/baseline_mse`` (copy the last input frame).

    Args:
        model: a registered model mapping frames (B, T, C, H, W) to (B, K, C, H, W).
        data_range: value range of the pixels, for SSIM (1.0 for frames in [0, 1]).
        ssim_kernel: odd SSIM window side; at most the frames' smaller side.
        optim: optimiser settings; ``optim.loss`` picks the loss from :data:`FORECAST_LOSSES`.

    Shape:
        - batch ``x``: (B, T, C, H, W); ``y``: (B, K, C, H, W).

    Example:
        >>> task = ForecastingTask(create_model("conv_lstm_forecaster", in_channels=1))  # doctest: +SKIP
    """

    monitor = "val/loss"
    monitor_mode = "min"
    loss_choices = FORECAST_LOSSES

    @classmethod
    def info_kwargs(cls, info: DataInfo) -> dict[str, Any]:
        """The data's value range (``extras["data_range"]``) and an SSIM window that fits the frames."""
        size = info.model_kwargs.get("image_size") or info.image_size or (11, 11)
        side = min(size) if isinstance(size, list | tuple) else int(size)
        kernel = min(11, side if side % 2 else side - 1)  # SSIM's window must fit in the frame
        return {"data_range": float(info.extras.get("data_range", 1.0)), "ssim_kernel": kernel}

    def __init__(self, model: nn.Module, *, data_range: float = 1.0, ssim_kernel: int = 11,
                 optim: OptimConfig | dict[str, Any] | None = None) -> None:
        if getattr(model, "output_kind", None) != "frames":
            raise ConfigError("the forecasting task needs a model that outputs frames, "
                              f"{getattr(model, 'model_name', type(model).__name__)} outputs {model.output_kind}")
        self.data_range = float(data_range)
        self.ssim_kernel = int(ssim_kernel)
        self.ssim_sigma = ssim_sigma(self.ssim_kernel)
        super().__init__(model, optim)
        self.loss_name = self.optim.loss or self.loss_choices[0]
        if self.loss_name == "bce" and getattr(model, "output", None) == "clamp":
            # Cross-entropy's gradient at a clipped 0 or 1 is unbounded (log 0); it needs a sigmoid's open interval.
            raise ConfigError("optim.loss 'bce' needs forecasts strictly inside (0, 1), but the model clips them "
                              "(model.output: clamp); set model.output: sigmoid or choose another optim.loss")

    def make_metrics(self, stage: str) -> MetricCollection:
        if stage == "train":
            return MetricCollection({})
        return MetricCollection({
            "mse": MeanSquaredError(),
            "mae": MeanAbsoluteError(),
            "ssim": MeanMetric(),  # of frame_ssim over every predicted frame
            "baseline_mse": MeanSquaredError(),
        })

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        x, y = batch["x"], batch["y"]  # (B, T, C, H, W), (B, K, C, H, W)
        pred = self(batch).float()  # (B, K, C, H, W)
        if pred.shape != y.shape:
            raise ShapeError(f"the forecaster predicts {tuple(pred.shape)} but the data's targets are "
                             f"{tuple(y.shape)}; "
                             "set model.horizon to the data's number of future frames")
        loss = forecast_loss(self.loss_name, pred, y.float(), data_range=self.data_range, sigma=self.ssim_sigma)
        if stage != "train":
            metrics = self.metrics[stage]
            pred, target = pred.detach(), y.float()
            metrics["mse"].update(pred, target)
            metrics["mae"].update(pred, target)
            metrics["ssim"].update(frame_ssim(pred.flatten(0, 1), target.flatten(0, 1), data_range=self.data_range,
                                              sigma=self.ssim_sigma))  # (B*K,): one SSIM per frame
            last = x[:, -1:].float().expand_as(target).contiguous()  # (B, K, C, H, W): copy-last-frame forecast
            metrics["baseline_mse"].update(last, target)
        return loss

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> Tensor:
        """Forecast frames (B, K, C, H, W) for a batch."""
        return self(batch).float()
