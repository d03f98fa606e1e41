"""Training on cached features: swap a frames bundle and its frame model for stored features and the recurrent part.

The storage is :class:`cnnlstm.data.feature_cache.FeatureCache`; the model side (what a frame model's features
are, and the model that trains on them) is :mod:`cnnlstm.models.cached_features`. Random frame sampling or
augmentation makes every epoch see different inputs, so a cache would silently train on one frozen draw:
``feature_cache: true`` then raises :class:`~cnnlstm.errors.ConfigError`, and ``"auto"`` trains end to end and
logs why.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from cnnlstm.data import DatasetBundle
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.feature_cache import FeatureCache, dataset_cache_problem
from cnnlstm.errors import ConfigError
from cnnlstm.models.cached_features import CachedFeaturesModel, FrameFeatures, feature_path_problem

__all__ = ["cache_problem", "use_feature_cache"]

log = logging.getLogger(__name__)

_MODES = ("auto", True, False)


def cache_problem(model: nn.Module, dataset: Dataset | None = None) -> str | None:
    """Why features of ``model`` on ``dataset`` cannot be cached, or ``None`` when they can.

    The model needs a frozen-encoder feature path
    (:func:`~cnnlstm.models.cached_features.feature_path_problem`) and the data samples that repeat exactly
    (:func:`~cnnlstm.data.feature_cache.dataset_cache_problem`).

    Args:
        model: the model to train.
        dataset: the data to encode, or None to check only the model.

    Example:
        >>> from cnnlstm import create_model
        >>> cache_problem(create_model("frame_lstm", num_classes=2, freeze="none"))
        "the encoder has trainable parameters (freeze='none'); use model.freeze: all to cache its features"
    """
    return feature_path_problem(model) or (None if dataset is None else dataset_cache_problem(dataset))


def use_feature_cache(
    bundle: DatasetBundle,
    model: nn.Module,
    *,
    mode: bool | str = "auto",
    identity: Mapping[str, Any],
    root: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    dtype: str = "float32",
) -> tuple[DatasetBundle, nn.Module]:
    """Swap a frames bundle and model for cached features and the recurrent part, when that is valid.

    Args:
        bundle: the loaded dataset; ``train`` and ``test`` are each cached (validation is carved later from
            the cached train split, so changing ``val_fraction`` reuses the cache).
        model: the full model; it is trained through the returned wrapper and shares its weights.
        mode: ``True`` (cache or raise ``ConfigError`` saying why not), ``False`` (end to end, e.g. to
            fine-tune the encoder) or ``"auto"`` (cache when valid, else log why and train end to end).
        identity: what names the data, e.g. ``{"spec": ..., "options": ..., "seed": ...}``.
        root: cache directory (default :func:`~cnnlstm.data.feature_cache.default_cache_dir`).
        batch_size: clips per encoder forward while building.
        num_workers: DataLoader workers while building.
        device: where to encode (default CUDA when available).
        dtype: storage dtype, ``"float32"`` or ``"float16"`` (see :class:`~cnnlstm.data.feature_cache.FeatureCache`).

    Returns:
        ``(bundle, model)`` to train with: the cached bundle and a
        :class:`~cnnlstm.models.cached_features.CachedFeaturesModel`, or the inputs unchanged when not caching.

    Example:
        >>> identity = {"spec": spec, "options": opts, "seed": 0}  # doctest: +SKIP
        >>> bundle, train_model = use_feature_cache(bundle, model, mode="auto", identity=identity)  # doctest: +SKIP
    """
    if isinstance(mode, str) and mode.lower() in ("true", "false"):
        mode = mode.lower() == "true"
    if mode not in _MODES:
        raise ConfigError(f"data.feature_cache must be true, false or auto, got {mode!r}")
    if mode is False:
        return bundle, model
    problem = cache_problem(model) or (None if bundle.kind == "frames" else f"data kind {bundle.kind!r} is not frames")
    with torch.random.fork_rng(devices=[]):  # the checks read samples; they must not shift the run's randomness
        problem = problem or dataset_cache_problem(bundle.train) or dataset_cache_problem(bundle.test)
    if problem:
        if mode is True:
            raise ConfigError(f"data.feature_cache: true, but {problem} (or set data.feature_cache: false)")
        log.info("feature cache off: %s", problem)
        return bundle, model
    cache = FeatureCache(root, dtype=dtype)
    features = FrameFeatures(model)
    kwargs = {"batch_size": batch_size, "num_workers": num_workers, "collate_fn": bundle.collate_fn, "device": device}
    train = cache.get_or_build(features, bundle.train, identity={**identity, "split": "train"}, **kwargs)
    test = cache.get_or_build(features, bundle.test, identity={**identity, "split": "test"}, **kwargs)
    info = bundle.info.with_extras(feature_cache={"train": str(train.path), "test": str(test.path), "dtype": dtype,
                                                  "bytes_per_sample": train.manifest.get("bytes_per_sample")})
    cached = dataclasses.replace(bundle, train=train, test=test, info=info, collate_fn=pad_collate)
    return cached, CachedFeaturesModel(model)
