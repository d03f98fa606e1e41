"""Predictions from a run directory: read new inputs the way the run's data was read, run the best model.

Inputs by data kind: series runs take ``.npz`` files (an array ``X`` / ``X_test`` / ``x`` of (N, T, F) or
(N, T), optional ``lengths``) and ``.ts`` files; image runs (``images``, ``text_image``, ``captions``) take
image files; frame runs take a clip: a folder of frame images (sorted by name) or an ``.npz`` with one
(T, C, H, W) array. Series get the run's normalisation; images are scaled to [0, 1] and resized to the
run's image size, and frames and images then get the run's per-channel mean/std (``data_info.json``: a
pretrained encoder's own, or the data options').
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.data._npz import npz_array, open_npz
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.preprocess import IMAGE_KEYS, normalize_images
from cnnlstm.engine.rundir import atomic_write, load_weights, read_config, weights_path
from cnnlstm.errors import ConfigError, DataError
from cnnlstm.tasks import ClassificationTask, build_task

__all__ = ["predict", "Prediction", "read_series_file", "read_clip_file", "read_image", "predictions_csv"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

Prediction = dict[str, Any]  # {"input": str, "label": str, "probability": float, "probabilities": {...}}


def _read_npz(path: Path) -> tuple[str, np.ndarray, np.ndarray | None]:
    """The input array of an ``.npz`` (``X`` / ``X_test`` / ``x`` / its only array) as float32, and ``lengths``.

    Read through the data package's pickle-free reader, so ``predict`` inputs and the ``npz:`` source give
    the same messages for the same faults.
    """
    where = str(path)
    with open_npz(where, where) as data:
        key = next((k for k in ("X", "X_test", "x") if k in data.files), None)
        if key is None and len(data.files) == 1:
            key = data.files[0]
        if key is None:
            raise DataError(f"{path}: name the series array X (found {', '.join(data.files) or 'no arrays'})")
        try:
            raw = npz_array(data, key, where)
            lengths = npz_array(data, "lengths", where) if "lengths" in data.files else None
        except (OSError, EOFError, zipfile.BadZipFile) as err:  # a member cut off or with a bad CRC
            raise DataError(f"{where} is not a readable .npz file ({err}); save it with numpy.savez") from None
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} must hold numbers, got dtype {raw.dtype}")
    return key, raw, lengths


def _check_lengths(path: Path, lengths: np.ndarray, n: int, steps: int) -> list[int]:
    """``lengths`` as ints, one per series, each in 1..``steps`` (the padded size)."""
    if lengths.ndim != 1 or len(lengths) != n:
        raise DataError(f"{path}: lengths must hold one length per series ({n}), got shape {lengths.shape}")
    if lengths.dtype.kind not in "iuf" or (lengths.dtype.kind == "f" and not np.all(np.mod(lengths, 1) == 0)):
        raise DataError(f"{path}: lengths must be whole numbers, got {lengths[:5].tolist()}")
    bad = np.flatnonzero((lengths < 1) | (lengths > steps))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:5])
        raise DataError(f"{path}: lengths must be between 1 and the padded size {steps}; samples {shown} have "
                        f"{', '.join(str(lengths[i]) for i in bad[:5])}")
    return [int(v) for v in lengths]


def read_series_file(path: str | Path) -> list[np.ndarray]:
    """Series (T, F) from an ``.npz`` or ``.ts`` file.

    An ``.npz`` holds ``X`` (or ``X_test`` / ``x`` / a single array) of (N, T, F) or (N, T) and, for padded
    series, ``lengths`` (N,) with each true length in 1..T.

    Args:
        path: the ``.npz`` or ``.ts`` file.

    Raises:
        DataError: the file is missing or unreadable, holds no numeric (N, T, F) array, zero-length series,
            or ``lengths`` that do not fit the array.

    Example:
        >>> series = read_series_file("new_recordings.npz")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    if path.suffix == ".ts":
        from cnnlstm.data.series import read_ts

        x, _ = read_ts(path)
        return [np.asarray(s, dtype=np.float32) for s in x]
    if path.suffix != ".npz":
        raise DataError(f"{path}: series runs predict from .npz or .ts files, got {path.suffix or 'no suffix'}")
    key, x, lengths = _read_npz(path)
    if x.ndim == 2:
        x = x[:, :, None]  # univariate (N, T) -> (N, T, 1)
    if x.ndim != 3:
        raise DataError(f"{path}: {key} must be (N, T, F) or (N, T), got {x.shape}")
    if x.shape[1] == 0:
        raise DataError(f"{path}: {key} {x.shape} holds series of zero length; every series needs at least one step")
    x = x.astype(np.float32, copy=False)
    if lengths is None:
        return list(x)
    return [s[:n] for s, n in zip(x, _check_lengths(path, lengths, len(x), x.shape[1]), strict=True)]


