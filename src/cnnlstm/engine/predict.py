"""Predictions from a run directory: read new inputs the way the run's data was read, run the best model.

Inputs by data kind: series runs take ``.npz`` files (an array ``X`` / ``X_test`` / ``x`` of (N, T, F) or
(N, T), optional ``lengths``) and ``.ts`` files; image runs (``images``, ``text_image``, ``captions``) take
image files (captions runs also folders of images and ``.txt`` lists of image paths); VQA runs take CSV files
with a header ``image,question`` (image paths relative to the CSV's folder); frame runs take a clip: a folder of
frame images (sorted by name) or an ``.npz`` with one (T, C, H, W) array. Series get the run's normalisation;
images are scaled to [0, 1] and resized to the run's image size, and frames and images then get the run's
per-channel mean/std (``data_info.json``: a pretrained encoder's own, or the data options'); text lines
(``text:`` runs) keep their aspect ratio at the run's height, and a folder reads every image in it. Forecast
runs read sequences and write frames (:func:`predict_forecast`).
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

from cnnlstm._io import atomic_write
from cnnlstm.data._npz import npz_array, open_npz
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.frames import clip_paths, read_clip
from cnnlstm.data.info import DataInfo
from cnnlstm.data.preprocess import IMAGE_KEYS, normalize_images
from cnnlstm.data.text_lines import pad_width_collate, read_text_line
from cnnlstm.engine.ensemble import load_run_model
from cnnlstm.engine.rundir import read_config
from cnnlstm.errors import ConfigError, DataError
from cnnlstm.tasks import CaptioningTask, ClassificationTask, build_task

__all__ = ["predict", "predict_forecast", "Prediction", "read_data_info", "read_series_file", "read_clip_file",
           "read_image", "predictions_csv"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

Prediction = dict[str, Any]  # {"input": str, "label": str, "probability": float, "probabilities": {...}}


def _existing_file(path: str | Path, reads: str) -> Path:
    """``path`` as a Path when it is a file; a folder or a missing path is a ``DataError`` saying which."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, but this run reads {reads}; give it those instead")
    if not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    return path


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
    path = _existing_file(path, "series from .npz or .ts files")
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
    path = _existing_file(path, "one clip per .npz file or frame folder")
    key, x, _ = _read_npz(path)
    if x.ndim != 4 or x.shape[0] == 0:
        raise DataError(f"{path}: {key} must be one clip (T, C, H, W) with T >= 1, got {x.shape}")
    clip = torch.from_numpy(np.ascontiguousarray(x)).float()  # (T, C, H, W)
    if not torch.isfinite(clip).all():
        raise DataError(f"{path}: {key} holds NaN or inf; clean the clip first")
    return clip / 255.0 if x.dtype == np.uint8 else clip


def _images_in(folder: Path, what: str = "images") -> list[Path]:
    """The image files directly in ``folder``, in name order; a folder without any is a ``DataError``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder} holds no {what} ({', '.join(IMAGE_SUFFIXES)})")
    return files


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None) -> Tensor:
    """An image file as a (C, H, W) float tensor in [0, 1], resized to ``size`` (H, W) when given.

    Example:
        >>> read_image("digit.png", 1, (32, 32)).shape  # doctest: +SKIP
        torch.Size([1, 32, 32])
    """
    from cnnlstm.data.manifest import read_image_array

    path = _existing_file(path, "image files")
    return torch.from_numpy(read_image_array(path, channels, size, where="input")).float().div_(255.0)  # (C, H, W)


def _normalise(series: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    mode = normalization.get("mode", "none")
    if mode == "channel":
        return (series - np.asarray(normalization["mean"])) / np.asarray(normalization["std"])
    if mode == "series":
        mean, std = series.mean(axis=0), series.std(axis=0)
        return (series - mean) / np.where(std > 1e-8, std, 1.0)
    return series


def _normalise_pixels(x: Tensor, kind: str, info: DataInfo) -> Tensor:
    """The run's per-channel mean/std (a pretrained encoder's, or the data options'), as training applied it."""
    norm = info.normalization
    if kind not in IMAGE_KEYS or (norm.get("mean") is None and norm.get("std") is None):
        return x
    channels = x.shape[-3]
    return normalize_images(x, norm.get("mean") or [0.0] * channels, norm.get("std") or [1.0] * channels)


