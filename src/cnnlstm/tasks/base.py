"""What every task shares: calling the model, the optimiser and schedule, per-epoch metric logging, and
stopping cleanly when the loss stops being a number.

A task is a LightningModule that receives a built model (a registered ``nn.Module``) and adds the loss,
the metrics and the optimiser. Subclasses implement :meth:`Task.step` (loss + metric updates for one batch)
and :meth:`Task.make_metrics` (a fresh ``MetricCollection`` for one stage).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from cnnlstm.config import SCHEDULERS, OptimConfig
from cnnlstm.errors import CnnLstmError, ConfigError, did_you_mean
from cnnlstm.tasks.graphs import GraphedForward
from cnnlstm.tasks.loss_reader import DeferredLoss, LossReading
from cnnlstm.tasks.weighted_mean import WeightedMean

if TYPE_CHECKING:
    from cnnlstm.data.info import DataInfo

__all__ = ["OptimConfig", "Task", "StageDict", "TrainingDivergedError", "SCHEDULERS"]

def use_fused_adamw(params: list[nn.Parameter], *, loss_scaled: bool) -> bool | None:
    """``fused=`` for AdamW: fused on CUDA (one kernel per step), PyTorch's default elsewhere or under loss scaling."""
    return True if params and all(p.is_cuda for p in params) and not loss_scaled else None


