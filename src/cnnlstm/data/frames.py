"""Video clip classification from a folder per class: ``frames:DIR``.

Layout: ``DIR/<class>/<clip>/`` holding the clip's image frames (sorted by name, numbers compared as
numbers, so ``frame_2`` comes before ``frame_10``), or ``DIR/<class>/<clip>.mp4`` (any common video
format, decoded with PyAV: ``pip install "cnnlstm[video]"``). Clips are decoded one at a time when a sample
is read, never all at once, and only the frames that sample uses are kept.

A clip becomes ``num_frames`` frames by segment sampling (as in TSN): the clip is cut into ``num_frames``
equal segments and one frame is taken from each, its middle (``"uniform"``) or a random one
(``"random"``, training only). Shorter clips repeat frames. Every frame is converted to RGB (or L when
``in_channels=1``), resized to ``size`` with ``interpolation`` (PIL's filter of that name; default bilinear) and
scaled to [0, 1], then normalised with ``mean``/``std`` when given. A pretrained encoder's own mean/std and
interpolation (timm's ``pretrained_cfg``) are applied for the user by :mod:`cnnlstm.data.preprocess`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from cnnlstm.data._options import reject_unknown_options
from cnnlstm.data._registry import DatasetBundle, register_source
from cnnlstm.data.collate import pad_collate
from cnnlstm.data.info import DataInfo
from cnnlstm.data.splits import stratified_split
from cnnlstm.data.validate import check_non_empty, encode_labels
from cnnlstm.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Clip",
    "find_clips",
    "find_images",
    "load_images",
    "sample_frame_indices",
    "FramesDataset",
    "INTERPOLATIONS",
    "load_frames",
    "read_clip",
    "check_frame_headers",
    "check_interpolation",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
SAMPLINGS = ("uniform", "random")
#: resize filters by the names timm's ``pretrained_cfg["interpolation"]`` and torchvision use
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
                  "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def check_interpolation(name: str | None, owner: str = "interpolation") -> str | None:
    """``name`` when it is one of :data:`INTERPOLATIONS` (or ``None``), else a ``ConfigError`` listing them.

    Example:
        >>> check_interpolation("bicubic")
        'bicubic'
    """
    if name is not None and name not in INTERPOLATIONS:
        raise ConfigError(f"{owner} must be one of {', '.join(INTERPOLATIONS)}, got {name!r}")
    return name


@dataclass(frozen=True)
class Clip:
    """One clip: a video file (``frames`` is None) or a folder of image frames in play order."""

    path: Path
    frames: tuple[Path, ...] | None = None


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _visible(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=_natural_key)


def _class_folders(root: Path, source: str, layout: str) -> list[Path]:
    """The class folders of a folder-per-class dataset, in natural order; a missing or empty root is a DataError."""
    if not root.is_dir():
        raise DataError(f"{source}:{root}: not a folder; expected {layout}")
    class_dirs = [p for p in _visible(root) if p.is_dir()]
    if not class_dirs:
        raise DataError(f"{source}:{root} has no class folders; expected {layout}")
    return class_dirs


def find_clips(root: Path) -> tuple[list[Clip], list[str]]:
    """List the clips under ``root/<class>/`` and the class (folder name) of each.

    Args:
        root: the dataset folder.

    Returns:
        ``(clips, class_of_each_clip)``.

    Example:
        >>> clips, classes = find_clips(Path("data/clips"))  # doctest: +SKIP
    """
    clips, classes = [], []
    for class_dir in _class_folders(root, "frames", "DIR/<class>/<clip>/ frames or DIR/<class>/<clip>.mp4"):
        found = 0
        for entry in _visible(class_dir):
            suffix = entry.suffix.lower()
            if entry.is_dir():
                frames = tuple(p for p in _visible(entry) if p.suffix.lower() in IMAGE_EXTENSIONS)
                if not frames:
                    raise DataError(f"clip folder {entry} has no image frames ({', '.join(sorted(IMAGE_EXTENSIONS))})")
                clips.append(Clip(entry, frames))
            elif suffix in VIDEO_EXTENSIONS:
                clips.append(Clip(entry))
            elif suffix in IMAGE_EXTENSIONS:
                raise DataError(
                    f"{entry} is an image directly inside class folder {class_dir}; put each clip's frames in "
                    "a folder of its own (DIR/<class>/<clip>/frame_001.png)"
                )
            else:
                continue  # notes, metadata: not clips
            classes.append(class_dir.name)
            found += 1
        if not found:
            raise DataError(f"class folder {class_dir} holds no clips (frame folders or video files)")
    return clips, classes


def clip_paths(path: str | Path) -> list[Path]:
    """The clips a ``predict`` input names: a frame folder, a video or an image is one clip; a folder without
    frames of its own stands for every clip under it (clip folders and videos, also inside class folders, as a
    ``frames:`` dataset holds them), in natural order.

    Raises:
        DataError: a folder with neither frames nor clips under it.

    Example:
        >>> clip_paths("data/clips_test")  # doctest: +SKIP
        [PosixPath('data/clips_test/left/clip0'), PosixPath('data/clips_test/right/clip1.mp4')]
    """
    path = Path(path)
    if not path.is_dir():
        return [path]
    entries = _visible(path)
    if any(e.is_file() and e.suffix.lower() in IMAGE_EXTENSIONS for e in entries):
        return [path]  # a clip folder
    found: list[Path] = []
    for entry in entries:
        if entry.is_dir():
            found += _clips_under(entry)
        elif entry.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(entry)
    if not found:
        raise DataError(f"{path} holds no frame images ({', '.join(sorted(IMAGE_EXTENSIONS))}), clip folders or "
                        f"videos ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    return found


def _clips_under(folder: Path) -> list[Path]:
    try:
        return clip_paths(folder)
    except DataError:
        return []  # a folder of notes or metadata: not a clip


def find_images(root: Path) -> tuple[list[Clip], list[str]]:
    """List the images under ``root/<class>/`` (torchvision's ImageFolder layout, nested folders included), each a
    clip of one frame, and the class (top folder name) of each.

    Args:
        root: the dataset folder.

    Returns:
        ``(clips, class_of_each_clip)``.

    Example:
        >>> clips, classes = find_images(Path("data/photos"))  # doctest: +SKIP
    """
    clips, classes = [], []
    for class_dir in _class_folders(root, "images", "DIR/<class>/<image>.png"):
        images = sorted((p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                         and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)),
                        key=lambda p: [_natural_key(Path(part)) for part in p.relative_to(class_dir).parts])
        if not images:
            raise DataError(f"class folder {class_dir} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        clips += [Clip(image, (image,)) for image in images]
        classes += [class_dir.name] * len(images)
    return clips, classes


def sample_frame_indices(
    n_frames: int,
    num_frames: int,
    *,
    random: bool = False,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Pick ``num_frames`` frame indices from a clip of ``n_frames``, one per equal segment, in order.

    Args:
        n_frames: frames in the clip (>= 1).
        num_frames: frames wanted; more than ``n_frames`` repeats frames.
        random: a random frame in each segment (training augmentation) instead of the middle one.
        generator: random source; None uses torch's global generator, which DataLoader seeds per worker and
            per epoch (so workers differ, epochs differ, and a seeded run repeats).

    Example:
        >>> sample_frame_indices(10, 4)
        [1, 3, 6, 8]
        >>> sample_frame_indices(3, 6)
        [0, 0, 1, 1, 2, 2]
    """
    if n_frames < 1:
        raise DataError("a clip has no frames")
    offsets = torch.rand(num_frames, generator=generator, dtype=torch.float64) if random else torch.full(
        (num_frames,), 0.5, dtype=torch.float64)
    positions = (torch.arange(num_frames, dtype=torch.float64) + offsets) * n_frames / num_frames
    return positions.floor().long().clamp_(0, n_frames - 1).tolist()


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise DataError('decoding video clips needs PyAV: pip install "cnnlstm[video]"') from None
    return av


def _read_video(path: Path, pick: Callable[[int], list[int]]) -> list[Image.Image]:
    av = _import_av()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames <= 0:  # the container does not say: decode all (clips are short) and pick after
                decoded = [frame.to_image() for frame in container.decode(stream)]
                return [decoded[i] for i in pick(len(decoded))] if decoded else []
            wanted = pick(stream.frames)
            keep, got = set(wanted), {}
            for i, frame in enumerate(container.decode(stream)):
                if i in keep:
                    got[i] = frame.to_image()
                if i >= wanted[-1]:
                    break  # the rest of the clip is not needed
    except (av.error.FFmpegError, IndexError) as err:
        raise DataError(f"cannot decode video {path} ({err}); check the file or convert it to .mp4") from None
    if not got:
        return []
    # A container may count more frames than decode (a cut-off file): fall back to the last decoded one.
    last = max(got)
    return [got[i] if i in got else got[last] for i in wanted]


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read frame {path} ({err}); replace or remove it") from None


def check_frame_headers(clips: Sequence[Clip]) -> None:
    """Open every frame's header (PIL reads a few hundred bytes, decodes no pixels) and every video's size.

    Run when the data is loaded, so a corrupt or empty file is named before the run directory is created
    instead of stopping the first epoch. Damage inside the pixel data behind an intact header is found
    when the frame is decoded.

    Args:
        clips: the clips to check.

    Raises:
        DataError: a frame or video file is empty or has no readable image header; names it.

    Example:
        >>> check_frame_headers(find_clips(Path("data/clips"))[0])  # doctest: +SKIP
    """
    for clip in clips:
        for path in clip.frames if clip.frames is not None else (clip.path,):
            try:
                if path.stat().st_size == 0:
                    raise OSError("the file is empty")
                if clip.frames is not None:
                    with Image.open(path) as image:
                        image.size  # noqa: B018 - the header is parsed by open; size proves it was complete
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                kind = "frame" if clip.frames is not None else "video"
                raise DataError(f"cannot read {kind} {path} ({err}); replace or remove it") from None


class FramesDataset(Dataset):
    """Labelled clips read lazily: sample ``i`` is ``{"x": (T, C, H, W) float32, "y": int64}``.

    Args:
        clips: the clips (see :func:`find_clips`).
        labels: class ids (N,).
        num_frames: frames per sample, T.
        size: (H, W) every frame is resized to.
        in_channels: 3 (RGB) or 1 (grayscale).
        mean: per-channel mean subtracted after scaling to [0, 1], or None.
        std: per-channel std divided by, or None.
        random_sampling: a random frame per segment (training) instead of the middle one.
        interpolation: the resize filter, one of :data:`INTERPOLATIONS`.

    Shape:
        - sample ``x``: (num_frames, in_channels, H, W)

    Example:
        >>> ds = FramesDataset(clips, torch.tensor([0, 1]), num_frames=8, size=(64, 64))  # doctest: +SKIP
        >>> ds[0]["x"].shape  # doctest: +SKIP
        torch.Size([8, 3, 64, 64])
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        labels: Tensor,
        *,
        num_frames: int,
        size: tuple[int, int],
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        random_sampling: bool = False,
        interpolation: str = "bilinear",
    ) -> None:
        if len(clips) != len(labels):
            raise ConfigError(f"FramesDataset got {len(clips)} clips but {len(labels)} labels")
        self.clips = list(clips)
        self.labels = labels.to(torch.int64)
        self.num_frames = num_frames
        self.size = size
        self.mode = "L" if in_channels == 1 else "RGB"
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.random_sampling = random_sampling
        self.interpolation = check_interpolation(interpolation, "FramesDataset interpolation")

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def targets(self) -> list[int]:
        """Class id of every clip (for stratified splits)."""
        return self.labels.tolist()

    def without_augmentation(self) -> FramesDataset:
        """The same clips with the middle frame of each segment: for validation carved from training."""
        view = copy.copy(self)
        view.random_sampling = False
        return view

    def with_interpolation(self, interpolation: str) -> FramesDataset:
        """The same clips resized with another filter (a pretrained encoder's, see :mod:`cnnlstm.data.preprocess`)."""
        view = copy.copy(self)
        view.interpolation = check_interpolation(interpolation, "FramesDataset interpolation")
        return view

    def _pick(self, n_frames: int) -> list[int]:
        return sample_frame_indices(n_frames, self.num_frames, random=self.random_sampling)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clips[index]
        if clip.frames is None:
            images = _read_video(clip.path, self._pick)
        else:
            picked = self._pick(len(clip.frames))
            opened = {i: _open_image(clip.frames[i]) for i in set(picked)}  # repeated frames are read once
            images = [opened[i] for i in picked]
        if not images:
            raise DataError(f"clip {clip.path} has no decodable frames; replace or remove it")
        height, width = self.size
        arrays = []
        for image in images:
            image = image.convert(self.mode)  # mixed modes (P, RGBA, L, CMYK) -> one
            if image.size != (width, height):
                image = image.resize((width, height), INTERPOLATIONS[self.interpolation])  # PIL sizes are (W, H)
            arrays.append(np.asarray(image, dtype=np.uint8).reshape(height, width, -1))
        x = torch.from_numpy(np.stack(arrays))  # (T, H, W, C) uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (T, C, H, W) in [0, 1]
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return {"x": x, "y": self.labels[index]}


def _first_frame_size(clip: Clip) -> tuple[int, int]:
    images = [_open_image(clip.frames[0])] if clip.frames is not None else _read_video(clip.path, lambda n: [0])
    if not images:
        raise DataError(f"clip {clip.path} has no decodable frames; replace or remove it")
    width, height = images[0].size  # PIL sizes are (W, H)
    return height, width


def _size_option(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and s > 0 for s in pair):
        raise ConfigError(f"size must be an int or (H, W) of positive ints, got {size!r}")
    return pair  # type: ignore[return-value]


def _channel_option(name: str, value: float | Sequence[float] | None, channels: int) -> list[float] | None:
    if value is None:
        return None
    values = [float(value)] * channels if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != channels:
        raise ConfigError(f"{name} has {len(values)} values but in_channels={channels}; give one per channel")
    if name == "std" and min(values) <= 0:
        raise ConfigError(f"std must be positive, got {values}")
    return values


@register_source("frames", kind="frames", description="a folder per class of clips: frame folders or video files")
def load_frames(
    path: str,
    *,
    seed: int = 0,
    num_frames: int = 16,
    sampling: str = "uniform",
    size: int | Sequence[int] | None = None,
    in_channels: int = 3,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    interpolation: str | None = None,
    test_dir: str | None = None,
    test_fraction: float | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load clips for classification: ``frames:data/clips`` (``DIR/<class>/<clip>/`` or ``<clip>.mp4``).

    Args:
        path: the training folder.
        seed: seed of the train/test split when there is no ``test_dir``.
        num_frames: frames per sample (default 16).
        sampling: ``"uniform"`` (default) or ``"random"`` for training; the test split is always uniform.
        size: (H, W) or one int; default the size of the first frame of the first training clip.
        in_channels: 3 (RGB, default) or 1 (grayscale).
        mean: per-channel mean to subtract after scaling to [0, 1] (e.g. the encoder's ImageNet mean).
        std: per-channel std to divide by.
        interpolation: resize filter (:data:`INTERPOLATIONS`; default: the pretrained encoder's, else bilinear).
        test_dir: a folder with the same layout holding the test clips.
        test_fraction: share of each class's clips held out for testing when there is no ``test_dir``
            (default 0.2; stratified and seeded).

    Returns:
        a frames bundle: samples ``{"x": (num_frames, in_channels, H, W) float32, "y": int64}``.

    Example:
        >>> bundle = load_frames("data/clips", num_frames=8, size=112)  # doctest: +SKIP
    """
    reject_unknown_options("frames", options, ["num_frames", "sampling", "size", "in_channels", "mean", "std",
                                               "interpolation", "test_dir", "test_fraction"])
    return _load_class_folders(f"frames:{path}", find_clips, path, seed=seed, num_frames=num_frames,
                               sampling=sampling, size=size, in_channels=in_channels, mean=mean, std=std,
                               interpolation=interpolation, test_dir=test_dir, test_fraction=test_fraction)


def _load_class_folders(where: str, find: Callable[[Path], tuple[list[Clip], list[str]]], path: str, *, seed: int,
                        num_frames: int, sampling: str, size: int | Sequence[int] | None, in_channels: int,
                        mean: float | Sequence[float] | None, std: float | Sequence[float] | None,
                        interpolation: str | None, test_dir: str | None, test_fraction: float | None
                        ) -> DatasetBundle:
    """A frames bundle from a folder per class (``find`` lists its clips): the body of both folder sources."""
    if sampling not in SAMPLINGS:
        raise ConfigError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ConfigError(f"num_frames must be a positive int, got {num_frames!r}")
    mean, std = _channel_option("mean", mean, in_channels), _channel_option("std", std, in_channels)
    check_interpolation(interpolation)
    clips, classes = find(Path(path))
    if test_dir is not None:
        if test_fraction is not None:
            raise ConfigError(f"{where}: give test_dir or test_fraction, not both")
        test_clips, test_classes = find(Path(test_dir))
    else:
        train_idx, test_idx = stratified_split(classes, 0.2 if test_fraction is None else test_fraction, seed)
        test_clips, test_classes = [clips[i] for i in test_idx], [classes[i] for i in test_idx]
        clips, classes = [clips[i] for i in train_idx], [classes[i] for i in train_idx]
    check_non_empty(len(clips), f"{where} (train)")
    check_non_empty(len(test_clips), f"{where} (test)")
    check_frame_headers(clips + test_clips)
    if any(c.frames is None for c in clips + test_clips):
        _import_av()  # fail now with the install hint, not later inside a DataLoader worker
    y_train, y_test, class_names = encode_labels(classes, test_classes, where=where)
    hw = _first_frame_size(clips[0]) if size is None else _size_option(size)
    common = {"num_frames": num_frames, "size": hw, "in_channels": in_channels, "mean": mean, "std": std,
              "interpolation": interpolation or "bilinear"}
    return DatasetBundle(
        name=where,
        kind="frames",
        train=FramesDataset(clips, torch.from_numpy(y_train), random_sampling=sampling == "random", **common),
        test=FramesDataset(test_clips, torch.from_numpy(y_test), **common),
        info=DataInfo(
            model_kwargs={"num_classes": len(class_names), "in_channels": in_channels},
            class_names=class_names,
            targets=y_train.tolist(),
            image_size=hw,
            normalization={"mean": mean, "std": std, "interpolation": interpolation},
            extras={"num_frames": num_frames, "sampling": sampling},
        ),
        collate_fn=pad_collate,
    )


@register_source("images", kind="frames",
                 description="a folder per class of images (ImageFolder layout), each read as a one-frame clip")
def load_images(
    path: str,
    *,
    seed: int = 0,
    size: int | Sequence[int] | None = None,
    in_channels: int = 3,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    interpolation: str | None = None,
    test_dir: str | None = None,
    test_fraction: float | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load labelled images: ``images:data/photos`` (``DIR/<class>/<image>``, nested folders included).

    Each image is a clip of one frame, ``x`` of shape ``(1, C, H, W)``, so every frames model and recipe reads it
    (the ``images`` recipe: a pretrained EfficientNet-Lite0 fine-tuned, its feature grid read by a ConvLSTM), the
    encoder's own preprocessing is applied as for clips, and ``predict`` takes image files.

    Args:
        path: the training folder.
        seed: seed of the train/test split when there is no ``test_dir``.
        size: (H, W) or one int; default the size of the first training image.
        in_channels: 3 (RGB, default) or 1 (grayscale).
        mean: per-channel mean to subtract after scaling to [0, 1] (default: the pretrained encoder's own).
        std: per-channel std to divide by.
        interpolation: resize filter (:data:`INTERPOLATIONS`; default: the pretrained encoder's, else bilinear).
        test_dir: a folder with the same layout holding the test images.
        test_fraction: share of each class's images held out for testing when there is no ``test_dir``
            (default 0.2; stratified and seeded).

    Returns:
        a frames bundle: samples ``{"x": (1, in_channels, H, W) float32, "y": int64}``.

    Example:
        >>> bundle = load_images("data/photos", size=64)  # doctest: +SKIP
    """
    reject_unknown_options("images", options, ["size", "in_channels", "mean", "std", "interpolation", "test_dir",
                                               "test_fraction"])
    return _load_class_folders(f"images:{path}", find_images, path, seed=seed, num_frames=1, sampling="uniform",
                               size=size, in_channels=in_channels, mean=mean, std=std, interpolation=interpolation,
                               test_dir=test_dir, test_fraction=test_fraction)


def read_clip(path: str | Path, *, num_frames: int | None, size: tuple[int, int], in_channels: int = 3,
              interpolation: str = "bilinear") -> Tensor:
    """One clip read the way training reads the clips of a ``frames:`` or ``images:`` folder (for ``predict``).

    A folder of frame images and a video file give ``num_frames`` frames by segment sampling (the middle of each
    segment, as for the test split; ``None``: every frame); a still image is a clip of one frame.

    Args:
        path: a frame folder, a video file or an image file.
        num_frames: frames per clip, as the run was trained with.
        size: (H, W) the frames are resized to.
        in_channels: 3 (RGB) or 1 (grayscale).
        interpolation: the resize filter the run used (its ``data_info.json`` records it).

    Shape:
        - returns: ``(T, in_channels, H, W)`` float32 in [0, 1], no mean/std applied.

    Example:
        >>> read_clip("clips/walk_01", num_frames=8, size=(64, 64)).shape  # doctest: +SKIP
        torch.Size([8, 3, 64, 64])
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        frames = tuple(p for p in _visible(path) if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not frames:
            raise DataError(f"{path} holds no frame images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        clip = Clip(path, frames)
    elif not path.is_file():
        raise DataError(f"{path} does not exist; check the path")
    elif suffix in IMAGE_EXTENSIONS:
        clip = Clip(path, (path,))
    elif suffix in VIDEO_EXTENSIONS:
        clip = Clip(path)
    else:
        raise DataError(f"{path}: a clip is a folder of frames, a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
                        "or an image")
    check_frame_headers([clip])
    if num_frames is None:  # every frame: a folder's count (videos are sampled to 16 when the run names none)
        num_frames = len(clip.frames) if clip.frames is not None else 16
    dataset = FramesDataset([clip], torch.zeros(1, dtype=torch.long), num_frames=num_frames, size=size,
                            in_channels=in_channels, interpolation=interpolation)
    return dataset[0]["x"]  # (T, C, H, W)
