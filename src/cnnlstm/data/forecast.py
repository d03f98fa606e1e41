"""``forecast:PATH``: sequences of frames to forecast, from an array file or a folder of frame images.

Layouts:

- an ``.npy`` array, or an ``.npz`` holding one array or ``train`` (+ ``test``): ``(N, T, H, W)`` or
  ``(N, T, C, H, W)``; ``layout: TNHW`` reads the Moving MNIST file ``(T, N, H, W)``. Pixels are uint8 0-255
  or floats in [0, 1];
- a folder ``DIR/<sequence>/frame_NN.png``: one subfolder per sequence, frames in natural name order.

Each sequence gives one sample: its first ``context`` frames are the input ``x`` and the next ``horizon``
frames the target ``y``. Without a test set (option ``test``: a second file or folder, or the ``.npz``'s
``test`` array) a seeded ``test_fraction`` of the sequences is held out; validation also takes whole
sequences (one sample per sequence).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlstm.data._npz import npz_array, open_npz
from cnnlstm.data._options import reject_unknown_options
from cnnlstm.data._registry import DatasetBundle, register_source
from cnnlstm.data.builtin._common import Field, FieldDataset
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.frames import IMAGE_EXTENSIONS, _natural_key
from cnnlstm.data.info import DataInfo
from cnnlstm.data.manifest import open_image
from cnnlstm.data.splits import stratified_split
from cnnlstm.errors import ConfigError, DataError

__all__ = ["load_forecast", "read_sequences", "read_sequence_folder", "write_forecast_layout", "LAYOUTS"]

#: accepted values of the ``layout`` option (``None``: by rank, N first).
LAYOUTS = ("NTHW", "NTCHW", "TNHW")


def read_sequence_folder(folder: str | Path, channels: int | None = None) -> np.ndarray:
    """One sequence: the frame images in ``folder``, in natural name order (``frame_2`` before ``frame_10``).

    Args:
        folder: a folder of frame images of one size.
        channels: 1 reads grayscale (default), 3 RGB.

    Shape:
        - returns: ``(T, C, H, W)`` uint8.

    Example:
        >>> read_sequence_folder("sequences/0001").shape  # doctest: +SKIP
        (20, 1, 64, 64)
    """
    folder = Path(folder)
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
    if not files:
        raise DataError(f"{folder} holds no frame images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    mode = "L" if channels in (None, 1) else "RGB"
    frames = [np.asarray(open_image(f, mode, str(folder)), dtype=np.uint8) for f in files]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{folder}: frames differ in size {sorted(shapes)}; give every frame one size")
    clip = np.stack(frames)  # (T, H, W) or (T, H, W, 3)
    return clip[:, None] if clip.ndim == 3 else clip.transpose(0, 3, 1, 2)  # (T, C, H, W)


def _read_folder(root: Path, channels: int | None) -> np.ndarray:
    """``DIR/<sequence>/<frame>.png`` as uint8 ``(N, T, C, H, W)``."""
    sequences = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key)
    if not sequences:
        raise DataError(f"{root} holds no sequence folders; the layout is DIR/<sequence>/frame_NN.png")
    clips = [read_sequence_folder(folder, channels) for folder in sequences]
    first = clips[0].shape
    for folder, clip in zip(sequences, clips, strict=True):
        if clip.shape != first:
            raise DataError(f"{folder}: {clip.shape[0]} frames of {clip.shape[2:]} but {sequences[0]} has "
                            f"{first[0]} of {first[2:]}; every sequence needs the same frame count and size")
    return np.stack(clips)  # (N, T, C, H, W)


def _arrays(path: Path, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The training array of a file and, for an ``.npz`` with ``train`` and ``test``, its test array."""
    if path.suffix == ".npy":
        if not path.is_file():
            raise DataError(f"{where}: {path} does not exist; check the path")
        try:
            return np.load(path, allow_pickle=False), None
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{where}: {path} is not a readable .npy array ({str(err).splitlines()[0]}); "
                            "save it with numpy.save (numbers, not objects)") from None
    if path.suffix != ".npz":
        raise DataError(f"{where}: {path} must be an .npy or .npz file or a folder of sequence folders")
    with open_npz(str(path), where) as data:
        if "train" in data.files:
            test = npz_array(data, "test", where) if "test" in data.files else None
            return npz_array(data, "train", where), test
        if len(data.files) != 1:
            raise DataError(f"{where}: {path} holds {', '.join(data.files) or 'no arrays'}; store one array, or "
                            "name them train (and test)")
        return npz_array(data, data.files[0], where), None


