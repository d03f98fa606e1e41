"""A pretrained encoder's input preprocessing, applied to image and frame data in one place.

Pretrained weights expect the inputs they were trained with: timm records them in the model's
``pretrained_cfg`` (ImageNet mean/std for most, 0.5/0.5 for EfficientNet-Lite; the resize filter,
``interpolation``, bicubic for most), and a cnnlstm encoder file stores its own. :func:`apply_encoder_preprocessing`
reads them from the model's encoder (``encoder.pretrained_config``, only when ``encoder.pretrained`` is set), has
the training and test splits resize frames with that filter and normalise every sample's pixels with that mean/std,
and records them in ``bundle.info.normalization``: the run writes that to ``data_info.json``, where ``cnnlstm
predict`` (eager or ONNX) and the exported model's copy of ``data_info.json`` carry it again. Mean/std or an
interpolation given in the data options win; when they disagree with the encoder's, one warning line says so.

Every data source that yields pixels in [0, 1] under a known sample key (:data:`IMAGE_KEYS`) gets this for free;
a new image source only adds its kind there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cnnlstm.data._registry import DatasetBundle
from cnnlstm.data.frames import INTERPOLATIONS
from cnnlstm.data.info import DataInfo

__all__ = ["IMAGE_KEYS", "NormalizedDataset", "apply_encoder_preprocessing", "encoder_normalization",
           "normalize_images", "recorded_normalization"]

log = logging.getLogger(__name__)

#: the sample key holding pixels in [0, 1], per data kind that a frame encoder reads
IMAGE_KEYS = {"frames": "x", "images": "x", "vqa": "image", "captions": "images"}


def normalize_images(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel.

    Args:
        x: images or frames, channels third from the end.
        mean: one value per channel.
        std: one value per channel.

    Shape:
        - x: ``(..., C, H, W)``; output: the same.

    Example:
        >>> normalize_images(torch.ones(2, 1, 2, 2), [0.5], [0.5]).unique()
        tensor([1.])
    """
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)  # (C, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def encoder_normalization(model: nn.Module) -> dict[str, Any] | None:
    """The mean/std a model's pretrained encoder expects, or ``None`` (no encoder, or not pretrained).

    Args:
        model: a model with an ``encoder`` attribute (``frame_lstm``, ``multi_input``, ``captioner``).

    Returns:
        ``{"mean": [...], "std": [...], "source": "..."}``, one value per input channel, and ``"interpolation"``
        (the resize filter) when the encoder names one (timm encoders do).

    Example:
        >>> encoder_normalization(create_model("frame_lstm", num_classes=2, encoder="timm:tf_efficientnet_lite0",
        ...                                    pretrained=True))  # doctest: +SKIP
        {'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'source': "encoder 'timm:tf_efficientnet_lite0' ..."}
    """
    encoder = getattr(model, "encoder", None)
    config = getattr(encoder, "pretrained_config", None) or {}
    if encoder is None or not getattr(encoder, "pretrained", False) or "mean" not in config or "std" not in config:
        return None
    out = {"mean": [float(v) for v in config["mean"]], "std": [float(v) for v in config["std"]],
           "source": f"encoder {getattr(encoder, 'name', '?')!r} pretrained_config"}
    if config.get("interpolation") in INTERPOLATIONS:  # timm also knows "random" (training-time augmentation)
        out["interpolation"] = str(config["interpolation"])
    return out


class NormalizedDataset(Dataset):
    """A dataset whose samples' pixels (``sample[key]``) are normalised per channel; everything else passes through.

    Attributes the wrapped dataset declares (its clips, size, frame sampling, ``targets``) are read through, so
    splits and the feature cache see the same dataset, plus ``mean``/``std``.

    Args:
        dataset: samples ``{key: (..., C, H, W) in [0, 1], ...}``.
        mean: one value per channel.
        std: one value per channel.
        key: the sample key holding pixels.

    Shape:
        - ``sample[key]``: ``(..., C, H, W)``, unchanged in shape.

    Example:
        >>> ds = NormalizedDataset([{"x": torch.ones(1, 2, 2)}], [0.5], [0.5])
        >>> ds[0]["x"].unique()
        tensor([1.])
    """

    def __init__(self, dataset: Dataset, mean: Sequence[float], std: Sequence[float], key: str = "x") -> None:
        self.dataset = dataset
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample[self.key] = normalize_images(sample[self.key], self.mean, self.std)
        return sample

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def without_augmentation(self) -> NormalizedDataset:
        """The wrapped dataset's evaluation view (see :func:`cnnlstm.data.splits.split_train_val`), normalised."""
        view = getattr(self.dataset, "without_augmentation", None)
        return self if view is None else NormalizedDataset(view(), self.mean, self.std, self.key)

    def with_interpolation(self, interpolation: str) -> NormalizedDataset:
        """The wrapped dataset resized with another filter (see :meth:`FramesDataset.with_interpolation`), normalised.

        Raises:
            AttributeError: the wrapped dataset does not resize.
        """
        return NormalizedDataset(self.dataset.with_interpolation(interpolation), self.mean, self.std, self.key)