def _samples(inputs: list[str], info: DataInfo, channels: int) -> list[tuple[str, dict[str, Tensor]]]:
    kind = info.kind or "series"
    size = info.image_size
    # The resize filter training used (a pretrained encoder's, or the data options'); runs before it was recorded
    # resized bilinearly.
    resize = info.normalization.get("interpolation") or "bilinear"
    out = []
    for item in inputs:
        path = Path(item)
        if kind == "series":
            for i, s in enumerate(read_series_file(path)):
                if not np.isfinite(s).all():
                    raise DataError(f"{path} sample {i} holds NaN or inf; clean or impute it first")
                x = torch.from_numpy(_normalise(s, info.normalization).astype(np.float32))
                out.append((f"{path}[{i}]", {"x": x}))
        elif kind == "frames" and str(info.name or "").startswith("images:") and path.is_dir():
            # An images run: a folder holds images to classify, each a clip of one frame.
            for image in _images_in(path):
                clip = read_clip(image, num_frames=1, size=size, in_channels=channels,
                                 interpolation=resize)  # (1, C, H, W)
                out.append((str(image), {"x": _normalise_pixels(clip, kind, info)}))
        elif kind == "frames" and path.suffix != ".npz":
            # a frame folder, a video or a still image, sampled as training sampled it; a folder of clips: each
            for clip_path in clip_paths(path):
                clip = read_clip(clip_path, num_frames=info.extras.get("num_frames"), size=size,
                                 in_channels=channels, interpolation=resize)
                out.append((str(clip_path), {"x": _normalise_pixels(clip.float(), kind, info)}))
        elif kind == "frames":
            clip = read_clip_file(path)  # (T, C, H, W)
            if clip.shape[1] != channels:
                raise DataError(f"{path}: the run reads {channels}-channel frames, got {tuple(clip.shape)}")
            if size is not None and tuple(clip.shape[-2:]) != size:  # frames are resized in training too
                # torch has no lanczos, box or hamming filter: those runs read .npz clips resized bilinearly
                mode = resize if resize in ("nearest", "bicubic") else "bilinear"
                clip = F.interpolate(clip, size=size, mode=mode)  # (T, C, H', W')
            out.append((str(path), {"x": _normalise_pixels(clip.float(), kind, info)}))
        elif kind == "text_image" and info.extras.get("image_height"):  # text:DIR runs keep line aspect ratios
            for file in _images_in(path) if path.is_dir() else [path]:
                line = read_text_line(file, int(info.extras["image_height"]), channels)  # (C, H, W) uint8
                out.append((str(file), {"x": line.float().div_(255.0)}))
        elif kind == "vqa":
            out += _vqa_samples(path, info, channels, size)
        elif kind == "captions" and path.is_dir():
            out += [(str(p), {"images": _normalise_pixels(read_image(p, channels, size), kind, info)})
                    for p in _images_in(path)]
        elif kind == "captions" and path.suffix == ".txt":  # a list of images, one path a line (relative to it)
            if not path.is_file():
                raise DataError(f"{path} does not exist; check the path")
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not names:
                raise DataError(f"{path} lists no images; write one image path per line")
            out += [(name, {"images": _normalise_pixels(read_image(path.parent / name, channels, size), kind, info)})
                    for name in names]
        elif kind in ("images", "text_image", "captions"):
            key = "images" if kind == "captions" else "x"
            out.append((str(path), {key: _normalise_pixels(read_image(path, channels, size), kind, info)}))
        else:
            raise ConfigError(f"predict does not read inputs for {kind!r} runs (yet); use cnnlstm test")
    if not out:
        raise DataError("no inputs to predict")
    return out


def _vqa_samples(path: Path, info: DataInfo, channels: int,
                 size: tuple[int, ...] | None) -> list[tuple[str, dict[str, Any]]]:
    """One sample per row of a CSV ``image,question``, the question encoded with the run's vocabulary."""
    from cnnlstm.data.builtin._vocab import Vocabulary
    from cnnlstm.data.manifest import read_image_array, read_manifest
    from cnnlstm.data.vqa import tokenize

    vocab = Vocabulary.from_itos(info.extras["vocab"])
    out = []
    for row in read_manifest(path, ("image", "question")):
        where = f"{path} row {row.line}"
        image = read_image_array(path.parent / row.values["image"], channels, size, where)  # (C, H, W) uint8
        words = tokenize(row.values["question"])
        if not words:
            raise DataError(f"{where}: the question has no words; write the question")
        pixels = _normalise_pixels(torch.from_numpy(image).float().div_(255.0), "vqa", info)  # (C, H, W)
        out.append((where, {"image": pixels, "sequence": vocab.encode(words),
                            "image_path": row.values["image"], "question": row.values["question"]}))
    return out


