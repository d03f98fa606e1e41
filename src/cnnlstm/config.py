"""Typed recipe sections: the default and the type of every recipe key, written once.

A recipe stays plain YAML (a mapping of sections); these dataclasses describe it. Each field's annotation is
the key's type, its default the value a recipe does not have to spell out, and ``__post_init__`` checks a
value that must lie in a range. :mod:`cnnlstm.engine.recipe` derives its schema (``SCHEMA``) and defaults
(``DEFAULTS``) from them, and the tasks take :class:`OptimConfig` directly, so no default is written twice.

Dataclasses rather than pydantic: the sections need defaults, a type per key and a few range checks, which the
standard library gives; the schema walk and the one-line, did-you-mean errors cnnlstm prints are its own either
way, and the library adds no dependency (and no second validation layer with its own messages) for them.

A field whose default is :data:`UNSET` has no recipe default: the key is left out of a resolved recipe unless
the recipe names it (Lightning's own default applies to ``trainer.min_epochs``, a recipe without ``pretrain``
has no pretraining stage). A ``dict[str, Any]`` field is an open section whose keys someone else checks (the
model constructor, the data loader, ``cnnlstm tune``).

Example:
    >>> OptimConfig(lr=3e-3, scheduler="none").scheduler
    'none'
    >>> TrainerConfig().max_epochs
    20
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any

from cnnlstm.errors import ConfigError

__all__ = ["UNSET", "SCHEDULERS", "DataConfig", "SwaConfig", "OptimConfig", "TrainerConfig", "EarlyStoppingConfig",
           "PretrainConfig", "RecipeConfig", "section_defaults", "section_from_dict", "section_to_dict", "field_types",
           "nested_section"]

SCHEDULERS = ("cosine", "plateau", "none")
#: how an ensemble combines its members' probabilities (``trainer.ensemble_weights``)
ENSEMBLE_WEIGHTS = ("mean", "fit", "words")


class _Unset:
    """The default of a key without a recipe default; such keys stay out of a resolved recipe."""

    def __repr__(self) -> str:
        return "UNSET"

    def __deepcopy__(self, memo: dict) -> _Unset:
        return self


UNSET: Any = _Unset()


@dataclass
class DataConfig:
    """A recipe's ``data`` section (and ``pretrain.data``).

    Args:
        spec: the dataset spec (``ucr:GunPoint``, ``frames:DIR``, ``builtin:moving_digits``); required.
        val_fraction: the share of the training split carved off for validation, in (0, 1).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes.
        pin_memory: page-locked host batches (faster copies to a GPU).
        persistent_workers: keep DataLoader workers alive between epochs.
        options: keyword arguments of the data source (checked by the loader).
        augment: training-only augmentation (checked by :func:`cnnlstm.data.augment.build_augmentation`).
        feature_cache: cache frozen encoder features of frames data: ``auto``, ``true`` or ``false``.
        feature_cache_dtype: the cache's dtype, ``float32`` or ``float16`` (half the bytes).
        group_batches: fill each training batch with whole groups (every question about one image, as the data
            names them in ``info.groups``) instead of samples drawn one by one; the order of the groups, and
            within each group, is still shuffled every epoch. With ``multi_input`` the CNN then encodes each
            image of a batch once (``image_id``), not once per question.
    """

    spec: str = UNSET
    val_fraction: float = 0.2
    batch_size: int = 32
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    options: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, Any] = field(default_factory=dict)
    feature_cache: bool | str = "auto"
    feature_cache_dtype: str = "float32"
    group_batches: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass
class SwaConfig:
    """``optim.swa``: stochastic weight averaging (Lightning's ``StochasticWeightAveraging``).

    Args:
        lr: the learning rate weight averaging anneals to.
        start_epoch: the first averaged epoch (1-based int) or a fraction of ``max_epochs`` in (0, 1].
        annealing_epochs: epochs to anneal from the schedule's rate to ``lr``.
    """

    lr: float = 1e-4
    start_epoch: int | float = 0.8
    annealing_epochs: int = 1

    def __post_init__(self) -> None:
        start = self.start_epoch
        if isinstance(start, float) and not 0.0 < start <= 1.0:
            raise ConfigError(f"optim.swa.start_epoch is an epoch (int >= 1) or a fraction of max_epochs in (0, 1], "
                              f"got {start}")
        if isinstance(start, int) and start < 1:
            raise ConfigError(f"optim.swa.start_epoch must be >= 1 (1-based epoch), got {start}")
        if not self.lr > 0:
            raise ConfigError(f"optim.swa.lr must be > 0, got {self.lr}")


@dataclass
class OptimConfig:
    """Optimiser settings of a recipe's ``optim`` section (AdamW plus an optional schedule).

    Args:
        lr: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        scheduler: ``"cosine"`` (anneal to 0 over ``max_epochs``), ``"plateau"`` (halve when ``val/loss``
            stalls for 3 epochs) or ``"none"``.
        label_smoothing: cross-entropy label smoothing (classification and captioning); training loss only,
            validation and test losses are plain cross-entropy, so they stay comparable across recipes.
        swa: stochastic weight averaging settings (a :class:`SwaConfig`; a mapping is converted) or ``None``;
            read by the engine's trainer, which adds Lightning's ``StochasticWeightAveraging``.
        loss: the training objective, where a task offers a choice (its ``Task.loss_choices``; forecasting:
            ``mse``, ``l1``, ``bce``, ``mse+ssim``); ``None`` is the task's default (its first choice).
        encoder_lr: learning rate of the model's trainable encoder parameters (fine-tuning a pretrained encoder
            usually wants 10-100x less than the new layers), or ``None`` for ``lr`` everywhere.
        unfreeze_at_epoch: keep the whole encoder frozen for this many epochs, then train what ``model.freeze``
            leaves trainable (at ``encoder_lr``, or ``lr`` without it): the frozen-then-unfrozen schedule, applied by
            ``cnnlstm.engine.unfreeze.EncoderUnfreeze``; ``None``: ``model.freeze`` from the first epoch.
        mixup: mixup's Beta(alpha, alpha) parameter for classification training batches (Zhang et al. 2018):
            each batch is blended with a shuffled copy of itself (float inputs; lengths take the longer) and the
            loss with both labels in the same proportion; ``0`` (default) is off. Typical values: 0.1-0.4.

    Example:
        >>> OptimConfig(swa={"lr": 0.01}).swa.annealing_epochs
        1
    """

    lr: float = 1e-3
    weight_decay: float = 1e-2
    scheduler: str = "cosine"
    label_smoothing: float = 0.0
    swa: SwaConfig | None = None
    loss: str | None = None
    encoder_lr: float | None = None
    unfreeze_at_epoch: int | None = None
    mixup: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.swa, dict):
            self.swa = SwaConfig(**self.swa)
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"optim.scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.encoder_lr is not None and not self.encoder_lr > 0:
            raise ConfigError(f"optim.encoder_lr must be > 0 (or null for optim.lr), got {self.encoder_lr}")
        if self.unfreeze_at_epoch is not None and (isinstance(self.unfreeze_at_epoch, bool)
                                                   or not isinstance(self.unfreeze_at_epoch, int)
                                                   or self.unfreeze_at_epoch < 1):
            raise ConfigError("optim.unfreeze_at_epoch must be an epoch count >= 1 (the encoder stays frozen that "
                              f"many epochs) or null, got {self.unfreeze_at_epoch!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"optim.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not self.mixup >= 0.0:
            raise ConfigError(f"optim.mixup must be >= 0 (Beta(alpha, alpha); 0 is off), got {self.mixup}")


@dataclass
class TrainerConfig:
    """A recipe's ``trainer`` section: Lightning ``Trainer`` settings plus cnnlstm's speed and run settings.

    Args:
        max_epochs: epochs to train (``-1``: until early stopping).
        min_epochs: epochs before early stopping may stop training (Lightning's default when unset).
        accelerator: ``auto``, ``cpu``, ``gpu``, ...
        devices: device count, ``auto`` or a list of device ids.
        strategy: Lightning strategy (``auto``, ``ddp``, ...).
        num_nodes: machines of a multi-node run.
        precision: ``32-true``, ``bf16-mixed``, ``16-mixed``, ...
        gradient_clip_val: gradient norm clipping; ``auto`` clips recurrent models at 1.0, ``null`` never clips.
        accumulate_grad_batches: batches per optimiser step.
        deterministic: Lightning's deterministic mode (``true``, ``false`` or ``warn``).
        limit_train_batches: share (float) or count (int) of training batches per epoch (Lightning's when unset).
        limit_val_batches: the same for validation.
        limit_test_batches: the same for test.
        log_every_n_steps: logging interval in steps.
        enable_progress_bar: Lightning's progress bar (Lightning's default when unset).
        channels_last: channels-last memory format for convolutions.
        compile: ``torch.compile`` the model.
        cuda_graphs: replay the model's training forward and backward from CUDA graphs on a GPU (one per batch
            shape; :mod:`cnnlstm.tasks.graphs`): the host no longer launches every kernel of every step.
            One GPU, no ``compile``, ``tbptt_steps`` or gradient accumulation with it; no effect on a CPU.
        checkpoint_every_n_steps: also write ``last.ckpt`` every N optimiser steps (``null``: once per epoch).
        tbptt_steps: truncated backpropagation through time, time steps per chunk (``null``: off).
        ddp_timeout: seconds a DDP rank waits for a hung peer.
        logger: ``csv``, ``tensorboard``, ``mlflow``, a list of them, or ``null``.
        ensemble: train N members with different seeds and average them (``null``: one model).
        ensemble_jobs: ensemble members trained at once, each in a process of its own with an equal share of the
            CPU threads (1: one after the other in this process).
        ensemble_models: the members' model sections, for an ensemble of several families: member ``k`` takes
            entry ``k mod len`` in place of the recipe's ``model`` (an entry is a section with ``name``, or a
            bare model name with that model's defaults); ``trainer.ensemble`` defaults to their count.
        ensemble_weights: how the members' probabilities are combined: ``mean`` (equal weights), ``fit``
            (weights on the simplex that minimise the ensemble's log loss on the validation split, kept in the run
            directory's ``ensemble_weights.json``; the ensemble's ``val/*`` are then cross-fitted: each validation
            group is scored with weights fitted on the other folds) or ``words`` (members that read token ids, VQA:
            each question's own weights, a softmax of the members' log weights shifted by the question's words,
            fitted and cross-fitted the same way).
        refit: after the fit (validation picks the best epoch ``E``), train the same model again from the same
            initialisation on train + validation for exactly ``E`` epochs (the schedule spans those ``E``) and
            make that the run's model; the run then has no validation score of its own (``val/*`` are the first
            fit's). With an ensemble every member refits.
    """

    max_epochs: int = 20
    min_epochs: int = UNSET
    accelerator: str = "auto"
    devices: int | str | list = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: int | str = "32-true"
    gradient_clip_val: float | str | None = "auto"
    accumulate_grad_batches: int = 1
    deterministic: bool | str = False
    limit_train_batches: int | float = UNSET
    limit_val_batches: int | float = UNSET
    limit_test_batches: int | float = UNSET
    log_every_n_steps: int = 1
    enable_progress_bar: bool = UNSET
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    checkpoint_every_n_steps: int | None = None
    tbptt_steps: int | None = None
    ddp_timeout: int | float = 1800
    logger: str | list | None = None
    ensemble: int | None = None
    ensemble_jobs: int = 1
    ensemble_models: list | None = None
    ensemble_weights: str = "mean"
    refit: bool = False

    def __post_init__(self) -> None:
        epochs = self.max_epochs
        if epochs != -1 and epochs < 1:  # Lightning reads -1 as "no limit"
            raise ConfigError(f"trainer.max_epochs must be >= 1 (or -1 for no limit), got {epochs}")
        every = self.checkpoint_every_n_steps
        if every is not None and every < 1:
            raise ConfigError(f"trainer.checkpoint_every_n_steps must be >= 1 or null, got {every}")
        if not self.ddp_timeout > 0:
            raise ConfigError(f"trainer.ddp_timeout must be > 0 seconds, got {float(self.ddp_timeout):g}")
        models = self.ensemble_models
        if models is not None:
            if not models or not all(isinstance(m, str) or (isinstance(m, dict) and isinstance(m.get("name"), str))
                                     for m in models):
                raise ConfigError("trainer.ensemble_models must be a non-empty list of model names or model sections "
                                  "with a name, e.g. [lstm_fcn, {name: deep_conv_lstm, filters: 64}]")
            if self.ensemble is not None and self.ensemble < 2:
                raise ConfigError(f"trainer.ensemble_models needs an ensemble of 2 or more; trainer.ensemble is "
                                  f"{self.ensemble} (leave it out to train one member per entry)")
        if self.ensemble_jobs < 1:
            raise ConfigError(f"trainer.ensemble_jobs must be >= 1 (members trained at once), got {self.ensemble_jobs}")
        if self.ensemble_weights not in ENSEMBLE_WEIGHTS:
            raise ConfigError(f"trainer.ensemble_weights must be one of {', '.join(ENSEMBLE_WEIGHTS)}, "
                              f"got {self.ensemble_weights!r}")
        if self.ensemble_weights != "mean":
            mode = f"trainer.ensemble_weights={self.ensemble_weights}"
            if (self.ensemble or 1) < 2 and not models:
                raise ConfigError(f"{mode} weighs the members of an ensemble; set trainer.ensemble (2 or more) or "
                                  "trainer.ensemble_models, or drop ensemble_weights")
            if self.refit:
                raise ConfigError(f"{mode} fits the weights on the validation split, which trainer.refit trains "
                                  "on; drop one of them")


@dataclass
class EarlyStoppingConfig:
    """A recipe's ``early_stopping`` section; the same metric chooses the best checkpoint.

    Args:
        monitor: a validation metric (``val/...``); ``null``: the task's own (``val/acc`` for classification).
        mode: ``min`` or ``max``; ``null``: the task's mode for its metric, else ``min``.
        patience: epochs without improvement before training stops.
        min_delta: the smallest change that counts as an improvement.
        enabled: stop early at all (the best checkpoint is kept either way).
    """

    monitor: str | None = None
    mode: str | None = None
    patience: int = 10
    min_delta: float = 0.0
    enabled: bool = True


@dataclass
class PretrainConfig:
    """``pretrain``: a stage that trains the frame encoder on single images before the sequence stage.

    Its ``data``, ``optim``, ``trainer`` and ``early_stopping`` default to the recipe defaults, not to the
    recipe's own values (the stages train different things).

    Args:
        data: the images the encoder is pretrained on (``data.spec`` required).
        encoder: the encoder to pretrain (checked by the encoder constructor).
        optim: the stage's optimiser.
        trainer: the stage's trainer.
        early_stopping: the stage's early stopping.
    """

    data: DataConfig = field(default_factory=DataConfig)
    encoder: dict[str, Any] = UNSET
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class RecipeConfig:
    """A whole recipe: what a YAML file holds once merged with the defaults.

    Args:
        name: the run's name (default: the file's stem).
        description: one line for ``cnnlstm recipes``.
        seed: fixes the split, the weights and the data order.
        task: ``classification``, ``ctc``, ``forecasting``, ``captioning``; ``null``: the data's kind decides.
        data: the data section.
        model: ``name`` plus constructor keywords (checked by the model).
        optim: the optimiser section.
        trainer: the trainer section.
        early_stopping: the early-stopping section.
        pretrain: an optional encoder pretraining stage.
        search: read by ``cnnlstm tune`` (:mod:`cnnlstm.tune.search`); ``fit`` ignores it.
    """

    name: str = UNSET
    description: str = UNSET
    seed: int = 0
    task: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = UNSET
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    pretrain: PretrainConfig = UNSET
    search: dict[str, Any] = UNSET


def section_to_dict(section: Any) -> Any:
    """A section as the plain mapping a YAML recipe holds, without its :data:`UNSET` keys.

    Example:
        >>> section_to_dict(OptimConfig(swa={"lr": 0.01}))["swa"]
        {'lr': 0.01, 'start_epoch': 0.8, 'annealing_epochs': 1}
    """
    if not dataclasses.is_dataclass(section):
        return copy.deepcopy(section)
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if value is not UNSET:
            out[f.name] = section_to_dict(value)
    return out


def section_defaults(cls: type) -> dict[str, Any]:
    """The defaults of a section class as a plain mapping (keys without a default left out).

    Example:
        >>> section_defaults(EarlyStoppingConfig)["patience"]
        10
    """
    return section_to_dict(cls())


def section_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A section instance from a mapping of checked values (nested sections built too), missing keys defaulted.

    Running each section's ``__post_init__`` is what checks value ranges (``data.batch_size >= 1``, ...).

    Example:
        >>> section_from_dict(RecipeConfig, {"data": {"spec": "ucr:GunPoint"}}).data.batch_size
        32
    """
    kwargs = {}
    for key, hint in field_types(cls).items():
        if key not in values:
            continue
        value, sub = values[key], nested_section(hint)
        kwargs[key] = section_from_dict(sub, value) if sub is not None and isinstance(value, dict) else value
    return cls(**kwargs)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """``{key: type annotation}`` of a section class, annotations resolved to types (``int | None``, ...).

    Example:
        >>> field_types(SwaConfig)["annealing_epochs"]
        <class 'int'>
    """
    return typing.get_type_hints(cls)  # cached: read for every key of every resolved recipe


def nested_section(hint: Any) -> type | None:
    """The section class an annotation names (``DataConfig``, or ``SwaConfig`` in ``SwaConfig | None``), else None.

    Example:
        >>> nested_section(field_types(OptimConfig)["swa"]).__name__
        'SwaConfig'
    """
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