def read_sequences(path: str | Path, *, layout: str | None = None, channels: int | None = None,
                   where: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Sequences of an array file or a sequence folder as ``(N, T, C, H, W)``: uint8 pixels or float32 in [0, 1].

    Args:
        path: an ``.npy`` / ``.npz`` file or a folder ``DIR/<sequence>/frame_NN.png``.
        layout: one of :data:`LAYOUTS`, or ``None`` (``(N, T, H, W)`` or ``(N, T, C, H, W)`` by rank).
        channels: for folders: 1 reads grayscale (default), 3 RGB.
        where: what an error names (default: the path).

    Returns:
        the sequences and, for an ``.npz`` holding ``train`` and ``test``, the test sequences (else ``None``).

    Raises:
        DataError: unreadable file, wrong rank, a dtype other than uint8 or float, NaN or inf, floats
            outside [0, 1].

    Shape:
        - returns: ``(N, T, C, H, W)`` uint8 or float32 each.

    Example:
        >>> x, _ = read_sequences("mnist_test_seq.npy", layout="TNHW")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        (10000, 20, 1, 64, 64)
    """
    path = Path(path)
    where = where or str(path)
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if path.is_dir():
        if layout is not None:
            raise ConfigError(f"{where}: layout applies to array files, not to a folder of sequences; drop it")
        return _to_unit(_read_folder(path, channels), where, "frames"), None
    train, test = _arrays(path, where)
    out = [_to_unit(_arrange(a, layout, f"{where} ({name})"), where, name)
           for a, name in ((train, "train"), (test, "test")) if a is not None]
    return out[0], (out[1] if len(out) > 1 else None)


def _arrange(array: np.ndarray, layout: str | None, where: str) -> np.ndarray:
    """``array`` in ``(N, T, C, H, W)``, checked against ``layout``."""
    rank = {"NTHW": 4, "TNHW": 4, "NTCHW": 5}.get(layout or "")
    if array.ndim not in (4, 5) or (rank is not None and array.ndim != rank):
        expected = f"{rank}-D {layout}" if rank else "(N, T, H, W) or (N, T, C, H, W)"
        raise DataError(f"{where}: the array has shape {array.shape}; expected {expected}"
                        + ("" if rank else " (layout: TNHW reads Moving MNIST's (T, N, H, W))"))
    if layout == "TNHW":
        array = array.transpose(1, 0, 2, 3)  # (N, T, H, W)
    return array[:, :, None] if array.ndim == 4 else array


def _to_unit(array: np.ndarray, where: str, name: str) -> np.ndarray:
    """uint8 pixels as they are (kept small), floats checked to be finite and in [0, 1] as float32."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind != "f":
        raise DataError(f"{where}: {name} has dtype {array.dtype}; store uint8 pixels (0-255) or floats in [0, 1]")
    array = array.astype(np.float32, copy=False)
    bad = ~np.isfinite(array)
    if bad.any():
        n = int(np.argwhere(bad)[0][0])
        raise DataError(f"{where}: {name} holds NaN or inf (first in sequence {n}); clean the frames first")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise DataError(f"{where}: {name} floats span [{low:.3g}, {high:.3g}]; scale frames to [0, 1] "
                        "(or store uint8 pixels)")
    return array


def _windows(sequences: np.ndarray, context: int, horizon: int) -> FieldDataset:
    # uint8 fields are served as float32 / 255 (FieldDataset), floats as they are.
    def field(start: int, stop: int) -> Field:
        return Field(torch.from_numpy(np.ascontiguousarray(sequences[:, start:stop])))

    return FieldDataset({"x": field(0, context), "y": field(context, context + horizon)})


@register_source("forecast", kind="forecast",
                 description="sequences to forecast: .npy/.npz (N, T, [C,] H, W) or DIR/<sequence>/frame_NN.png")
def load_forecast(
    path: str, *, seed: int = 0, context: int | None = None, horizon: int | None = None, layout: str | None = None,
    test: str | None = None, test_fraction: float | None = None, in_channels: int | None = None, **options: Any,
) -> DatasetBundle:
    """Load ``forecast:PATH`` (see the module docstring for the layouts).

    Args:
        path: an ``.npy`` / ``.npz`` file or a folder of sequence folders.
        seed: seed of the train/test split when there is no test set.
        context: frames the model sees (default: ``T - horizon``).
        horizon: frames to predict (default: ``T // 3``, at least 1).
        layout: ``NTHW``, ``NTCHW`` or ``TNHW`` (Moving MNIST); default by rank, N first.
        test: a second file or folder with the test sequences (same layout).
        test_fraction: share of the sequences held out for testing without a test set (default 0.2).
        in_channels: folders only: 1 (grayscale, default) or 3 (RGB).

    Returns:
        a ``forecast`` bundle: samples ``{"x": (context, C, H, W), "y": (horizon, C, H, W)}`` float32 in [0, 1].

    Example:
        >>> bundle = load_forecast("mnist_test_seq.npy", layout="TNHW", context=10, horizon=10)  # doctest: +SKIP
    """
    reject_unknown_options("forecast", options, ["context", "horizon", "layout", "test", "test_fraction",
                                                 "in_channels"])
    where = f"forecast:{path}"
    if in_channels not in (None, 1, 3):
        raise ConfigError(f"{where}: in_channels must be 1 or 3, got {in_channels!r}")
    train, test_seqs = read_sequences(path, layout=layout, channels=in_channels, where=where)
    if test is not None:
        if test_seqs is not None:
            raise ConfigError(f"{where} already holds a test array; drop the test option")
        test_path = Path(test)
        if not test_path.exists() and not test_path.is_absolute():
            test_path = Path(path).parent / test  # relative to the training file's folder
        test_seqs, _ = read_sequences(test_path, layout=layout, channels=in_channels, where=f"{where} (test {test})")
    if test_seqs is not None and test_fraction is not None:
        raise ConfigError(f"{where}: there is a test set, so test_fraction does not apply; drop it")
    steps = train.shape[1]
    horizon = max(1, steps // 3) if horizon is None else horizon
    context = steps - horizon if context is None else context
    for name, value in (("context", context), ("horizon", horizon)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}: {name} must be a positive number of frames, got {value!r}")
    if context + horizon > steps:
        raise DataError(f"{where}: context + horizon = {context} + {horizon} frames, but the sequences have "
                        f"{steps}; lower context or horizon")
    if test_seqs is not None:
        if test_seqs.shape[2:] != train.shape[2:] or test_seqs.shape[1] < context + horizon:
            raise DataError(f"{where}: test sequences {test_seqs.shape[1:]} (T, C, H, W) do not match training "
                            f"{train.shape[1:]}; they need the same frames and at least {context + horizon} steps")
    else:
        keep, held = stratified_split(np.zeros(len(train)), 0.2 if test_fraction is None else test_fraction, seed)
        train, test_seqs = train[keep], train[held]
    channels, height, width = train.shape[2:]
    return DatasetBundle(
        name=where,
        kind="forecast",
        train=_windows(train, context, horizon),
        test=_windows(test_seqs, context, horizon),
        info=DataInfo(
            model_kwargs={"in_channels": int(channels), "horizon": int(horizon),
                          "image_size": (int(height), int(width))},
            image_size=(int(height), int(width)),
            extras={"context": int(context), "horizon": int(horizon), "data_range": 1.0},
        ),
        collate_fn=pad_collate,
    )


def write_forecast_layout(bundle: DatasetBundle, path: str | Path) -> Path:
    """Write a forecast bundle as one ``.npz`` of uint8 ``(N, T, H, W)`` sequences, arrays ``train`` and ``test``.

    Each sample's ``x`` and ``y`` are joined in time; ``forecast:PATH`` with ``context`` = the bundle's input
    frames reads the same samples back, in order (exactly, for frames of whole pixels).

    Args:
        bundle: a ``forecast`` bundle with samples ``x`` (T, C, H, W) and ``y`` (K, C, H, W) in [0, 1].
        path: a new ``.npz`` file (an existing file is never overwritten).

    Example:
        >>> from cnnlstm.data.builtin.moving_digits import moving_digits
        >>> write_forecast_layout(moving_digits(n_train=8, n_test=4), "digits.npz")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"{path}: the forecast layout is written as an .npz file")
    if path.exists():
        raise ConfigError(f"{path} already exists; choose a new file name")
    arrays = {}
    for split, dataset in (("train", bundle.train), ("test", bundle.test)):
        clips = [torch.cat([s["x"], s["y"]]) for s in (dataset[i] for i in range(len(dataset)))]  # (T+K, C, H, W)
        frames = torch.stack(clips).mul(255).round().clamp(0, 255).to(torch.uint8)  # (N, T+K, C, H, W)
        arrays[split] = frames[:, :, 0].numpy() if frames.shape[2] == 1 else frames.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:  # "x": fail rather than overwrite, even if the file appeared meanwhile
        np.savez(handle, **arrays)
    return path