class StageDict(nn.ModuleDict):
    """A ModuleDict keyed by stage (``"train"``, ``"val"``, ``"test"``).

    ``"train"`` would clash with ``nn.Module.train``, so keys are stored with a trailing underscore.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__({f"{k}_": v for k, v in modules.items()})

    def __getitem__(self, key: str) -> nn.Module:
        return super().__getitem__(f"{key}_")

    def __contains__(self, key: object) -> bool:
        return super().__contains__(f"{key}_")


class TrainingDivergedError(CnnLstmError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class Task(pl.LightningModule):
    """Base LightningModule: model call, AdamW + schedule, epoch metrics and a NaN/inf guard.

    Each stage (``train``, ``val``, ``test``) has a mean-loss metric and a ``MetricCollection``; they are
    updated per batch, computed (and synchronised across processes by torchmetrics) once per epoch and
    logged as plain floats under ``stage/name``, e.g. ``val/acc``. Computed epochs are kept in
    :attr:`history` (one dict per epoch) for learning curves, and the last test epoch in
    :attr:`test_results`.

    Args:
        model: a registered model; it is called as ``model(**{k: batch[k] for k in model.input_names})``.
        optim: optimiser settings, the recipe's typed ``optim`` section (a dict is converted to
            :class:`~cnnlstm.config.OptimConfig`).

    Example:
        >>> task = ClassificationTask(create_model("lstm_fcn", in_channels=3, num_classes=4))  # doctest: +SKIP
    """

    #: the metric that chooses the best checkpoint and drives early stopping, and whether higher is better
    monitor: str = "val/loss"
    monitor_mode: str = "min"
    #: read training losses one step late (see :class:`DeferredLoss`): ``None`` does so on GPUs only
    defer_loss_reads: bool | None = None
    #: the objectives ``optim.loss`` may name, default first; empty: the task's loss is fixed
    loss_choices: tuple[str, ...] = ()
    #: whether the task trains with ``optim.mixup`` (classification); others refuse it
    supports_mixup: bool = False

    @classmethod
    def info_kwargs(cls, info: DataInfo) -> dict[str, Any]:
        """The constructor kwargs this task takes from a dataset's :class:`~cnnlstm.data.info.DataInfo`.

        :func:`cnnlstm.tasks.build_task` calls ``cls(model, optim=..., **cls.info_kwargs(info))``; a task
        overrides this to declare what it needs from the data (class names, character set, vocabulary, ...).
        """
        return {}

    def __init__(self, model: nn.Module, optim: OptimConfig | dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimConfig) else OptimConfig(**(optim or {}))
        if self.optim.loss is not None and self.optim.loss not in self.loss_choices:
            choices = self.loss_choices
            choices = f"one of {', '.join(choices)}" if choices else "not set: this task's loss is fixed"
            raise ConfigError(f"optim.loss {self.optim.loss!r} does not apply to {type(self).__name__}; it must be "
                              f"{choices}{did_you_mean(self.optim.loss, self.loss_choices)}")
        if self.optim.mixup and not self.supports_mixup:
            raise ConfigError(f"optim.mixup blends class labels and applies to classification only, not "
                              f"{type(self).__name__}; set optim.mixup=0")
        # Only primitives go into the checkpoint's hyper-parameters, so it loads with weights_only=True.
        self.save_hyperparameters({"optim": asdict(self.optim)})
        # WeightedMean, not MeanMetric: no host-side NaN check (a device sync per step on a GPU); a NaN training
        # loss stops training anyway, and a NaN evaluation loss shows as NaN instead of being dropped.
        self.losses = StageDict({s: WeightedMean() for s in ("train", "val", "test")})
        self.metrics = StageDict({s: self.make_metrics(s) for s in ("train", "val", "test")})
        # A training epoch's running loss and metrics go into checkpoints, so a mid-epoch resume reports the
        # same epoch mean as an uninterrupted run (evaluation stages are reset before they are saved).
        self.losses["train"].persistent(True)
        self.metrics["train"].persistent(True)
        self.history: list[dict[str, float]] = []
        self.test_results: dict[str, float] = {}
        self.augmentation: nn.Module | None = None
        self.batch_augmentation: nn.Module | None = None
        self.augment_key = "x"
        self._train_epoch_finished = -1
        self.loss_reader = DeferredLoss(self.defer_loss_reads)
        #: the latest training loss, shown by the engine's progress bar (no per-step ``self.log``: Lightning's
        #: logging costs about a millisecond of host time a step, as much as a small model's whole step)
        self.bar_loss: float | Tensor | None = None
        self._pending_train_updates: list[tuple[Tensor, ...]] = []
        self.graphs: GraphedForward | None = None  # trainer.cuda_graphs (use_cuda_graphs)

    # -- subclass interface -------------------------------------------------------------------------------
    def make_metrics(self, stage: str) -> MetricCollection:
        """A fresh collection of metrics for ``stage`` (names without the stage prefix)."""
        return MetricCollection({})

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        """Loss for one batch; updates ``self.metrics[stage]``. Implemented by each task."""
        raise NotImplementedError

    def on_stage_epoch_end(self, stage: str, values: dict[str, float]) -> None:
        """Hook for extras computed at the end of an epoch (confusion matrix, per-group metrics)."""

    # -- training-only augmentation -------------------------------------------------------------------------
    def set_augmentation(self, augmentation: nn.Module | None, key: str = "x",
                         batch_augmentation: nn.Module | None = None) -> None:
        """Augment ``batch[key]`` of training batches only (validation, test and predict never see it).

        Args:
            augmentation: called as ``augmentation(x, lengths)``, e.g. from
                :func:`cnnlstm.data.augment.build_augmentation`; ``None`` removes it.
            key: the batch entry to augment (``"x"``, ``"image"`` or ``"images"``).
            batch_augmentation: called on the whole batch dict after ``augmentation`` (a transform that changes
                several entries together, e.g. :class:`~cnnlstm.data.augment.QuestionFlip`); ``None`` for none.
        """
        self.augmentation = augmentation
        self.augment_key = key
        self.batch_augmentation = batch_augmentation

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The training batch with its input augmented (a new dict; the input batch is not changed)."""
        if self.augmentation is not None and self.augment_key in batch:
            lengths = batch.get("lengths") if self.augment_key == "x" else None
            self.augmentation.train(True)
            batch = {**batch, self.augment_key: self.augmentation(batch[self.augment_key], lengths)}
        if self.batch_augmentation is not None:
            self.batch_augmentation.train(True)
            batch = self.batch_augmentation(batch)
        return batch

    def _generators(self) -> list[torch.Generator]:
        if self.augmentation is None:
            return []
        found = {id(g): g for m in self.augmentation.modules() if (g := getattr(m, "generator", None)) is not None}
        return list(found.values())

    def reseed_augmentation(self, seed: int) -> None:
        """Reseed the augmentation's own generators (transforms without one draw from torch's global RNG)."""
        for generator in self._generators():
            generator.manual_seed(seed)

    def augmentation_state(self) -> list[Tensor]:
        """States of the augmentation's generators (for mid-epoch checkpoints)."""
        return [g.get_state() for g in self._generators()]

    def load_augmentation_state(self, states: list[Tensor]) -> None:
        """Restore :meth:`augmentation_state`."""
        for generator, state in zip(self._generators(), states, strict=True):
            generator.set_state(state)

    # -- checkpoints ----------------------------------------------------------------------------------------
    def update_train_metrics(self, *args: Tensor) -> None:
        """Queue one training batch's ``self.metrics["train"].update(*args)``; applied in one call later.

        A torchmetrics update per step costs more host time than a small model's forward; training metrics are
        read once an epoch, so their updates wait and run as one update over the concatenated batches (the same
        states: accuracy and F1 count, and counts add up). Anything that reads the state applies them first:
        the epoch's end and :meth:`state_dict` (so a checkpoint written mid-epoch holds every step's counts).

        Args:
            args: batch-first tensors, as the stage's metrics take them (e.g. predictions and targets).
        """
        self._pending_train_updates.append(tuple(a.detach() for a in args))

    def flush_train_metrics(self) -> None:
        """Apply the queued training-metric updates (see :meth:`update_train_metrics`)."""
        if self._pending_train_updates:
            pending, self._pending_train_updates = self._pending_train_updates, []
            self.metrics["train"].update(*(torch.cat(parts) for parts in zip(*pending, strict=True)))

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.flush_train_metrics()  # a checkpoint's training metrics count every step taken so far
        return super().state_dict(*args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.read_loss(self.loss_reader.flush())  # a loss read late must not let diverged weights into a checkpoint
        checkpoint["cnnlstm_history"] = [dict(row) for row in self.history]
        checkpoint["cnnlstm_train_epoch_finished"] = self._train_epoch_finished

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = [dict(row) for row in checkpoint.get("cnnlstm_history", [])]
        self._train_epoch_finished = int(checkpoint.get("cnnlstm_train_epoch_finished", -1))

    # -- shared machinery ---------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Call the model with the batch entries it names in ``input_names`` (from CUDA graphs when
        :meth:`use_cuda_graphs` turned them on and the call is a training forward on a GPU)."""
        inputs = {k: batch[k] for k in self.model.input_names if k in batch}
        if self.graphs is not None:
            return self.graphs(inputs)
        return self.model(**inputs)

    def use_cuda_graphs(self, enabled: bool, max_graphs: int = 2) -> None:
        """Replay the model's training forward and backward from CUDA graphs (``trainer.cuda_graphs``).

        A no-op for calls on a CPU, in evaluation or in ``eval()`` mode; see :mod:`cnnlstm.tasks.graphs`.
        """
        self.graphs = GraphedForward(self.model, max_graphs=max_graphs) if enabled else None

    def _shared_step(self, batch: dict[str, Any], stage: str) -> Tensor:
        loss = self.step(batch, stage)
        self.losses[stage].update(loss.detach(), weight=self._batch_size(batch))
        return loss

    @staticmethod
    def _batch_size(batch: dict[str, Any]) -> int:
        return next(len(v) for v in batch.values() if isinstance(v, Tensor | list))

    def check_loss_finite(self, loss: Tensor) -> None:
        """Stop training when ``loss`` is NaN or infinite on any process (call it before its backward).

        Reads the loss at once (a device sync on a GPU); :meth:`training_step` reads through
        :attr:`loss_reader` instead, one step late on a GPU.

        Raises:
            TrainingDivergedError: the loss is not finite here or on another process.
        """
        self.read_loss(LossReading(float(loss.detach()), self.current_epoch, self.global_step))

    def read_loss(self, reading: LossReading | None, batch_size: int | None = None) -> None:
        """Stop on a diverged loss reading, else show it in the progress bar.

        A deferred reading (on a GPU) arrives one step after its loss: by then that step's update has been
        applied, so every checkpoint save first flushes the reader (:meth:`on_save_checkpoint`) and the last
        good checkpoint never holds the diverged weights.

        Args:
            reading: the loss read on the host, or ``None`` (nothing due yet).
            batch_size: the batch's size; ``None`` marks a flush, which leaves the progress bar's loss as it is.

        Raises:
            TrainingDivergedError: the loss is not finite here or on another process.
        """
        if reading is None:
            return
        # Every process must agree before raising, or the others would wait forever in the gradient all-reduce.
        diverged = self.trainer.strategy.reduce_boolean_decision(not reading.finite, all=False)
        if diverged:
            raise TrainingDivergedError(
                f"training stopped at epoch {reading.epoch + 1}, step {reading.step}: the loss became "
                f"{reading.value}; lower optim.lr, keep trainer.gradient_clip_val on, or check the data for extreme "
                "values (the last good checkpoint is kept in the run's checkpoints/)"
            )
        if batch_size is not None:
            self.bar_loss = reading.value  # a float already read on the host: the bar shows it without a sync

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.step(self.augment(batch), "train")
        self.losses["train"].update(loss.detach(), weight=self._batch_size(batch))
        reading = self.loss_reader.push(loss, epoch=self.current_epoch, step=self.global_step)
        self.read_loss(reading, self._batch_size(batch))  # on a CPU before this loss's backward, on a GPU after
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _epoch_end(self, stage: str) -> dict[str, float]:
        # compute() synchronises metric states across processes, so every rank logs the same exact values.
        if stage == "train":
            self.flush_train_metrics()
        values = {"loss": float(self.losses[stage].compute())}
        for name, value in self.metrics[stage].compute().items():
            values[name] = float(value)
        self.losses[stage].reset()
        self.metrics[stage].reset()
        self.on_stage_epoch_end(stage, values)
        named = {f"{stage}/{k}": v for k, v in values.items()}
        self.log_dict(named, prog_bar=stage == "val", sync_dist=False)
        return named

    def _record(self, named: dict[str, float]) -> None:
        epoch = self.current_epoch + 1
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append({"epoch": epoch})
        self.history[-1].update(named)

    def finish_train_epoch(self) -> None:
        """Compute and record the epoch's training metrics, once per epoch (callbacks may call it early)."""
        if self._train_epoch_finished == self.current_epoch:
            return
        self._train_epoch_finished = self.current_epoch
        self._record(self._epoch_end("train"))

    def on_fit_start(self) -> None:
        if self.graphs is not None and self.trainer.world_size > 1:
            raise ConfigError(f"trainer.cuda_graphs runs on one GPU; this run has {self.trainer.world_size} "
                              "processes: set trainer.devices=1 or drop trainer.cuda_graphs")
        if self.graphs is not None and self.device.type != "cuda":
            warnings.warn(f"trainer.cuda_graphs has no effect on {self.device.type}: training runs without graphs",
                          stacklevel=1)

    def on_train_epoch_end(self) -> None:
        self.read_loss(self.loss_reader.flush())
        self.finish_train_epoch()

    def on_train_end(self) -> None:
        self.read_loss(self.loss_reader.flush())

    def on_validation_epoch_end(self) -> None:
        named = self._epoch_end("val")
        if not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self._record(named)

    def on_test_epoch_end(self) -> None:
        self.test_results = self._epoch_end("test")

    def _param_groups(self, params: list[nn.Parameter]) -> list[dict[str, Any]]:
        """One group at ``optim.lr``, or, with ``optim.encoder_lr``, the encoder's trainable parameters apart."""
        if self.optim.encoder_lr is None:
            return [{"params": params}]
        model = getattr(self.model, "model", self.model)  # a cached-features wrapper holds the full model
        encoder = getattr(model, "encoder", None)
        name = getattr(model, "model_name", type(model).__name__)
        if encoder is None:
            raise ConfigError(f"optim.encoder_lr is set but {name} has no encoder; remove it")
        in_encoder = {id(p) for p in encoder.parameters()}
        encoder_params = [p for p in params if id(p) in in_encoder]
        if not encoder_params:
            raise ConfigError(f"optim.encoder_lr is set but the encoder of {name} is frozen "
                              f"(freeze={getattr(encoder, 'frozen', '?')!r}); unfreeze stages (model.freeze: N) or "
                              "remove it")
        rest = [p for p in params if id(p) not in in_encoder]
        return [{"params": rest}, {"params": encoder_params, "lr": self.optim.encoder_lr}]

    def _loss_scaled(self) -> bool:
        """Whether the Trainer scales the loss (``16-mixed``): then the gradients must be unscaled before clipping."""
        plugin = getattr(self._trainer, "precision_plugin", None) if self._trainer is not None else None
        return getattr(plugin, "scaler", None) is not None

    def clip_gradients(self, optimizer: Any, gradient_clip_val: float | None = None,
                       gradient_clip_algorithm: str | None = None) -> None:
        """Clip as Lightning does, and also for a fused optimiser under ``bf16-mixed``.

        Lightning's mixed-precision plugin refuses to clip for any optimiser that unscales gradients inside its
        step (fused AdamW), because under fp16 loss scaling the gradients it would clip are still scaled. Under
        ``bf16-mixed`` nothing is scaled, so the gradients are true and are clipped here directly (the same
        ``clip_grad_norm_`` / ``clip_grad_value_`` Lightning itself calls).
        """
        if (gradient_clip_val and getattr(optimizer, "_step_supports_amp_scaling", False)
                and not self._loss_scaled()):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":  # a str or Lightning's GradClipAlgorithmType (a str enum)
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                               gradient_clip_algorithm=gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"{getattr(self.model, 'model_name', 'the model')} has no trainable parameters; "
                              "unfreeze part of it (model.freeze)")
        # One fused kernel per step on a GPU instead of a launch per parameter group and operation (Lightning
        # moves the model to its device before it asks for the optimiser); not under fp16 loss scaling, where a
        # fused step unscales inside itself and gradient clipping could not see true gradients first.
        fused = use_fused_adamw(params, loss_scaled=self._loss_scaled())
        optimizer = torch.optim.AdamW(self._param_groups(params), lr=self.optim.lr,
                                      weight_decay=self.optim.weight_decay, fused=fused)
        if self.optim.scheduler == "cosine":
            t_max = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        if self.optim.scheduler == "plateau":
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}}
        return optimizer

