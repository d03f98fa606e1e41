"""Fit, test and the pretraining stage: a recipe in, a run directory out.

``fit`` trains on the training split minus a validation split, keeps the checkpoint that scores best on
validation, and evaluates that checkpoint once on the test split. ``evaluate_run`` rebuilds a run from its
directory alone (``config.yaml`` + ``checkpoints/best.safetensors``) and evaluates it again, giving the same
test metrics. With ``trainer.refit`` the first fit only chooses the epoch count ``E``: a second fit from the same
initial weights trains on train + validation for exactly ``E`` epochs and is the run's (tested, saved) model
(:func:`_refit`, ``docs/training.md``). ``resume`` continues a killed run from ``checkpoints/last.ckpt``; on the
CPU with a fixed seed it ends with exactly the metrics of an uninterrupted run (see ``docs/training.md`` for the GPU
limits).

Regularisers are wired here and in the task: ``data.augment`` runs on training batches only (never on
validation, test or predict), ``optim.swa`` averages weights (the averaged model is kept only when it scores
better on validation than the best checkpoint), and every run reports its generalisation gap and warns when
validation loss rises for :data:`~cnnlstm.report.generalisation.OVERFIT_EPOCHS` epochs while training loss falls.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import Tensor, nn

from cnnlstm.data import DataInfo, DatasetBundle
from cnnlstm.data.preprocess import apply_encoder_preprocessing, recorded_normalization
from cnnlstm.engine.build import build_model, count_parameters
from cnnlstm.engine.data import RecipeData, load_bundle
from cnnlstm.engine.ensemble import ensemble_size, fit_ensemble, fits_validation, load_run_model
from cnnlstm.engine.outputs import check_new_run, clear_run, refuse_if_locked, run_lock
from cnnlstm.engine.recipe import resolve_config
from cnnlstm.engine.resume import ReproducibleTraining
from cnnlstm.engine.rundir import (
    RUN_DIR_ENV,
    read_config,
    resolve_run_dir,
    save_weights,
    weights_path,
    write_json,
    write_yaml,
)
from cnnlstm.engine.trainer import make_trainer, resolve_clip
from cnnlstm.errors import ConfigError, PeerLostError, WeightsError
from cnnlstm.tasks import ClassificationTask, Task, build_task, task_for_kind

__all__ = ["RunResult", "RunInterrupted", "apply_speed_settings", "fit", "resume", "evaluate_run",
           "task_name", "load_best", "read_checkpoint", "last_checkpoint", "AUGMENT_KEYS", "rebuild_run"]

log = logging.getLogger(__name__)

#: the batch entry data augmentation transforms, and the augmentation kind, per data kind
AUGMENT_KEYS = {"series": ("x", "series"), "frames": ("x", "frames"), "images": ("x", "images"),
                "text_image": ("x", "images"), "vqa": ("image", "images"), "captions": ("images", "images")}

# The resumable loader warning is about Lightning's own loaders; ours restart mid-epoch exactly (engine.resume).
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")


@dataclass
class RunResult:
    """What ``fit`` / ``evaluate_run`` return.

    Attributes:
        run_dir: the run directory.
        metrics: flat metrics (``test/acc``, ``val/acc``, ``best_epoch``, ...), as in ``metrics.json``.
        config: the resolved recipe.
        history: per-epoch train/validation metrics.
    """

    run_dir: Path
    metrics: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a ``fit`` or ``resume``; ``run_dir`` says which run ``fit --resume`` continues.

    Attributes:
        run_dir: the run directory (it holds ``config.yaml`` once training started).
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir

    def hint(self) -> str:
        """One line for the user: how to continue, or that nothing was written yet."""
        if (self.run_dir / "config.yaml").is_file():
            return ("interrupted; the run is saved up to its last checkpoint: continue it with "
                    f"`cnnlstm fit --resume {self.run_dir}`")
        return "interrupted before training started; nothing was written"


def task_name(config: dict[str, Any], bundle: DatasetBundle) -> str:
    """The recipe's ``task``, or the one the data's kind implies."""
    return config.get("task") or task_for_kind(bundle.kind)


def _is_rank_zero() -> bool:
    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint read with ``torch.load(weights_only=True)``: tensors and primitives, never code.

    Args:
        ckpt_path: a ``.ckpt`` written by this run's trainer.

    Raises:
        WeightsError: the file is missing, not torch's format, holds anything but tensors and primitives
            (a crafted pickle), or has no ``state_dict``.

    Example:
        >>> read_checkpoint("runs/basic_motions/checkpoints/best.ckpt")["epoch"]  # doctest: +SKIP
        7
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise WeightsError(f"no checkpoint at {path}; was the run's fit finished?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not a safe checkpoint: loading only tensors and plain values was refused "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); delete it, or "
                           "retrain, and never load it with weights_only=False unless you wrote it") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise WeightsError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return state


def load_best(task: Task, ckpt_path: str | Path) -> int:
    """Load the model weights of a Lightning checkpoint into ``task`` (tensors only); return its epoch (1-based).

    The checkpoint holds only primitives and tensors, so ``torch.load(weights_only=True)`` reads it: no
    pickled code is ever run (see :func:`read_checkpoint`).

    Args:
        task: the task whose weights are replaced.
        ckpt_path: the best checkpoint of the run.

    Raises:
        WeightsError: the file is not a safe checkpoint, or its weights do not fit ``task``.

    Example:
        >>> best_epoch = load_best(task, "runs/x/checkpoints/best.ckpt")  # doctest: +SKIP
    """
    state = read_checkpoint(ckpt_path)
    try:
        task.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise WeightsError(f"{ckpt_path} does not match the model: {str(exc).splitlines()[0]}") from None
    return int(state.get("epoch", 0)) + 1


class _EncoderClassifier(nn.Module):
    """A frame encoder plus a linear head: the pretraining model of a two-stage recipe (not registered)."""

    input_names = ("x",)
    output_kind = "logits"
    supports_lengths = False

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.head = nn.Linear(encoder.out_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))  # (B, C, H, W) -> (B, D) -> (B, K)


def last_checkpoint(run_dir: str | Path) -> Path:
    """Where a run (or its pretraining stage) keeps the checkpoint it resumes from."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


