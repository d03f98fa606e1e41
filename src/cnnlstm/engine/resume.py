"""Exact resumption: a run killed at any point continues from ``last.ckpt`` and ends with the same numbers.

Lightning restores weights, optimiser, scheduler, loop counters and callback state (early stopping, best
checkpoint, SWA). Three things it leaves to us, and this module supplies:

* **Randomness per epoch.** :class:`ReproducibleTraining` reseeds torch, numpy and ``random`` at the start of
  every training epoch from ``(seed, epoch)``, so epoch ``e`` draws the same dropout masks and augmentations
  whether or not the process started at epoch 0. The training order comes from :class:`EpochShuffleSampler`
  (a permutation seeded by ``(seed, epoch)``), not from a generator whose state would be lost.
* **Mid-epoch checkpoints** (``trainer.checkpoint_every_n_steps``). The callback stores how many batches of
  the epoch were done and the RNG states at that moment; on resume the sampler skips those batches and the
  RNG states are put back before the next batch, so the rest of the epoch is the uninterrupted run's.
* **Whole files.** :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file and renames it, so
  a SIGKILL during a save leaves the previous ``last.ckpt``, never half of one.

Example:
    >>> sampler = EpochShuffleSampler(10, seed=0)
    >>> sampler.set_epoch(3)
    >>> sorted(sampler) == list(range(10))
    True
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint
from torch import Tensor
from torch.utils.data import Sampler

from cnnlstm._io import write_through_temp
from cnnlstm.errors import WeightsError

__all__ = ["epoch_seed", "EpochShuffleSampler", "ReproducibleTraining", "AtomicCheckpointIO", "LastCheckpoint"]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for ``epoch`` of a run seeded with ``seed`` (independent streams per epoch).

    Example:
        >>> epoch_seed(0, 1) != epoch_seed(0, 2) and epoch_seed(0, 1) == epoch_seed(0, 1)
        True
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


class EpochShuffleSampler(Sampler[int]):
    """Shuffles ``range(n)`` with a permutation that depends only on ``(seed, epoch)``; can skip a prefix.

    Lightning calls :meth:`set_epoch` before each epoch. :meth:`resume_at` makes the next iteration start
    ``skip`` samples into ``epoch``'s permutation (a mid-epoch resume); the length stays the whole epoch,
    as Lightning counts the batches already done.

    Args:
        n: dataset size.
        seed: the run's seed.
        groups: the group of every sample (``n`` hashable values), or ``None``. With groups, an epoch's order
            is the groups in a shuffled order, each group's samples together and shuffled among themselves,
            so a batch holds whole groups (and parts of at most two more at its ends).

    Example:
        >>> a, b = EpochShuffleSampler(6, seed=1), EpochShuffleSampler(6, seed=1)
        >>> b.resume_at(epoch=0, skip=2)
        >>> list(a)[2:] == list(b)
        True
        >>> order = list(EpochShuffleSampler(6, seed=0, groups=["a", "b", "a", "c", "b", "c"]))
        >>> [["a", "b", "a", "c", "b", "c"][i] for i in order]  # whole groups, one after another
        ['b', 'b', 'a', 'a', 'c', 'c']
    """

    def __init__(self, n: int, seed: int, groups: Sequence[Hashable] | None = None) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0
        self._skip = 0
        self._members: list[Tensor] | None = None
        if groups is not None:
            if len(groups) != n:
                raise ValueError(f"groups names {len(groups)} samples, the sampler has {n}")
            _, inverse = np.unique(np.asarray(groups), return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.cumsum(np.bincount(inverse))[:-1]
            self._members = [torch.from_numpy(part) for part in np.split(order, bounds)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, skip: int) -> None:
        """Start the next iteration at sample ``skip`` of ``epoch``'s permutation."""
        self.epoch, self._skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self._members is None:
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            groups = torch.randperm(len(self._members), generator=generator).tolist()
            order = [int(i) for g in groups
                     for i in self._members[g][torch.randperm(len(self._members[g]), generator=generator)]]
        skip, self._skip = self._skip, 0
        return iter(order[skip:])

    def __len__(self) -> int:
        return self.n


def _rng_state() -> dict[str, Any]:
    # Only tensors and plain Python values, so checkpoints still load with torch.load(weights_only=True).
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)  # every device's generator
    np.random.seed(seed % 2**32)
    random.seed(seed)