def recorded_normalization(data_info: DataInfo) -> dict[str, Any] | None:
    """The encoder normalisation a run applied (its ``data_info.json``), or ``None`` when it applied none.

    A rebuilt model loads its weights from the run, not as "pretrained", so the run's record decides.

    Example:
        >>> recorded_normalization(DataInfo(normalization={"mean": [0.5], "std": [0.5], "source": "encoder 'cnn' ..."}))
        {'mean': [0.5], 'std': [0.5], 'source': "encoder 'cnn' ..."}
    """
    norm = data_info.normalization
    return dict(norm) if norm.get("source") and norm.get("mean") is not None else None


def apply_encoder_preprocessing(bundle: DatasetBundle, model: nn.Module | None = None, *,
                                wanted: dict[str, Any] | None = None) -> DatasetBundle:
    """Normalise a bundle's pixels the way the model's pretrained encoder expects, and record it.

    Args:
        bundle: the loaded data; kinds outside :data:`IMAGE_KEYS` pass unchanged.
        model: the built model (its ``encoder`` decides, see :func:`encoder_normalization`).
        wanted: the normalisation to apply instead (``{mean, std, source}``, e.g. :func:`recorded_normalization`
            of a finished run).

    Returns:
        The bundle with normalised ``train``/``test`` and ``info.normalization`` = ``{mean, std, source}``,
        plus ``interpolation`` when the splits resize frames (they then resize with the encoder's filter);
        unchanged when the encoder is not pretrained. Mean/std or an interpolation already given in the data
        options are kept (a warning line when they differ from the encoder's).

    Example:
        >>> bundle = apply_encoder_preprocessing(load_dataset("frames:clips"), model)  # doctest: +SKIP
    """
    key = IMAGE_KEYS.get(bundle.kind)
    if wanted is None and model is not None and key is not None:
        wanted = encoder_normalization(model)
    if wanted is None or key is None:
        return bundle
    given = bundle.info.normalization
    norm, train, test = dict(given), bundle.train, bundle.test
    resize = wanted.get("interpolation")
    if resize is not None and hasattr(train, "with_interpolation"):
        if given.get("interpolation") is None:
            train, test = train.with_interpolation(resize), test.with_interpolation(resize)
            norm["interpolation"] = resize
        elif given["interpolation"] != resize:
            log.warning("data.options interpolation=%s differs from what %s expects (%s); using the given value "
                        "(drop it to use the encoder's)", given["interpolation"], wanted["source"], resize)
    if given.get("mean") is not None or given.get("std") is not None:
        channels = len(wanted["mean"])
        mean = list(given.get("mean") or [0.0] * channels)
        std = list(given.get("std") or [1.0] * channels)
        if not (_close(mean, wanted["mean"]) and _close(std, wanted["std"])):
            log.warning("data.options mean=%s std=%s differ from what %s expects (mean=%s std=%s); using the given "
                        "values (drop them to use the encoder's)", mean, std, wanted["source"], wanted["mean"],
                        wanted["std"])
        if norm == given:
            return bundle
        # mean/std as given, recorded with the source so a rebuilt run replays the encoder's interpolation too
        norm = {**norm, "mean": mean, "std": std, "source": wanted["source"]}
    else:
        mean, std = wanted["mean"], wanted["std"]
        norm = {**norm, "mean": mean, "std": std, "source": wanted["source"]}
        train, test = NormalizedDataset(train, mean, std, key), NormalizedDataset(test, mean, std, key)
    info = dataclasses.replace(bundle.info, normalization=norm)
    return dataclasses.replace(bundle, train=train, test=test, info=info)


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 for x, y in zip(a, b, strict=True))