#: what a collective raises when a peer process died (gloo, NCCL) or did not answer in time (the store, timeouts)
_PEER_FAILURE_MARKERS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL error",
                         "ProcessGroupNCCL", "ProcessGroupGloo", "Timed out", "timed out", "DistBackendError",
                         "DistNetworkError", "TCPStore")


def _is_peer_failure(exc: BaseException) -> bool:
    import torch.distributed as dist

    network_errors = tuple(getattr(dist, name) for name in ("DistBackendError", "DistNetworkError", "DistStoreError")
                           if hasattr(dist, name))
    return isinstance(exc, network_errors) or any(marker in str(exc) for marker in _PEER_FAILURE_MARKERS)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _better(a: float, b: float, mode: str) -> bool:
    return a < b if mode == "min" else a > b


def _train_and_test(config: dict[str, Any], section: dict[str, Any], bundle: DatasetBundle, task: Task,
                    run_dir: Path, seed: int, *, callbacks: list[pl.Callback] | None = None, test: bool = True,
                    resume: bool = False, on_ready: Callable[[], None] | None = None, train_seed: int | None = None,
                    ) -> tuple[dict[str, Any], list[dict[str, float]], pl.Trainer]:
    """Train ``task`` on ``bundle`` (validation carved from train), then test the best checkpoint once.

    ``seed`` fixes the split; ``train_seed`` (default ``seed``) the per-epoch random state of training.
    ``on_ready`` runs once the trainer accepted its settings, just before training starts (it creates the run).
    """
    data_cfg = section["data"]
    data = RecipeData.from_section(bundle, data_cfg, seed=seed,
                                   stratify=task_name(config, bundle) == "classification")
    if getattr(task.model, "closed_form", False):
        everything = bool(section["trainer"].get("refit")) or fits_validation(task.model)
        return _fit_closed_form(section, data, task, run_dir, test=test, everything=everything, on_ready=on_ready)
    reproducible = ReproducibleTraining(seed if train_seed is None else train_seed, data.train_sampler,
                                        data_cfg["batch_size"])
    trainer, ckpt = make_trainer(section["trainer"], section["early_stopping"], task, run_dir,
                                 callbacks=[reproducible, *(callbacks or [])])
    last = last_checkpoint(run_dir)
    ckpt_path = str(last) if resume and last.is_file() else None
    if on_ready is not None:
        on_ready()
    start = time.perf_counter()
    # Tensors and plain values only: a crafted last.ckpt can never run code (AtomicCheckpointIO enforces it too).
    try:
        trainer.fit(task, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after its own shutdown
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning left SIGINT ignored
            raise KeyboardInterrupt from None
        raise
    except RuntimeError as exc:
        if trainer.world_size > 1 and _is_peer_failure(exc):
            raise PeerLostError(
                f"rank {trainer.global_rank} of {trainer.world_size} lost another training process "
                f"({_first_line(exc)}); every rank stops, and the run keeps its last checkpoint: once all nodes "
                f"are back, run `cnnlstm fit --resume {run_dir}` on each of them") from None
        raise
    fit_seconds = time.perf_counter() - start
    history = list(task.history)
    best = ckpt.best_model_path if ckpt is not None else ""
    if not best or not Path(best).is_file():
        raise WeightsError(f"training wrote no best checkpoint in {run_dir / 'checkpoints'} (no validation epoch ran?)")
    metrics: dict[str, Any] = {}
    swa = next((c for c in trainer.callbacks if type(c).__name__ == "StochasticWeightAveraging"), None)
    swa_kept = False
    if swa is not None and getattr(swa, "_initialized", False) and trainer.current_epoch > swa.swa_end:
        # The averaged weights were never validated during training: score them once, keep them if better.
        swa_val = trainer.validate(task, datamodule=data, verbose=False)[0]
        metrics.update({f"swa/{k}": float(v) for k, v in sorted(swa_val.items()) if k.startswith("val/")})
        swa_score, best_score = swa_val.get(ckpt.monitor), ckpt.best_model_score
        swa_kept = swa_score is not None and best_score is not None and _better(float(swa_score),
                                                                                float(best_score), ckpt.mode)
    best_epoch = int(read_checkpoint(best).get("epoch", 0)) + 1
    if not swa_kept:
        load_best(task, best)
    if test:
        results = trainer.test(task, datamodule=data, verbose=False)[0]
        metrics.update({k: float(v) for k, v in sorted(results.items())})
    total, trainable = count_parameters(task.model)
    best_row = next((h for h in history if h["epoch"] == best_epoch), {})
    metrics.update({k: v for k, v in best_row.items() if k.startswith("val/")})
    if swa_kept:
        metrics.update({k[len("swa/"):]: v for k, v in metrics.items() if k.startswith("swa/val/")})
    last_row = history[-1] if history else {}
    metrics.update({k: v for k, v in last_row.items() if k.startswith("train/")})
    from cnnlstm.report.generalisation import generalisation_gap, overfitting_warning

    metrics.update(generalisation_gap(history, best_epoch))
    warning = overfitting_warning(history)
    if warning:
        metrics["warning"] = warning
    metrics.update(best_epoch=best_epoch, epochs=len(history), fit_seconds=round(fit_seconds, 3), params=total,
                   trainable_params=trainable, train_samples=len(data.train_set), val_samples=len(data.val_set),
                   test_samples=len(data.test_set), weights="swa" if swa_kept else "best")
    return metrics, history, trainer


def stack_series(data: RecipeData, dataset: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Every sample of ``dataset`` in one zero-padded batch: ``(x (N, T_max, F), lengths (N,), y (N,))``."""
    xs, lengths, ys = [], [], []
    for batch in data._loader(dataset, shuffle=False):
        x = batch["x"]
        xs.append(x)
        lengths.append(batch.get("lengths", torch.full((len(x),), x.shape[1], dtype=torch.long)))
        ys.append(batch["y"])
    longest = max(x.shape[1] for x in xs)
    x = torch.cat([torch.nn.functional.pad(x, (0, 0, 0, longest - x.shape[1])) for x in xs])
    return x, torch.cat(lengths), torch.cat(ys)


def _fit_closed_form(section: dict[str, Any], data: RecipeData, task: Task, run_dir: Path, *, test: bool,
                     everything: bool, on_ready: Callable[[], None] | None,
                     ) -> tuple[dict[str, Any], list[dict[str, float]], pl.Trainer]:
    """A model fitted in closed form (``model.closed_form``, e.g. ``minirocket``): no training loop, no optimiser.

    The model's ``fit_data`` reads the training split once (train + validation with ``trainer.refit`` or the
    model's ``fit_on_validation``, and then there is no validation score); validation and test run as for any
    model. Augmentation does not apply.
    """
    trainer, _ = make_trainer(section["trainer"], section["early_stopping"], task, run_dir, checkpoints=False)
    if on_ready is not None:
        on_ready()
    start = time.perf_counter()
    # the whole training split in its own order (so MiniRocket draws as aeon's does on it), or the training part
    x, lengths, y = stack_series(data, data.whole_train_set() if everything else data.train_set)
    chosen = task.model.fit_data(x, lengths, y)
    fit_seconds = time.perf_counter() - start
    metrics: dict[str, Any] = {f"fit/{k}": v for k, v in chosen.items()}
    history: list[dict[str, float]] = []
    if not everything:
        val = trainer.validate(task, datamodule=data, verbose=False)[0]
        history.append({"epoch": 1, **{k: float(v) for k, v in sorted(val.items()) if k.startswith("val/")}})
        metrics.update({k: v for k, v in history[0].items() if k != "epoch"})
    if test:
        metrics.update({k: float(v) for k, v in sorted(trainer.test(task, datamodule=data, verbose=False)[0].items())})
    total, trainable = count_parameters(task.model)
    metrics.update(best_epoch=1, epochs=1, fit_seconds=round(fit_seconds, 3), params=total,
                   trainable_params=trainable, train_samples=len(x), val_samples=0 if everything else len(data.val_set),
                   test_samples=len(data.test_set), weights="closed_form")
    return metrics, history, trainer


def _write_reports(run_dir: Path, task: Task, history: list[dict[str, float]], prefix: str = "",
                   confusion_task: Task | None = None) -> None:
    """History and learning curves of ``task``; the test confusion matrix of ``confusion_task`` (default ``task``)."""
    from cnnlstm.report import plot_confusion_matrix, plot_learning_curves

    write_json(run_dir / f"{prefix}history.json", history)
    if history:
        metric = task.monitor.split("/", 1)[1] if task.monitor != "val/loss" else None
        plot_learning_curves(history, run_dir / f"{prefix}learning_curves.png", metric=metric)
    tested = task if confusion_task is None else confusion_task
    if isinstance(tested, ClassificationTask) and tested.confusion is not None:
        plot_confusion_matrix(tested.confusion.numpy(), tested.class_names, run_dir / f"{prefix}confusion_matrix.png")


def _training_task(config: dict[str, Any], bundle: DatasetBundle, model: nn.Module, name: str,
                   seed: int) -> tuple[DatasetBundle, Task]:
    """The task that trains ``model`` as the recipe says (feature cache, augmentation, gradient clipping, TBPTT,
    CUDA graphs), and the bundle it trains on (cached features when the encoder is frozen)."""
    trainer_cfg = config["trainer"]
    augmentation, key, question_flip = _augmentation(config, bundle)
    train_bundle, train_model = _feature_cache(config, bundle, model, augmented=augmentation is not None)
    task = build_task(name, train_model, train_bundle.info, config["optim"], tbptt_steps=trainer_cfg.get("tbptt_steps"),
                      clip_val=resolve_clip(trainer_cfg["gradient_clip_val"], train_model))
    task.set_augmentation(augmentation, key, question_flip)
    task.use_cuda_graphs(trainer_cfg.get("cuda_graphs", False))
    return train_bundle, task


#: where a ``trainer.refit`` run keeps the refit's own history, learning curves and logs
REFIT_DIR = "refit"


def _refit(config: dict[str, Any], bundle: DatasetBundle, model_section: dict[str, Any], name: str,
           initial: dict[str, Tensor], epochs: int, run_dir: Path, seed: int, train_seed: int | None, *, test: bool,
           callbacks: list[pl.Callback] | None) -> tuple[nn.Module, Task, dict[str, Any], pl.Trainer]:
    """``trainer.refit``: train the model again on the whole training split for ``epochs`` epochs.

    The model starts from ``initial`` (the first fit's initial weights, so the same seed gives the same start),
    reads train + validation in the epoch order of ``(seed, epoch)``, with the recipe's optimiser, augmentation,
    clipping and schedule; ``trainer.max_epochs`` is ``epochs``, so a cosine schedule anneals over the refit's
    own epochs. No validation runs and no checkpoint is chosen: the weights after the last epoch are the model.
    Returns ``(model, task, refit/* metrics + test/* when test, trainer)``.
    """
    pl.seed_everything(seed if train_seed is None else train_seed, workers=True, verbose=False)
    model = build_model(model_section, bundle.info.model_kwargs)
    model.load_state_dict(initial)
    apply_speed_settings(model, config["trainer"])
    train_bundle, task = _training_task(config, bundle, model, name, seed)
    data_cfg = config["data"]
    data = RecipeData.from_section(train_bundle, data_cfg, seed=seed, stratify=name == "classification",
                                   holdout=False)
    reproducible = ReproducibleTraining(seed if train_seed is None else train_seed, data.train_sampler,
                                        data_cfg["batch_size"])
    section = {**config["trainer"], "max_epochs": epochs, "limit_val_batches": 0}  # no validation split to run
    section.pop("min_epochs", None)  # exactly `epochs` epochs
    trainer, _ = make_trainer(section, {"enabled": False}, task, run_dir / REFIT_DIR, checkpoints=False,
                              callbacks=[reproducible, *(callbacks or [])])
    start = time.perf_counter()
    trainer.fit(task, datamodule=data, weights_only=True)
    seconds = time.perf_counter() - start
    history = list(task.history)
    if trainer.is_global_zero:
        _write_reports(run_dir / REFIT_DIR, task, history)  # before the test: the run's own files hold that
    metrics: dict[str, Any] = {}
    if test:
        results = trainer.test(task, datamodule=data, verbose=False)[0]
        metrics.update({k: float(v) for k, v in sorted(results.items())})
    last_row = history[-1] if history else {}
    metrics.update({f"refit/{k}": v for k, v in last_row.items() if k.startswith("train/")})
    metrics.update({"refit/epochs": len(history), "refit/train_samples": len(data.train_set),
                    "refit/fit_seconds": round(seconds, 3), "weights": "refit"})
    return model, task, metrics, trainer


def _write_html_report(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any],
                       history: list[dict[str, float]], bundle: DatasetBundle, name: str, model: nn.Module) -> None:
    """``RUN/report.html``; a report that fails is logged, never the end of a run whose weights are saved."""
    from cnnlstm.engine.run_report import write_run_report

    try:
        task = build_task(name, model, bundle.info, config["optim"])
        write_run_report(run_dir, config, metrics, history, bundle, name, task, model)
    except Exception as exc:  # noqa: BLE001 - the run's results are written; `cnnlstm report RUN` can retry
        log.warning("report.html was not written (%s: %s); run `cnnlstm report %s` to retry", type(exc).__name__,
                    exc, run_dir)


def _data_info(bundle: DatasetBundle, task: str) -> dict[str, Any]:
    """What predict needs to read new inputs the way the model was trained: ``data_info.json``'s entries."""
    return bundle.info.for_run(bundle.name, bundle.kind, task).to_dict()


def _pretrain(config: dict[str, Any], run_dir: Path, resume: bool = False,
              on_ready: Callable[[], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Stage one of a two-stage recipe: train encoder + linear head on single images, save the encoder.

    A resumed run reuses a finished stage (``pretrain/encoder.safetensors`` and its metrics) and continues an
    unfinished one from its own ``last.ckpt``.
    """

    from cnnlstm.encoders import build_encoder, save_encoder

    stage_dir = run_dir / "pretrain"
    path = stage_dir / "encoder.safetensors"
    done = stage_dir / "metrics.json"
    if resume and path.is_file() and done.is_file():
        return path, {f"pretrain/{k}": v for k, v in json.loads(done.read_text()).items()}
    section = config["pretrain"]
    model_section = config["model"]
    encoder_cfg = dict(section.get("encoder") or {"name": model_section.get("encoder", "cnn"),
                                                   **(model_section.get("encoder_kwargs") or {})})
    encoder_name = encoder_cfg.pop("name", "cnn")
    bundle = load_bundle(section["data"], seed=config["seed"])
    model_kwargs = bundle.info.model_kwargs
    encoder = build_encoder(encoder_name, in_channels=int(model_kwargs.get("in_channels", 3)), **encoder_cfg)
    model = _EncoderClassifier(encoder, int(model_kwargs["num_classes"]))
    task = ClassificationTask(model, class_names=bundle.info.class_names, optim=section["optim"])
    metrics, history, trainer = _train_and_test(config, section, bundle, task, stage_dir, config["seed"],
                                                resume=resume, on_ready=on_ready)
    metrics.pop("warning", None)  # stage one's own report holds it
    # The encoder learnt on the pretraining images as they were read: record that as its input normalisation, so
    # stage two (which loads it as pretrained) reads frames the same way instead of the class default.
    norm = bundle.info.normalization
    channels = encoder.in_channels
    encoder.pretrained_config = {**encoder.pretrained_config, "mean": tuple(norm.get("mean") or (0.0,) * channels),
                                 "std": tuple(norm.get("std") or (1.0,) * channels)}
    if trainer.is_global_zero:
        save_encoder(encoder, path)
        _write_reports(stage_dir, task, history)
        write_json(done, metrics)
    trainer.strategy.barrier()  # every process reads the encoder file next
    return path, {f"pretrain/{k}": v for k, v in metrics.items()}


#: what to change when a script's unguarded top-level call runs again in a worker process
MAIN_GUARD_HINT = ("put the script's calls under `if __name__ == \"__main__\":` (worker processes, such as "
                   "trainer.ensemble_jobs > 1's, import the main script again), or set trainer.ensemble_jobs: 1")


def refuse_while_a_worker_imports_main() -> None:
    """Refuse to train inside a spawned worker that is importing the user's main script.

    ``trainer.ensemble_jobs > 1`` trains members in spawned processes, which import the main script first; a
    top-level ``fit(...)`` there would start a second run on the same folder (and fail on its lock).

    Raises:
        ConfigError: saying to guard the call with ``if __name__ == "__main__":``.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ConfigError(f"cnnlstm was asked to train while a worker process imported the main script: "
                          f"{MAIN_GUARD_HINT}")


def fit(recipe: str | dict[str, Any], *, data: str | None = None, overrides: list[str] | tuple[str, ...] = (),
        out: str | Path | None = None, verbose: bool = True, callbacks: list[pl.Callback] | None = None,
        test: bool = True, overwrite: bool = False) -> RunResult:
    """Train a recipe, evaluate its best-on-validation checkpoint once on test, and write the run directory.

    Args:
        recipe: a shipped recipe name, a YAML path, or a recipe dict (a partial one is merged with the defaults,
            as a YAML file is: :func:`cnnlstm.engine.recipe.resolve_config`).
        data: a dataset spec replacing the recipe's ``data.spec``.
        overrides: ``key.path=value`` strings (see :func:`cnnlstm.engine.recipe.apply_overrides`).
        out: the run directory; ``runs/<recipe>-<timestamp>`` by default.
        verbose: print the end-of-run summary (rank 0 only).
        callbacks: extra Lightning callbacks for the main stage (e.g. a tuning pruner).
        test: evaluate on the test split; ``False`` for model selection (tuning), which must never see it.
        overwrite: replace an existing run in ``out`` (its files, :data:`~cnnlstm.engine.outputs.RUN_ENTRIES`);
            without it an existing run or a folder holding other files is refused.

    Returns:
        A :class:`RunResult` (the same metrics as ``RUN/metrics.json``).

    Raises:
        ConfigError: the recipe is invalid, or ``out`` cannot take a new run (checked before any data is read).
        RunInterrupted: Ctrl-C; the run continues with :func:`resume`.

    Example:
        >>> result = fit("basic_motions", overrides=["trainer.max_epochs=1"], out="runs/demo")  # doctest: +SKIP
        >>> result.metrics["test/acc"]  # doctest: +SKIP
    """
    refuse_while_a_worker_imports_main()
    config = resolve_config(recipe, data=data, overrides=overrides)
    if _is_rank_zero():  # only DDP workers follow RUN_DIR_ENV; in rank 0 it names an earlier fit's run
        os.environ.pop(RUN_DIR_ENV, None)
    run_dir = resolve_run_dir(out, config.get("name", "run")).resolve()
    if not _is_rank_zero():  # DDP workers write into the directory rank 0 checked, locked and created
        return _fit(config, run_dir, verbose=verbose, callbacks=callbacks, test=test, resume=False)
    refuse_if_locked(run_dir)  # a run being written now is reported as such, not as one to --resume
    check_new_run(run_dir, overwrite=overwrite)
    with run_lock(run_dir):
        check_new_run(run_dir, overwrite=overwrite)  # again under the lock: another fit may have just finished
        if overwrite:
            clear_run(run_dir)
        return _interruptible(run_dir, lambda: _fit(config, run_dir, verbose=verbose, callbacks=callbacks,
                                                    test=test, resume=False))


def _interruptible(run_dir: Path, work: Any) -> RunResult:
    try:
        return work()
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir) from None


def resume(run_dir: str | Path, *, verbose: bool = True, callbacks: list[pl.Callback] | None = None) -> RunResult:
    """Continue a run that was stopped (killed, preempted) from its last checkpoint, with its own config.yaml.

    The recipe cannot be changed on resume: the run directory would otherwise mix two experiments. On the CPU
    with a fixed seed the final metrics equal those of an uninterrupted run exactly (``fit_seconds`` aside).

    Args:
        run_dir: a directory written by :func:`fit`.
        verbose: print the end-of-run summary.
        callbacks: extra Lightning callbacks.

    Raises:
        ConfigError: ``run_dir`` is not a run directory.

    Example:
        >>> resume("runs/basic_motions-20250101-120000").metrics["test/acc"]  # doctest: +SKIP
    """
    run_dir = Path(run_dir).resolve()
    if _is_rank_zero():
        refuse_if_locked(run_dir, flag="--resume")
    config = read_config(run_dir)
    if not last_checkpoint(run_dir).is_file() and not (run_dir / "pretrain").is_dir():
        log.warning("%s has no last checkpoint yet: training starts from epoch 1", run_dir)
    if not _is_rank_zero():
        return _fit(config, run_dir, verbose=verbose, callbacks=callbacks, test=True, resume=True)
    with run_lock(run_dir, flag="--resume"):
        return _interruptible(run_dir, lambda: _fit(config, run_dir, verbose=verbose, callbacks=callbacks,
                                                    test=True, resume=True))


#: the ``data.augment`` key of the image + question flip (a whole-batch transform, vqa data only)
QUESTION_FLIP = "question_flip"


def _augmentation(config: dict[str, Any], bundle: DatasetBundle
                  ) -> tuple[nn.Module | None, str, nn.Module | None]:
    """``data.augment`` as ``(augmentation of batch[key], key, whole-batch augmentation)``, ``None`` where unset.

    The whole-batch one is ``question_flip`` (vqa data: it reads the data's question words and answers).
    """
    spec = dict(config["data"].get("augment") or {})
    flip_spec = spec.pop(QUESTION_FLIP, None)
    question_flip = None
    if flip_spec is not None:
        if bundle.kind != "vqa":
            raise ConfigError(f"data.augment.{QUESTION_FLIP} mirrors images and swaps words in their questions: it "
                              f"needs image + question data (vqa), got {bundle.kind!r}; remove it")
        from cnnlstm.data.augment import build_question_flip

        extras = bundle.info.extras
        question_flip = build_question_flip(flip_spec, list(extras.get("vocab", [])), list(extras.get("answers", [])))
    if not spec:
        return None, "x", question_flip
    if bundle.kind not in AUGMENT_KEYS:
        raise ConfigError(f"data.augment: {bundle.kind!r} data has no augmentations (series, frames and images do); "
                          "remove data.augment")
    from cnnlstm.data.augment import build_augmentation

    key, kind = AUGMENT_KEYS[bundle.kind]
    return build_augmentation(kind, spec, seed=None), key, question_flip


def _feature_cache(config: dict[str, Any], bundle: DatasetBundle, model: nn.Module,
                   augmented: bool) -> tuple[DatasetBundle, nn.Module]:
    """The bundle and the model to train: cached encoder features and the recurrent part, when valid."""
    mode = config["data"]["feature_cache"]
    if isinstance(mode, str) and mode.lower() in ("true", "false"):
        mode = mode.lower() == "true"
    if mode is False or bundle.kind != "frames":
        if mode is True:
            raise ConfigError(f"data.feature_cache: true needs frames data, got {bundle.kind!r}")
        return bundle, model
    if augmented:  # augmented frames differ every epoch, so cached features would train on one frozen draw
        if mode is True:
            raise ConfigError("data.feature_cache: true with data.augment: augmented frames cannot be cached; "
                              "drop one of them")
        return bundle, model
    unfreeze = config["optim"].get("unfreeze_at_epoch")
    if unfreeze is not None:  # the encoder trains after the frozen epochs, so its features do not stay fixed
        if mode is True:
            raise ConfigError(f"data.feature_cache: true, but optim.unfreeze_at_epoch: {unfreeze} trains the encoder "
                              "after that, so its features change; set data.feature_cache: auto or false")
        log.info("feature cache off: the encoder is unfrozen after epoch %d (optim.unfreeze_at_epoch)", unfreeze)
        return bundle, model
    from cnnlstm.engine.feature_cache import use_feature_cache

    data = config["data"]
    identity = {"spec": data["spec"], "options": data.get("options") or {}, "seed": config["seed"]}
    return use_feature_cache(bundle, model, mode=mode, identity=identity, batch_size=data["batch_size"],
                             num_workers=data["num_workers"], dtype=data["feature_cache_dtype"])


def apply_speed_settings(model: nn.Module, trainer_cfg: dict[str, Any]) -> None:
    """Apply a recipe's ``trainer.channels_last`` and ``trainer.compile`` to ``model`` in place.

    Parameter names are unchanged, so checkpoints and saved weights look the same with or without them.

    Args:
        model: the built model.
        trainer_cfg: the recipe's ``trainer`` section.

    Example:
        >>> apply_speed_settings(model, {"channels_last": True})  # doctest: +SKIP
    """
    if trainer_cfg.get("channels_last"):
        # NHWC convolution kernels are the fast path for 2-D CNNs on tensor cores; 1-D/3-D weights stay as they are.
        model.to(memory_format=torch.channels_last)
    if trainer_cfg.get("compile"):
        model.compile()  # compiles __call__ in place, so state_dict keys (and saved weights) stay the same


def _fit(config: dict[str, Any], run_dir: Path, *, verbose: bool, callbacks: list[pl.Callback] | None, test: bool,
         resume: bool, train_seed: int | None = None) -> RunResult:
    """Train one run; ``train_seed`` (an ensemble member's) reseeds the model's initialisation and training."""
    if ensemble_size(config) > 1:
        if resume:
            raise ConfigError(f"{run_dir} is an ensemble (trainer.ensemble); resuming one is not supported, "
                              "fit it again")
        if callbacks:
            raise ConfigError("callbacks observe one Trainer, and trainer.ensemble trains one per member; fit "
                              "without callbacks or without trainer.ensemble")
        return fit_ensemble(config, run_dir, verbose=verbose, test=test)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP workers are started later from this process's environment
    seed = config["seed"]
    pl.seed_everything(seed, workers=True, verbose=False)

    def start_run() -> None:  # config.yaml marks a run: written once data, model and trainer settings passed
        if _is_rank_zero() and not resume and not (run_dir / "config.yaml").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_yaml(run_dir / "config.yaml", config)

    metrics: dict[str, Any] = {}
    model_section = dict(config["model"])
    if config.get("pretrain"):
        encoder_path, metrics = _pretrain(config, run_dir, resume=resume, on_ready=start_run)
        model_section["pretrained"] = str(encoder_path)
        model_section.setdefault("freeze", "all")
        pl.seed_everything(seed, workers=True, verbose=False)

    bundle = load_bundle(config["data"], seed=seed)
    if train_seed is not None:
        pl.seed_everything(train_seed, workers=True, verbose=False)  # after the data: same data, other weights
    model = build_model(model_section, bundle.info.model_kwargs)
    bundle = apply_encoder_preprocessing(bundle, model)  # a pretrained encoder's mean/std, recorded in data_info
    apply_speed_settings(model, config["trainer"])
    name = task_name(config, bundle)
    # A closed-form model (minirocket) fits train + validation itself under trainer.refit: no second fit.
    refit = bool(config["trainer"].get("refit")) and not getattr(model, "closed_form", False)
    if refit and resume:
        raise ConfigError(f"{run_dir} refits on train + validation (trainer.refit); resuming one is not supported, "
                          "fit it again")
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()} if refit else None
    train_bundle, task = _training_task(config, bundle, model, name, seed)
    stage, history, trainer = _train_and_test(config, config, train_bundle, task, run_dir, seed,
                                              callbacks=callbacks, test=test and not refit, resume=resume,
                                              on_ready=start_run, train_seed=train_seed)
    reports_task = task
    if initial is not None:
        # The first fit only chose the epoch count (its test split is never read); the refit is the run's model.
        model, reports_task, refit_metrics, refit_trainer = _refit(
            config, bundle, model_section, name, initial, int(stage["best_epoch"]), run_dir, seed, train_seed,
            test=test, callbacks=callbacks)
        stage = {**stage, **refit_metrics,
                 "fit_seconds": round(stage["fit_seconds"] + refit_metrics["refit/fit_seconds"], 3)}
        trainer = refit_trainer
    metrics = {**stage, **metrics}
    if trainer.is_global_zero:
        save_weights(model, weights_path(run_dir))  # the full model, also when features were cached
        write_json(run_dir / "data_info.json", _data_info(bundle, name))
        _write_reports(run_dir, task, history, confusion_task=reports_task)
        write_json(run_dir / "metrics.json", metrics)
        if test:
            _write_html_report(run_dir, config, metrics, history, bundle, name, model)
        if verbose:
            from cnnlstm.report import format_summary

            title = f"{config.get('name', 'run')}: {model.model_name} on {bundle.name} ({name})"
            print(format_summary(metrics, run_dir, title), flush=True)
    trainer.strategy.barrier()
    return RunResult(run_dir=run_dir, metrics=metrics, config=config, history=history)


def _with_run_charset(config: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """``text:`` data read with the run's own character set (its ``data_info.json``), not the data's: other
    data, or the same folder grown since, would otherwise renumber the characters the model was trained on."""
    info_path = run_dir / "data_info.json"
    options = config["data"].get("options") or {}
    if not str(config["data"]["spec"]).startswith("text:") or "charset" in options or not info_path.is_file():
        return config
    charset = _read_info(info_path).extras.get("charset")
    if not charset:
        return config
    return {**config, "data": {**config["data"], "options": {**options, "charset": "".join(charset[1:])}}}


def _check_same_vocabulary(run_dir: Path, bundle: DatasetBundle) -> None:
    """Word ids are the model's input: data whose training split gives other words than the run's cannot be read."""
    saved = run_dir / "data_info.json"
    ours = bundle.info.extras.get("vocab")
    if ours is None or not saved.is_file():
        return
    vocab = _read_info(saved).extras.get("vocab")
    if vocab is not None and list(vocab) != list(ours):
        raise ConfigError(f"{bundle.name} has another word vocabulary than the run ({len(ours)} vs "
                          f"{len(vocab)} words); evaluate on data with the run's training split, or use predict")


def _read_info(path: Path) -> DataInfo:
    """A run's ``data_info.json`` (older plain files too: their other entries land in ``extras``)."""
    return DataInfo.from_dict(json.loads(path.read_text()))


def rebuild_run(run_dir: str | Path, *, data: str | None = None,
                model: nn.Module | None = None) -> tuple[dict[str, Any], DatasetBundle, str, Task]:
    """A finished run rebuilt from its directory alone: its recipe, its data, its task around the best weights.

    Args:
        run_dir: a directory written by :func:`fit`.
        data: another dataset spec replacing the recipe's (same classes and input layout).
        model: the model to wrap instead of the run's own (an ensemble's members before their weights exist).

    Returns:
        ``(config, bundle, task_name, task)``; the task holds the model of ``checkpoints/best.safetensors``.

    Example:
        >>> config, bundle, name, task = rebuild_run("runs/demo")  # doctest: +SKIP
    """
    config = read_config(run_dir)
    if data is not None:
        config = resolve_config(config, data=data)
    if model is None:
        model = load_run_model(run_dir, config)  # a single model, or an ensemble of the run's members
    config = _with_run_charset(config, Path(run_dir))
    # The rebuilt model's encoder is not "pretrained" (its weights come from the run): the run's record decides.
    info_path = Path(run_dir) / "data_info.json"
    recorded = recorded_normalization(_read_info(info_path)) if info_path.is_file() else None
    bundle = apply_encoder_preprocessing(load_bundle(config["data"], seed=config["seed"]), wanted=recorded)
    _check_same_vocabulary(Path(run_dir), bundle)
    name = task_name(config, bundle)
    return config, bundle, name, build_task(name, model, bundle.info, config["optim"])


def evaluate_run(run_dir: str | Path, *, data: str | None = None, accelerator: str = "cpu",
                 split: str = "test") -> RunResult:
    """Rebuild a run from its directory alone and evaluate it on the test split (or on ``data``'s test split).

    An ensemble run (``trainer.ensemble``) is rebuilt from its members and scored on their averaged probabilities.

    Args:
        run_dir: a directory written by :func:`fit`.
        data: another dataset spec with the same classes and input layout.
        accelerator: Lightning accelerator for the evaluation.
        split: ``"test"``, or ``"val"`` for the validation split the run carved from its training data.

    Example:
        >>> evaluate_run("runs/demo").metrics["test/acc"]  # doctest: +SKIP
    """
    if split not in ("test", "val"):
        raise ConfigError(f"evaluate_run scores the 'test' or the 'val' split, got {split!r}")
    run_dir = Path(run_dir)
    config, bundle, name, task = rebuild_run(run_dir, data=data)
    if split == "val" and config["trainer"].get("refit"):
        raise ConfigError(f"{run_dir} was refit on train + validation (trainer.refit): its model trained on the "
                          "validation split, so it has no validation score; its metrics.json holds the first fit's")
    data_module = RecipeData.from_section(bundle, config["data"], seed=config["seed"],
                                          stratify=name == "classification")
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False,
                         precision=config["trainer"]["precision"])
    try:
        evaluate = trainer.test if split == "test" else trainer.validate
        results = evaluate(task, datamodule=data_module, verbose=False)[0]
    except RuntimeError as exc:
        raise ConfigError(f"the run's model cannot read {bundle.name}: {str(exc).splitlines()[0]}") from None
    metrics = {k: float(v) for k, v in sorted(results.items())}
    return RunResult(run_dir=run_dir, metrics=metrics, config=config)