class ReproducibleTraining(pl.Callback):
    """Per-epoch reseeding, mid-epoch resume state, and the end of each training epoch before checkpoints.

    Args:
        seed: the run's seed.
        sampler: the training sampler (``None`` under DDP, where Lightning's seeded ``DistributedSampler``
            orders the data and a mid-epoch resume restarts that epoch's order).
        batch_size: samples per training batch (to turn batches done into samples to skip).

    Example:
        >>> callback = ReproducibleTraining(0, EpochShuffleSampler(30, seed=0), batch_size=8)
    """

    def __init__(self, seed: int, sampler: EpochShuffleSampler | None, batch_size: int) -> None:
        self.seed = seed
        self.sampler = sampler
        self.batch_size = batch_size
        self._pending_rng: dict[str, Any] | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _seed_all(epoch_seed(self.seed, trainer.current_epoch))
        reseed = getattr(pl_module, "reseed_augmentation", None)
        if reseed is not None:
            reseed(epoch_seed(self.seed + 1, trainer.current_epoch))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending_rng is not None:  # first batch after a mid-epoch resume
            _set_rng_state(self._pending_rng)
            self._pending_rng = None

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Checkpoint callbacks run after this one: the epoch's training metrics are in the history they save.
        finish = getattr(pl_module, "finish_train_epoch", None)
        if finish is not None:
            finish()

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        total = trainer.num_training_batches
        state = {"epoch": int(trainer.current_epoch), "batches_done": done,
                 "epoch_finished": bool(total != float("inf") and done >= total)}
        if not state["epoch_finished"]:
            state["rng"] = _rng_state()
            get = getattr(trainer.lightning_module, "augmentation_state", None)
            state["augmentation"] = get() if get is not None else None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict["epoch_finished"]:
            if self.sampler is not None:
                self.sampler.resume_at(state_dict["epoch"] + 1, 0)
            return
        if self.sampler is not None:
            self.sampler.resume_at(state_dict["epoch"], state_dict["batches_done"] * self.batch_size)
        self._pending_rng = state_dict["rng"]
        self._pending_augmentation = state_dict.get("augmentation")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pending = getattr(self, "_pending_augmentation", None)
        if pending is not None and hasattr(pl_module, "load_augmentation_state"):
            pl_module.load_augmentation_state(pending)
        self._pending_augmentation = None


class LastCheckpoint(Checkpoint):
    """``last.ckpt`` at the end of every training epoch and, optionally, every N optimiser steps.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning runs it after every other callback: the
    epoch's training metrics, early-stopping counters and best-checkpoint bookkeeping are in the file. Step
    checkpoints skip an epoch's last batch: saved after it but before the epoch's validation, they would resume
    past that validation (Lightning counts the epoch as done); the end-of-epoch save follows a moment later.

    Args:
        path: the checkpoint file (``RUN/checkpoints/last.ckpt``).
        every_n_train_steps: optimiser steps between mid-epoch saves; ``None`` saves at epoch ends only.

    Example:
        >>> LastCheckpoint("runs/x/checkpoints/last.ckpt", every_n_train_steps=100)  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, every_n_train_steps: int | None = None) -> None:
        self.path = Path(path)
        self.every = every_n_train_steps
        self._saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        # weights_only=False: the full training state (optimiser, loops, callbacks), which resuming needs. Said
        # explicitly: left as None, Lightning logs that it defaulted to False after every epoch.
        trainer.save_checkpoint(self.path, weights_only=False)  # through AtomicCheckpointIO; rank 0 writes
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if (self.every and step % self.every == 0 and step != self._saved_step
                and batch_idx + 1 < trainer.num_training_batches):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written through a temporary file and a rename, and read without running code.

    Writing: never half a file on disk. Reading (``trainer.fit(ckpt_path=...)`` on resume): always
    ``torch.load(weights_only=True)``, whatever the caller asks, since every checkpoint cnnlstm writes holds
    only tensors and plain values; a crafted pickle is refused and a damaged file is a one-line
    :class:`~cnnlstm.errors.WeightsError` saying what to do, instead of torch's traceback.

    Example:
        >>> trainer = pl.Trainer(plugins=[AtomicCheckpointIO()])  # doctest: +SKIP
    """

    def load_checkpoint(self, path: Any, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"no checkpoint at {path}")
        try:
            state = torch.load(path, map_location=map_location or "cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise WeightsError(f"{path} cannot be resumed from: it is damaged or not a checkpoint cnnlstm wrote "
                               f"(loading only tensors and plain values failed: {reason}); delete it to restart "
                               "the run from its first epoch") from None
        if not isinstance(state, dict) or "state_dict" not in state:
            raise WeightsError(f"{path} is not a Lightning checkpoint (no state_dict); delete it to restart the run "
                               "from its first epoch")
        return state

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        # fsynced: a power cut cannot leave a truncated last.ckpt to resume from
        write_through_temp(path, lambda tmp: torch.save(checkpoint, tmp))