def read_data_info(run_dir: str | Path) -> DataInfo:
    """The ``data_info.json`` a finished fit wrote in ``run_dir`` (task, kind, classes, model kwargs).

    Files older versions wrote load too: entries that are not typed fields land in ``DataInfo.extras``.

    Raises:
        ConfigError: the run has none (its fit did not finish).
    """
    info_path = Path(run_dir) / "data_info.json"
    if not info_path.is_file():
        raise ConfigError(f"{run_dir} has no data_info.json; was its fit finished?")
    return DataInfo.from_dict(json.loads(info_path.read_text()))


@torch.no_grad()
def predict(run_dir: str | Path, inputs: list[str], batch_size: int = 64, model: nn.Module | None = None,
            out: str | Path | None = None, beam_size: int = 1) -> list[Prediction]:
    """Predict labels (with probabilities) or strings for input files with a run's best model.

    Args:
        run_dir: a directory written by ``fit``.
        inputs: file paths (see the module docstring for what each kind of run reads).
        batch_size: inputs per forward pass.
        model: stands in for the run's best model, with the same input reading, labels and decoding, e.g. the
            run's ONNX export on onnxruntime (:func:`cnnlstm.export.predictor.predict_onnx`); ``None`` loads
            the run's weights.
        out: forecast runs only: a new (or empty) folder for the predicted frames (see :func:`predict_forecast`).
        beam_size: captioning runs: hypotheses kept per image (1: greedy).

    Returns:
        one dict per sample: ``input``, ``label`` and, for classifiers, ``probability`` and ``probabilities``
        (forecasts: ``label`` is the ``.npz`` written).

    Example:
        >>> predict("runs/basic_motions", ["walk.npz"])[0]["label"]  # doctest: +SKIP
        'walking'
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    info = read_data_info(run_dir)
    if model is None:
        model = load_run_model(run_dir, config)  # an ensemble run: its averaged members
    if not info.task:
        raise ConfigError(f"{run_dir}/data_info.json names no task; was it written by a finished fit?")
    task = build_task(info.task, model, info, config["optim"])
    task.eval()
    if beam_size != 1 and not isinstance(task, CaptioningTask):
        raise ConfigError(f"--beam decodes captions; this run's task is {info.task}: leave --beam out")
    if beam_size < 1:
        raise ConfigError(f"--beam must be at least 1, got {beam_size}")
    channels = int(info.model_kwargs.get("in_channels", 3))
    if info.kind == "forecast":
        return predict_forecast(task, inputs, info, config, out, batch_size)
    samples = _samples(inputs, info, channels)
    collate = pad_width_collate if info.kind == "text_image" and info.extras.get("image_height") else pad_collate
    results: list[Prediction] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate([s for _, s in chunk])
        rows = task.predict_step(batch, beam_size=beam_size) if beam_size != 1 else task.predict_step(batch)
        for (name, sample), row in zip(chunk, rows, strict=True):
            # String entries of a sample (a VQA row's image and question) are echoed beside its prediction.
            echo = {k: v for k, v in sample.items() if isinstance(v, str)}
            if isinstance(task, ClassificationTask):
                k = int(row.argmax())
                results.append({"input": name, **echo, "label": task.class_names[k], "probability": float(row[k]),
                                "probabilities": dict(zip(task.class_names, row.tolist(), strict=True))})
            else:
                results.append({"input": name, "label": row if isinstance(row, str) else str(row.tolist())})
    return results


def _forecast_inputs(inputs: list[str], info: DataInfo, config: dict[str, Any]) -> list[tuple[str, Tensor]]:
    """``(name, (T, C, H, W) float frames)`` per sequence of the inputs (array files or sequence folders)."""
    from cnnlstm.data.forecast import read_sequence_folder, read_sequences

    channels = int(info.model_kwargs.get("in_channels", 1))
    layout = (config.get("data", {}).get("options") or {}).get("layout")
    out: list[tuple[str, Tensor]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            named = [(path.name, read_sequence_folder(path, channels))]  # one sequence: its frames
        else:
            if not path.exists():
                raise DataError(f"{path} does not exist; check the path")
            train, test = read_sequences(path, layout=None if path.is_dir() else layout, channels=channels)
            arrays = train if test is None else np.concatenate([train, test])
            names = [p.name for p in sorted(q for q in path.iterdir() if q.is_dir())] if path.is_dir() else None
            named = [(names[i] if names else f"{path.stem}_{i:04d}", a) for i, a in enumerate(arrays)]
        for name, seq in named:
            frames = torch.from_numpy(np.ascontiguousarray(seq))
            out.append((name, frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames.float()))
    if not out:
        raise DataError("no inputs to predict")
    return out


def _strip(context: Tensor, prediction: Tensor) -> np.ndarray:
    """Frames side by side, context | prediction, with a 2-pixel mid-grey bar between the two, as uint8.

    Shape:
        - context: ``(T, C, H, W)``; prediction: ``(K, C, H, W)``; returns ``(H, (T + K) * W + 2, C)``.
    """
    row = lambda frames: torch.cat(list(frames), dim=-1)  # noqa: E731  (C, H, n * W)
    left, right = row(context), row(prediction)
    bar = left.new_full((left.shape[0], left.shape[1], 2), 0.5)
    image = torch.cat([left, bar, right], dim=-1).clamp(0, 1).mul(255).round().to(torch.uint8)  # (C, H, W')
    return image.permute(1, 2, 0).numpy()


def predict_forecast(task: Any, inputs: list[str], info: DataInfo, config: dict[str, Any],
                     out: str | Path | None, batch_size: int = 64) -> list[Prediction]:
    """Forecast the frames after each input sequence; write ``NAME.npz`` and ``NAME.png`` per sequence.

    Inputs are ``.npy`` / ``.npz`` arrays of sequences (the run's layout option applies), folders of sequence
    folders, or one folder of frame images. The last ``context`` frames of each sequence (the run's) are the
    model's input. ``NAME.npz`` holds ``context`` and ``prediction`` (float32 (T, C, H, W) in [0, 1]);
    ``NAME.png`` shows them as one strip, context | prediction.

    Args:
        task: the run's forecasting task (eval mode).
        inputs: file or folder paths.
        info: the run's ``data_info.json``.
        config: the run's ``config.yaml``.
        out: a new (or empty) folder; nothing in it is overwritten.
        batch_size: sequences per forward pass.

    Example:
        >>> predict("runs/forecast", ["new.npy"], out="forecasts")  # doctest: +SKIP
    """
    from PIL import Image

    if out is None:
        raise ConfigError("forecast runs write frames, not labels: give an output folder (--out DIR)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose a new folder")
    sequences = _forecast_inputs(inputs, info, config)
    context = int(info.extras.get("context") or sequences[0][1].shape[0])
    results: list[Prediction] = []
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        batch = pad_collate([{"x": seq[-context:]} for _, seq in chunk])
        if "lengths" in batch:
            raise DataError(f"sequences in one call need at least {context} frames each (the run's context), "
                            "or all the same number")
        predicted = task.predict_step(batch)  # (B, K, C, H, W)
        for (name, _), x, y in zip(chunk, batch["x"], predicted, strict=True):
            target = out / f"{name}.npz"
            if target.exists():
                raise ConfigError(f"two inputs give the sequence name {name!r}; rename one of them")
            np.savez(target, context=x.numpy(), prediction=y.numpy())
            strip = _strip(x, y)
            Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip).save(out / f"{name}.png")
            results.append({"input": name, "label": str(target)})
    return results


def predictions_csv(predictions: list[Prediction], path: str | Path) -> Path:
    """Write predictions as CSV: input, any echoed input columns (a VQA row's image and question), label,
    probability, then one column per class.

    Example:
        >>> predictions_csv(predict("runs/x", ["a.npz"]), "out.csv")  # doctest: +SKIP
    """
    import csv
    import io

    classes = list(predictions[0].get("probabilities", {})) if predictions else []
    echoed = [k for k in (predictions[0] if predictions else {})
              if k not in ("input", "label", "probability", "probabilities")]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["input", *echoed, "label", *(["probability"] if classes else []), *[f"p_{c}" for c in classes]])
    for p in predictions:
        probs = [f"{p['probabilities'][c]:.6f}" for c in classes]
        writer.writerow([p["input"], *(p[k] for k in echoed), p["label"],
                         *([f"{p['probability']:.6f}"] if classes else []), *probs])
    return atomic_write(path, buf.getvalue())