def read_clip_file(path: str | Path) -> Tensor:
    """One clip (T, C, H, W) from an ``.npz``: floats in [0, 1], or uint8 pixels (scaled by 1/255).

    Args:
        path: the ``.npz`` file holding one (T, C, H, W) array.

    Shape:
        - returns: ``(T, C, H, W)`` float32.

    Example:
        >>> read_clip_file("clip.npz").shape  # doctest: +SKIP
        torch.Size([16, 3, 64, 64])
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    key, x, _ = _read_npz(path)
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{path}: {key} must be one clip (T, C, H, W) with T >= 1, got {x.shape}")
    clip = torch.from_numpy(np.ascontiguousarray(x)).float()  # (T, C, H, W)
    if not torch.isfinite(clip).all():
        raise DataError(f"{path}: {key} holds NaN or inf; clean the clip first")
    return clip / 255.0 if x.dtype == np.uint8 else clip


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None) -> Tensor:
    """An image file as a (C, H, W) float tensor in [0, 1], resized to ``size`` (H, W) when given.

    Example:
        >>> read_image("digit.png", 1, (32, 32)).shape  # doctest: +SKIP
        torch.Size([1, 32, 32])
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    try:
        image = Image.open(path).convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image ({exc})") from None
    if size is not None:
        image = image.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    return torch.from_numpy(np.ascontiguousarray(array))


