"""From a recipe's ``data`` section to Lightning dataloaders: load, carve validation from train, check.

Validation is carved from the training split (stratified by class, seeded), so it can drive early stopping
and checkpoint choice without touching the test split. The training order of epoch ``e`` is a permutation
seeded by ``(seed, e)`` (:class:`~cnnlstm.engine.resume.EpochShuffleSampler`), so a resumed run reads the
same batches as an uninterrupted one. Under DDP, validation and test use a sampler that
neither pads nor repeats samples, so metrics gathered across processes count every sample exactly once.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Subset

from cnnlstm.data import DatasetBundle, load_dataset
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.splits import split_train_val
from cnnlstm.engine.resume import EpochShuffleSampler
from cnnlstm.errors import ConfigError, DataError

__all__ = ["RecipeData", "load_bundle", "check_classes"]

# Kinds whose classes are the data's own labels. VQA answers come from a fixed answer vocabulary, where a
# rare answer absent from a small training split is expected, not a mistake in the data.
LABELLED_KINDS = ("series", "frames", "images")


def load_bundle(section: dict[str, Any], seed: int) -> DatasetBundle:
    """Load the dataset of a recipe ``data`` section (``spec`` + ``options``).

    Example:
        >>> bundle = load_bundle({"spec": "ucr:BasicMotions", "options": {}}, seed=0)  # doctest: +SKIP
    """
    try:
        return load_dataset(section["spec"], seed=seed, **(section.get("options") or {}))
    except FileNotFoundError as exc:
        raise DataError(f"{section['spec']}: file not found: {exc.filename or exc}") from None


def check_classes(targets: Any, num_classes: int, where: str, class_names: list[str] | None = None) -> None:
    """Raise ``DataError`` when a class has no sample in a split the model is trained on.

    Example:
        >>> check_classes([0, 1, 1], 2, "train")
    """
    present = set(np.asarray(targets).tolist())
    missing = [c for c in range(num_classes) if c not in present]
    if missing:
        names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in missing]
        raise DataError(f"{where} has no sample of class {', '.join(names)}; every class needs training samples "
                        "(add data, or lower data.val_fraction)")


class RecipeData(pl.LightningDataModule):
    """Train / validation / test dataloaders for one dataset bundle.

    Args:
        bundle: the loaded dataset.
        val_fraction: share of every training class that goes to validation.
        batch_size: samples per batch (per process under DDP).
        num_workers: dataloader worker processes.
        seed: seed of the validation split and of each epoch's training order.
        stratify: split per class (classification data with ``info.targets``).
        pin_memory: page-locked batches (faster host-to-GPU copies).
        persistent_workers: keep worker processes between epochs (with ``num_workers > 0``).
        holdout: carve the validation split; ``False`` trains on the whole training split with an empty
            validation split (``trainer.refit``'s second fit).
        group_batches: training batches of whole groups (``bundle.info.groups``; ``data.group_batches``).

    Example:
        >>> data = RecipeData(load_dataset("ucr:BasicMotions"), val_fraction=0.2, batch_size=16)  # doctest: +SKIP
    """

    @classmethod
    def from_section(cls, bundle: DatasetBundle, data_cfg: dict[str, Any], *, seed: int, stratify: bool,
                     holdout: bool = True) -> RecipeData:
        """The dataloaders a recipe's ``data`` section asks for (validation fraction, batch size, workers)."""
        return cls(bundle, val_fraction=data_cfg["val_fraction"], batch_size=data_cfg["batch_size"],
                   num_workers=data_cfg["num_workers"], seed=seed, stratify=stratify,
                   pin_memory=data_cfg["pin_memory"], persistent_workers=data_cfg["persistent_workers"],
                   holdout=holdout, group_batches=bool(data_cfg.get("group_batches", False)))

    def __init__(self, bundle: DatasetBundle, *, val_fraction: float, batch_size: int, num_workers: int = 0,
                 seed: int = 0, stratify: bool = True, pin_memory: bool = False,
                 persistent_workers: bool = False, holdout: bool = True, group_batches: bool = False) -> None:
        super().__init__()
        self.bundle = bundle
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = seed
        targets = bundle.info.targets if stratify else None
        n_test = len(bundle.test)  # type: ignore[arg-type]
        if len(bundle.train) == 0:  # type: ignore[arg-type]
            raise DataError(f"{bundle.name}: the training split is empty")
        if n_test == 0:
            raise DataError(f"{bundle.name}: the test split is empty")
        # Samples that share a source (questions about one scene) go to validation together, or validation
        # would score what training has seen.
        groups = bundle.info.groups
        if holdout:
            self.train_set, self.val_set = split_train_val(bundle.train, val_fraction, seed, stratify=targets,
                                                           groups=groups)
        else:
            everything = list(range(len(bundle.train)))  # type: ignore[arg-type]
            self.train_set, self.val_set = Subset(bundle.train, everything), Subset(bundle.train, [])
        if len(self.train_set) == 0 or (holdout and len(self.val_set) == 0):
            raise DataError(f"{bundle.name}: a validation fraction of {val_fraction} leaves an empty split "
                            f"({len(self.train_set)} train, {len(self.val_set)} validation); change data.val_fraction")
        if targets is not None and bundle.kind in LABELLED_KINDS:
            num_classes = int(bundle.info.model_kwargs.get("num_classes", 0) or 0)
            train_targets = np.asarray(targets)[np.asarray(self.train_set.indices)]
            check_classes(train_targets, num_classes, f"{bundle.name} (train split)", bundle.info.class_names)
        self.test_set = bundle.test
        train_groups = None
        if group_batches:
            if groups is None:
                raise ConfigError(f"data.group_batches needs data whose samples name their group (several questions "
                                  f"about one image: vqa, builtin:sort_of_clevr); {bundle.name} names none. "
                                  "Remove data.group_batches")
            train_groups = np.asarray(groups)[np.asarray(self.train_set.indices)]
        self.train_sampler = EpochShuffleSampler(len(self.train_set), seed, groups=train_groups)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        sampler = None
        trainer = self.trainer
        distributed = trainer is not None and trainer.world_size > 1
        if not shuffle and distributed:
            # Lightning's default sampler pads the last batch with repeats; evaluation must see each sample once.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                                   shuffle=False)
        elif shuffle and not distributed:
            sampler = self.train_sampler  # under DDP Lightning's DistributedSampler shuffles by (seed, epoch)
        # The loader's own generator seeds its workers, so creating an iterator never draws from the global RNG
        # (which the training epoch owns: dropout, augmentation).
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                          num_workers=self.num_workers, collate_fn=self.bundle.collate_fn or pad_collate,
                          pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
                          generator=generator)

    def whole_train_set(self) -> Subset:
        """Training and validation parts together, in the training split's own order (what a model that picks
        nothing on validation may fit on)."""
        return Subset(self.train_set.dataset, sorted([*self.train_set.indices, *self.val_set.indices]))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
