"""Tasks: LightningModules that receive a built model and add the loss, metrics and optimiser.

``build_task(name, model, info, optim)`` makes the task for a recipe; ``task_for_kind(kind)`` names the
task a dataset kind implies (series/frames/images/vqa -> classification, text_image -> ctc, forecast ->
forecasting, captions -> captioning). With ``tbptt_steps`` set, classification trains with truncated
backpropagation through time (:class:`~cnnlstm.tasks.tbptt_classification.TBPTTClassificationTask`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnlstm.data.info import DataInfo
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
    "TBPTT_TASKS",
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

#: the task that trains a name of :data:`TASKS` with truncated BPTT (``trainer.tbptt_steps``)
TBPTT_TASKS: dict[str, type[Task]] = {"classification": TBPTTClassificationTask}

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


def build_task(name: str, model: nn.Module, info: DataInfo | None = None,
               optim: OptimConfig | dict[str, Any] | None = None, *, tbptt_steps: int | None = None,
               clip_val: float | None = None) -> Task:
    """Build the task ``name`` around ``model``, taking what it needs from a dataset's ``info``.

    Each task declares what it reads from the data in its ``info_kwargs`` (:meth:`Task.info_kwargs`), so a new
    task only needs an entry in :data:`TASKS`.

    Args:
        name: one of :data:`TASKS`.
        model: a built registered model.
        info: ``DatasetBundle.info`` or a run's ``data_info.json`` read back (``DataInfo.from_dict``).
        optim: optimiser settings.
        tbptt_steps: train with truncated BPTT in chunks of this many steps (classification only); ``None``: off.
        clip_val: the gradient-norm clip the TBPTT task applies per chunk (the Trainer's is off under it).

    Raises:
        UnknownNameError: ``name`` is not a task.
        ConfigError: ``tbptt_steps`` with a task other than classification, or a model that cannot run in chunks.

    Example:
        >>> task = build_task("classification", model, bundle.info, {"lr": 3e-3})  # doctest: +SKIP
    """
    info = info or DataInfo()
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; tasks: {', '.join(TASKS)}")
    if tbptt_steps is not None and name not in TBPTT_TASKS:
        raise ConfigError(f"trainer.tbptt_steps trains {', '.join(TBPTT_TASKS)} only, this recipe's task is "
                          f"{name!r}; drop trainer.tbptt_steps")
    if tbptt_steps is not None:
        cls = TBPTT_TASKS[name]
        return cls(model, tbptt_steps=tbptt_steps, clip_val=clip_val, optim=optim, **cls.info_kwargs(info))
    cls = TASKS[name]
    return cls(model, optim=optim, **cls.info_kwargs(info))