def _normalise(series: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    mode = normalization.get("mode", "none")
    if mode == "channel":
        return (series - np.asarray(normalization["mean"])) / np.asarray(normalization["std"])
    if mode == "series":
        mean, std = series.mean(axis=0), series.std(axis=0)
        return (series - mean) / np.where(std > 1e-8, std, 1.0)
    return series


def _normalise_pixels(x: Tensor, kind: str, info: dict[str, Any]) -> Tensor:
    """The run's per-channel mean/std (a pretrained encoder's, or the data options'), as training applied it."""
    norm = info.get("normalization") or {}
    if kind not in IMAGE_KEYS or (norm.get("mean") is None and norm.get("std") is None):
        return x
    channels = x.shape[-3]
    return normalize_images(x, norm.get("mean") or [0.0] * channels, norm.get("std") or [1.0] * channels)


def _samples(inputs: list[str], info: dict[str, Any], channels: int) -> list[tuple[str, dict[str, Tensor]]]:
    kind = info.get("kind", "series")
    size = info.get("image_size")
    size = (size, size) if isinstance(size, int) else tuple(size) if size else None
    out = []
    for item in inputs:
        path = Path(item)
        if kind == "series":
            for i, s in enumerate(read_series_file(path)):
                if not np.isfinite(s).all():
                    raise DataError(f"{path} sample {i} holds NaN or inf; clean or impute it first")
                x = torch.from_numpy(_normalise(s, info.get("normalization", {})).astype(np.float32))
                out.append((f"{path}[{i}]", {"x": x}))
        elif kind == "frames":
            if path.is_dir():
                frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if not frames:
                    raise DataError(f"{path} holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
                clip = torch.stack([read_image(p, channels, size) for p in frames])  # (T, C, H, W)
            elif path.suffix == ".npz":
                clip = read_clip_file(path)  # (T, C, H, W)
                if clip.shape[1] != channels:
                    raise DataError(f"{path}: the run reads {channels}-channel frames, got {tuple(clip.shape)}")
                if size is not None and tuple(clip.shape[-2:]) != size:  # frames are resized in training too
                    clip = F.interpolate(clip, size=size, mode="bilinear", align_corners=False)  # (T, C, H', W')
            else:
                raise DataError(f"{path}: clips are folders of frame images or .npz files of (T, C, H, W)")
            out.append((str(path), {"x": _normalise_pixels(clip.float(), kind, info)}))
        elif kind in ("images", "text_image", "captions"):
            key = "images" if kind == "captions" else "x"
            out.append((str(path), {key: _normalise_pixels(read_image(path, channels, size), kind, info)}))
        else:
            raise ConfigError(f"predict does not read inputs for {kind!r} runs (yet); use cnnlstm test")
    if not out:
        raise DataError("no inputs to predict")
    return out


class _OnnxModel(nn.Module):
    """An exported model on onnxruntime behind the registered-model interface the tasks call."""

    def __init__(self, path: str | Path, like: dict[str, Any]) -> None:
        super().__init__()
        from cnnlstm.export import OnnxPredictor

        self.predictor = OnnxPredictor(path)
        self.input_names = self.predictor.input_names
        self.output_kind = self.predictor.output_kind or like.get("output_kind", "logits")
        kwargs = self.predictor.model_config.get("kwargs", {})
        self.num_classes = kwargs.get("num_classes", kwargs.get("vocab_size", like.get("num_classes")))
        self.model_name = self.predictor.model_config.get("name", "onnx")

    def forward(self, **inputs: Tensor) -> Tensor:
        return self.predictor(**inputs)


@torch.no_grad()
def predict(run_dir: str | Path, inputs: list[str], batch_size: int = 64,
            onnx: str | Path | None = None) -> list[Prediction]:
    """Predict labels (with probabilities) or strings for input files with a run's best model.

    Args:
        run_dir: a directory written by ``fit``.
        inputs: file paths (see the module docstring for what each kind of run reads).
        batch_size: inputs per forward pass.
        onnx: an ``.onnx`` file exported from this run (``cnnlstm export``); it then runs on onnxruntime
            instead of PyTorch, with the same input reading, labels and decoding.

    Returns:
        one dict per sample: ``input``, ``label`` and, for classifiers, ``probability`` and ``probabilities``.

    Example:
        >>> predict("runs/basic_motions", ["walk.npz"])[0]["label"]  # doctest: +SKIP
        'walking'
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    info_path = run_dir / "data_info.json"
    if not info_path.is_file():
        raise ConfigError(f"{run_dir} has no data_info.json; was its fit finished?")
    info = json.loads(info_path.read_text())
    if onnx is not None:
        eager = {"num_classes": info.get("model_kwargs", {}).get("num_classes")}
        model: nn.Module = _OnnxModel(onnx, eager)
    else:
        model = load_weights(weights_path(run_dir))
    task = build_task(info["task"], model, info, config["optim"])
    task.eval()
    channels = int(info.get("model_kwargs", {}).get("in_channels", 3))
    samples = _samples(inputs, info, channels)
    results: list[Prediction] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = pad_collate([s for _, s in chunk])
        out = task.predict_step(batch)
        for (name, _), row in zip(chunk, out, strict=True):
            if isinstance(task, ClassificationTask):
                k = int(row.argmax())
                results.append({"input": name, "label": task.class_names[k], "probability": float(row[k]),
                                "probabilities": dict(zip(task.class_names, row.tolist(), strict=True))})
            else:
                results.append({"input": name, "label": row if isinstance(row, str) else str(row.tolist())})
    return results


def predictions_csv(predictions: list[Prediction], path: str | Path) -> Path:
    """Write predictions as CSV: input, label, probability, then one column per class.

    Example:
        >>> predictions_csv(predict("runs/x", ["a.npz"]), "out.csv")  # doctest: +SKIP
    """
    import csv
    import io

    classes = list(predictions[0].get("probabilities", {})) if predictions else []
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["input", "label", *(["probability"] if classes else []), *[f"p_{c}" for c in classes]])
    for p in predictions:
        probs = [f"{p['probabilities'][c]:.6f}" for c in classes]
        writer.writerow([p["input"], p["label"], *([f"{p['probability']:.6f}"] if classes else []), *probs])
    return atomic_write(path, buf.getvalue())
