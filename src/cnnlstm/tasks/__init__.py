"""Tasks: LightningModules that receive a built model and add the loss, metrics and optimiser.

``build_task(name, model, info, optim)`` makes the task for a recipe; ``task_for_kind(kind)`` names the
task a dataset kind implies (series/frames/images/vqa -> classification, text_image -> ctc, forecast ->
forecasting, captions -> captioning). With ``tbptt_steps`` set, classification trains with truncated
backpropagation through time (:class:`~cnnlstm.tasks.tbptt_classification.TBPTTClassificationTask`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean
from cnnlstm.tasks.base import OptimConfig, Task, TrainingDivergedError
from cnnlstm.tasks.captioning import CaptioningTask
from cnnlstm.tasks.classification import ClassificationTask
from cnnlstm.tasks.ctc import CTCTask
from cnnlstm.tasks.forecasting import ForecastingTask
from cnnlstm.tasks.tbptt_classification import TBPTTClassificationTask

__all__ = [
    "TASKS",
    "KIND_TO_TASK",
    "Task",
    "OptimConfig",
    "TrainingDivergedError",
    "ClassificationTask",
    "CTCTask",
    "ForecastingTask",
    "CaptioningTask",
    "TBPTTClassificationTask",
    "task_for_kind",
    "build_task",
]

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "ctc": CTCTask,
    "forecasting": ForecastingTask,
    "captioning": CaptioningTask,
}

KIND_TO_TASK = {
    "series": "classification",
    "frames": "classification",
    "images": "classification",
    "vqa": "classification",
    "text_image": "ctc",
    "forecast": "forecasting",
    "captions": "captioning",
}


def task_for_kind(kind: str) -> str:
    """The task name a dataset kind implies.

    Example:
        >>> task_for_kind("text_image")
        'ctc'
    """
    try:
        return KIND_TO_TASK[kind]
    except KeyError:
        raise UnknownNameError(f"no task for data of kind {kind!r}; name one with task: "
                               f"{', '.join(TASKS)}") from None


def build_task(name: str, model: nn.Module, info: dict[str, Any] | None = None,
               optim: OptimConfig | dict[str, Any] | None = None, *, tbptt_steps: int | None = None,
               clip_val: float | None = None) -> Task:
    """Build the task ``name`` around ``model``, taking what it needs from a dataset's ``info``.

    Args:
        name: one of :data:`TASKS`.
        model: a built registered model.
        info: ``DatasetBundle.info`` (``class_names``, ``question_types``, ``charset``, ``vocab``, ``data_range``).
        optim: optimiser settings.
        tbptt_steps: train with truncated BPTT in chunks of this many steps (classification only); ``None``: off.
        clip_val: the gradient-norm clip the TBPTT task applies per chunk (the Trainer's is off under it).

    Raises:
        UnknownNameError: ``name`` is not a task.
        ConfigError: ``tbptt_steps`` with a task other than classification, or a model that cannot run in chunks.

    Example:
        >>> task = build_task("classification", model, bundle.info, {"lr": 3e-3})  # doctest: +SKIP
    """
    info = info or {}
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; tasks: {', '.join(TASKS)}")
    if tbptt_steps is not None and name != "classification":
        raise ConfigError(f"trainer.tbptt_steps trains classification only, this recipe's task is {name!r}; "
                          "drop trainer.tbptt_steps")
    if name == "classification" and tbptt_steps is not None:
        return TBPTTClassificationTask(model, tbptt_steps=tbptt_steps, clip_val=clip_val,
                                       class_names=info.get("class_names"),
                                       question_types=info.get("question_types"), optim=optim)
    if name == "classification":
        return ClassificationTask(model, class_names=info.get("class_names"),
                                  question_types=info.get("question_types"), optim=optim)
    if name == "ctc":
        return CTCTask(model, charset=info.get("charset"), optim=optim)
    if name == "forecasting":
        size = info.get("model_kwargs", {}).get("image_size") or info.get("image_size") or (11, 11)
        side = min(size) if isinstance(size, list | tuple) else int(size)
        kernel = min(11, side if side % 2 else side - 1)  # SSIM's window must fit in the frame
        return ForecastingTask(model, data_range=float(info.get("data_range", 1.0)), ssim_kernel=kernel, optim=optim)
    return CaptioningTask(model, vocab=info.get("vocab"), max_length=int(info.get("max_caption_length", 20)),
                          optim=optim)
