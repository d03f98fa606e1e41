"""Frozen-encoder feature cache: encode every frame once, then train only the recurrent part.

When a frame model's encoder is frozen (every parameter fixed, every module in eval mode) its per-frame
features never change, so recomputing the CNN each epoch is wasted work. :func:`use_feature_cache` encodes
each split once, stores the features on disk and returns a bundle whose samples are ``{"x": (T, D) features,
"y"}`` plus a thin model, :class:`CachedFeaturesModel`, that runs only the model's recurrent part and head.

Storage: ``root/<key>/`` holds ``manifest.json``, ``index.npy`` (per sample: shard, first row, length),
one ``<field>.npy`` per other sample key (``y``) and sharded ``feats-00000.npy`` files of shape
``(rows, D)`` (the valid frames of consecutive samples, no padding stored), float32 or, with
``dtype="float16"``, half precision: half the disk and page cache, read back as float32. A frame's features are
one flat row whatever the model makes of them: a pooled vector, or a grid flattened channel-major
(``frame_lstm``'s grid modes), so grids grow the cache by ``h * w`` times the stage's channels per frame.
Shards are opened with ``np.load(mmap_mode="r")`` on first use, so a dataset never holds its features in RAM
and DataLoader workers page in only the rows they read.

The key is a digest of everything the features depend on: the encoder's name and build config, a digest of
its weights (every state_dict tensor's bytes), the data pipeline (frame size, channels, normalisation, frame
count and sampling), the data's identity (spec, options, seed, split and subset indices, the clips' paths and
file stats, a digest of the first sample) and :data:`CACHE_FORMAT_VERSION`. Any change gives a new key and
so a new directory; :meth:`FeatureCache.prune` removes the stale ones. A cache is written into a temporary
directory and renamed into place only when complete (manifest last), so an interrupted write never leaves a
directory that looks valid.

Random frame sampling or augmentation makes every epoch see different inputs, so a cache would silently
train on one frozen draw: ``feature_cache: true`` then raises :class:`~cnnlstm.errors.ConfigError`, and
``"auto"`` trains end to end and logs why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from cnnlstm.data._registry import DatasetBundle
from cnnlstm.data.collate import pad_collate
from cnnlstm.errors import ConfigError, DataError

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CACHE_DIR_ENV",
    "DTYPES",
    "CachedFeaturesDataset",
    "CachedFeaturesModel",
    "FeatureCache",
    "cache_problem",
    "default_cache_dir",
    "encoder_fingerprint",
    "use_feature_cache",
    "weights_digest",
]

log = logging.getLogger(__name__)

#: bump when the on-disk layout or the way features are computed changes; old caches then miss
CACHE_FORMAT_VERSION = 1
#: environment variable that moves the default cache root
CACHE_DIR_ENV = "CNNLSTM_CACHE_DIR"
_MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600.0  # a temp dir older than this belongs to a writer that died
_MODES = ("auto", True, False)
#: storage dtypes of the feature shards
DTYPES = ("float32", "float16")


# ----------------------------------------------------------------------------------------------- digests
def default_cache_dir() -> Path:
    """``$CNNLSTM_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnnlstm/features``, else ``~/.cache/cnnlstm/features``.

    Example:
        >>> default_cache_dir().name  # doctest: +SKIP
        'features'
    """
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlstm" / "features"


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over every ``state_dict`` entry's name, dtype, shape and bytes (parameters and buffers).

    Args:
        module: the module whose weights identify the features (a frame encoder).

    Example:
        >>> len(weights_digest(nn.Linear(2, 3)))
        64
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # uint8 view: bfloat16 has no numpy type
    return h.hexdigest()


def encoder_fingerprint(encoder: nn.Module) -> dict[str, Any]:
    """What identifies an encoder's features: its class, name, build config and weights digest.

    Example:
        >>> sorted(encoder_fingerprint(nn.Linear(2, 3)))
        ['build_config', 'class', 'name', 'weights']
    """
    cls = type(encoder)
    return {
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "name": getattr(encoder, "name", None),
        "build_config": getattr(encoder, "build_config", None),
        "weights": weights_digest(encoder),
    }


def _jsonable(value: Any) -> Any:
    """A stable JSON stand-in for values json cannot write (tensors, arrays, paths, classes)."""
    if isinstance(value, Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
    return repr(value)


def _digest(parts: Mapping[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=_jsonable, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _unwrap(dataset: Dataset) -> tuple[Dataset, list[int] | None]:
    """The innermost dataset and the indices a chain of ``Subset``s selects from it (None: all of it)."""
    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        outer = [int(i) for i in dataset.indices]
        indices = outer if indices is None else [outer[i] for i in indices]
        dataset = dataset.dataset
    return dataset, indices


def _pipeline(base: Dataset) -> dict[str, Any]:
    """Preprocessing and frame sampling a dataset declares (``FramesDataset`` and look-alikes)."""
    out: dict[str, Any] = {"class": f"{type(base).__module__}.{type(base).__qualname__}"}
    for attr in ("size", "mode", "in_channels", "mean", "std", "num_frames", "random_sampling", "sampling",
                 "interpolation"):
        if hasattr(base, attr):
            out[attr] = getattr(base, attr)
    return out


def _source_digest(base: Dataset) -> str | None:
    """Digest of the clips' paths and file stats, so edited or replaced clips miss the cache."""
    clips = getattr(base, "clips", None)
    if not clips or not all(isinstance(getattr(c, "path", None), str | os.PathLike) for c in clips):
        return None  # not file-backed clips (FramesDataset's Clip has .path): the first-sample digest must do
    h = hashlib.sha256()
    for clip in clips:
        path = Path(clip.path)
        stat = path.stat()
        h.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
        for frame in getattr(clip, "frames", None) or ():
            h.update(f"{Path(frame).name}|".encode())
    return h.hexdigest()


def _sample_digest(sample: Mapping[str, Any]) -> str:
    x = sample["x"]
    t = x.detach().cpu().contiguous() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode() + data).hexdigest()


# ----------------------------------------------------------------------------------------------- validity
def _encoder_of(model: nn.Module) -> nn.Module | None:
    if not all(hasattr(model, n) for n in ("encoder", "forward_sequence_features", "forward_from_features")):
        return None
    return model.encoder


_TRAIN_SENSITIVE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def _trains_differently(module: nn.Module) -> bool:
    return isinstance(module, _TRAIN_SENSITIVE) or type(module).__name__ in ("DropPath", "DropBlock2d")


def cache_problem(model: nn.Module, dataset: Dataset | None = None) -> str | None:
    """Why features of ``model`` on ``dataset`` cannot be cached, or ``None`` when they can.

    Caching needs a model with ``encoder``, ``forward_sequence_features`` and ``forward_from_features``
    (``frame_lstm``), an encoder with no trainable parameter whose train-sensitive modules (dropout, batch
    norm, drop-path) stay in eval mode while the model trains, and data whose samples repeat exactly (no
    random frame sampling or augmentation; checked from the dataset's settings and by reading sample 0 twice).

    Args:
        model: the model to train.
        dataset: the data to encode, or None to check only the model.

    Example:
        >>> cache_problem(create_model("frame_lstm", num_classes=2, freeze="none"))  # doctest: +SKIP
        "the encoder has trainable parameters (freeze='none'); use model.freeze: all to cache its features"
    """
    encoder = _encoder_of(model)
    if encoder is None:
        return (f"{getattr(model, 'model_name', type(model).__name__)} has no frozen-encoder feature path "
                "(needs encoder, forward_sequence_features and forward_from_features, as frame_lstm has)")
    frozen = getattr(encoder, "frozen", "?")
    if any(p.requires_grad for p in encoder.parameters()):
        return f"the encoder has trainable parameters (freeze={frozen!r}); use model.freeze: all to cache its features"
    was_training = encoder.training
    encoder.train(True)  # what the trainer will do; a frozen FrameEncoder keeps its frozen modules in eval
    active = [n for n, m in encoder.named_modules() if m.training and _trains_differently(m)]
    encoder.train(was_training)
    if active:
        return (f"encoder modules {active[:3]} behave differently in training (dropout / batch statistics) and "
                f"are not frozen (freeze={frozen!r}); use model.freeze: all")
    if dataset is None:
        return None
    base, _ = _unwrap(dataset)
    if getattr(base, "random_sampling", False) or getattr(base, "sampling", None) == "random":
        return "random frame sampling is on (data.options.sampling: random); use sampling: uniform to cache"
    if getattr(base, "transform", None) is not None or getattr(base, "augment", False):
        return "the data applies a transform / augmentation per read; turn it off to cache"
    if len(dataset) and _sample_digest(dataset[0]) != _sample_digest(dataset[0]):  # type: ignore[arg-type]
        return "reading the same sample twice gives different frames (random augmentation); turn it off to cache"
    return None


# ----------------------------------------------------------------------------------------------- dataset
class CachedFeaturesDataset(Dataset):
    """Cached per-frame features read lazily from memory-mapped shards: ``{"x": (T_i, D) float32, "y"}``.

    ``x`` holds only the sample's valid frames, so :func:`~cnnlstm.data.collate.pad_collate` pads a batch and
    adds ``lengths`` exactly as it does for the frames themselves. Shards are opened on first access in each
    process and are never pickled (DataLoader workers reopen them).

    Args:
        path: a complete cache directory (one written by :class:`FeatureCache`).

    Shape:
        - sample ``x``: ``(T_i, D)``; other keys as the source dataset stored them.

    Example:
        >>> ds = FeatureCache("cache").load(key)  # doctest: +SKIP
        >>> ds[0]["x"].shape  # doctest: +SKIP
        torch.Size([8, 1280])
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / _MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{self.path} is not a complete feature cache (no {_MANIFEST}); delete it to rebuild")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != CACHE_FORMAT_VERSION:
            raise DataError(f"{self.path} has cache format {self.manifest.get('format')}, this cnnlstm reads "
                            f"{CACHE_FORMAT_VERSION}; delete it to rebuild")
        self.feature_dim = int(self.manifest["feature_dim"])
        self._arrays: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # pickling a memmap would copy its data into the worker

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            files = ["index", *self.manifest["fields"], *(s["file"] for s in self.manifest["shards"])]
            self._arrays = {f: np.load(self.path / f"{f}.npy", mmap_mode="r") for f in files}
        return self._arrays

    @property
    def shards(self) -> list[np.ndarray]:
        """The feature shards, memory-mapped read-only, each ``(rows, D)``."""
        arrays = self._open()
        return [arrays[s["file"]] for s in self.manifest["shards"]]

    @property
    def lengths(self) -> np.ndarray:
        """Valid frames per sample, ``(N,)``."""
        return np.asarray(self._open()["index"][:, 2])

    @property
    def targets(self) -> list[int]:
        """Class of every sample (for stratified splits), when the source had ``y``."""
        return np.asarray(self._open()["y"]).tolist()

    def __len__(self) -> int:
        return int(self.manifest["num_samples"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a cache of {n} samples")
        arrays = self._open()
        shard, start, length = (int(v) for v in arrays["index"][i])
        rows = arrays[self.manifest["shards"][shard]["file"]][start : start + length]  # (T_i, D) view on disk
        # A copy (memmaps are read-only, torch wants writable) in float32, whatever the storage dtype.
        sample = {"x": torch.from_numpy(np.array(rows, dtype=np.float32))}
        for field in self.manifest["fields"]:
            sample[field] = torch.from_numpy(np.array(arrays[field][i]))
        return sample


# ----------------------------------------------------------------------------------------------- writer
def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())  # the data is on disk before the rename publishes the directory


class _ShardWriter:
    """Appends per-sample feature rows to shards of about ``shard_bytes`` each; holds at most one in RAM."""

    def __init__(self, directory: Path, shard_bytes: int) -> None:
        self.directory = directory
        self.shard_bytes = shard_bytes
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0
        self.shards: list[dict[str, Any]] = []
        self.index: list[tuple[int, int, int]] = []

    def add(self, rows: np.ndarray) -> None:
        self.index.append((len(self.shards), self.pending_rows, len(rows)))
        self.pending.append(rows)
        self.pending_rows += len(rows)
        if self.pending_rows * rows.shape[1] * rows.itemsize >= self.shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = f"feats-{len(self.shards):05d}"
        _save(self.directory / f"{name}.npy", np.concatenate(self.pending))  # (rows, D)
        self.shards.append({"file": name, "rows": self.pending_rows})
        self.pending, self.pending_rows = [], 0


class FeatureCache:
    """A directory of feature caches, one subdirectory per key (see the module docstring).

    Args:
        root: where caches live; default :func:`default_cache_dir`.
        shard_bytes: target size of one feature shard file.
        dtype: storage dtype of the features, ``"float32"`` or ``"float16"`` (half the bytes; features read back
            as float32 differ from the encoder's by float16 rounding, about 1e-3 relative).

    Example:
        >>> cache = FeatureCache("/tmp/features")
        >>> train = cache.get_or_build(model, bundle.train, identity={"spec": "frames:clips"})  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike | None = None, *, shard_bytes: int = 256 * 2**20,
                 dtype: str = "float32") -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        if shard_bytes < 1:
            raise ConfigError(f"shard_bytes must be positive, got {shard_bytes}")
        if dtype not in DTYPES:
            raise ConfigError(f"data.feature_cache_dtype must be one of {DTYPES}, got {dtype!r}")
        self.shard_bytes = shard_bytes
        self.dtype = dtype

    def key_parts(self, model: nn.Module, dataset: Dataset, identity: Mapping[str, Any]) -> dict[str, Any]:
        """Everything the cached features depend on (hashed into the key; stored in the manifest).

        Args:
            model: the frame model whose encoder is cached.
            dataset: the data to encode (a ``Subset`` adds its indices).
            identity: what names the data: spec, options, seed and split (``{"spec": ..., "split": "train"}``).
        """
        encoder = _encoder_of(model)
        if encoder is None:
            raise ConfigError(cache_problem(model) or "model has no encoder")
        base, indices = _unwrap(dataset)
        parts = {
            "format": CACHE_FORMAT_VERSION,
            "encoder": encoder_fingerprint(encoder),

            "pipeline": _pipeline(base),
            "data": {
                "identity": dict(identity),
                "indices": indices,
                "num_samples": len(dataset),  # type: ignore[arg-type]
                "source": _source_digest(base),
                "first_sample": _sample_digest(dataset[0]) if len(dataset) else None,  # type: ignore[arg-type]
            },
        }
        # Pooled float32 caches keep the keys they had before grids and dtypes existed.
        if getattr(model, "frame_features", "pooled") != "pooled":  # a stage's grid, not the pooled vector
            parts["frame_features"] = {k: getattr(model, k, None) for k in ("frame_features", "frame_dim")}
            parts["grid"] = {k: getattr(model._per_frame, k, None) for k in ("stage", "grid_size")}
        if self.dtype != "float32":
            parts["dtype"] = self.dtype
        return parts

    def key(self, model: nn.Module, dataset: Dataset, identity: Mapping[str, Any]) -> str:
        """The cache key (32 hex digits) of :meth:`key_parts`."""
        return _digest(self.key_parts(model, dataset, identity))

    def load(self, key: str) -> CachedFeaturesDataset | None:
        """The complete cache stored under ``key``, or ``None`` (missing, partial or another format)."""
        path = self.root / key
        try:
            manifest = json.loads((path / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if manifest.get("key") != key or manifest.get("format") != CACHE_FORMAT_VERSION:
            return None
        return CachedFeaturesDataset(path)

    def get_or_build(
        self,
        model: nn.Module,
        dataset: Dataset,
        *,
        identity: Mapping[str, Any],
        batch_size: int = 32,
        num_workers: int = 0,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        device: str | torch.device | None = None,
    ) -> CachedFeaturesDataset:
        """Load the cache of ``model``'s encoder on ``dataset``, encoding it first when there is none.

        Args:
            model: a frame model with a frozen encoder (see :func:`cache_problem`).
            dataset: samples ``{"x": (T, C, H, W), "y", ...}``.
            identity: spec, options, seed and split of the data (see :meth:`key_parts`).
            batch_size: clips encoded per forward.
            num_workers: DataLoader workers that read the clips.
            collate_fn: batches samples (default :func:`pad_collate`).
            device: where to encode (default: CUDA when available, else the model's device); the model is
                moved back afterwards.

        Returns:
            The cached features, in the order of ``dataset``.
        """
        # Building draws from torch's global generator (DataLoader seeds, sample reads); fork it so a run that
        # builds the cache and a run that finds it continue with the same random state (same shuffles).
        with torch.random.fork_rng(devices=[]):
            problem = cache_problem(model, dataset)
            if problem:
                raise ConfigError(f"cannot cache features: {problem}")
            parts = self.key_parts(model, dataset, identity)
            key = _digest(parts)
            cached = self.load(key)
            if cached is not None:
                log.info("feature cache hit: %s (%d samples)", cached.path, len(cached))
                return cached
            return self._build(key, parts, model, dataset, batch_size, num_workers, collate_fn or pad_collate,
                               device)

    @torch.no_grad()
    def _build(self, key: str, parts: dict[str, Any], model: nn.Module, dataset: Dataset, batch_size: int,
               num_workers: int, collate_fn: Callable, device: str | torch.device | None) -> CachedFeaturesDataset:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-", dir=self.root))
        final = self.root / key
        home = next(model.parameters()).device
        target = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else home)
        was_training = model.training
        start = time.perf_counter()
        try:
            model.to(target).eval()
            writer = _ShardWriter(tmp, self.shard_bytes)
            fields: dict[str, list[np.ndarray]] = {}
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                collate_fn=collate_fn)
            for batch in loader:
                x = batch["x"].to(target)  # (B, T, C, H, W)
                lengths = batch.get("lengths")
                feats = model.forward_sequence_features(x, lengths).float().cpu().numpy()  # (B, T, D)
                feats = feats.astype(self.dtype, copy=False)
                valid = lengths.tolist() if lengths is not None else [feats.shape[1]] * len(feats)
                for b, length in enumerate(valid):
                    writer.add(feats[b, :length])  # (T_b, D): padding is not stored
                for name, value in batch.items():
                    if name not in ("x", "lengths") and isinstance(value, Tensor) and len(value) == len(feats):
                        fields.setdefault(name, []).append(value.cpu().numpy())
            writer.flush()
            if not writer.index:
                raise DataError("cannot cache features of an empty dataset")
            _save(tmp / "index.npy", np.asarray(writer.index, dtype=np.int64))  # (N, 3): shard, start, length
            for name, chunks in fields.items():
                _save(tmp / f"{name}.npy", np.concatenate(chunks))
            manifest = {
                "format": CACHE_FORMAT_VERSION,
                "key": key,
                "num_samples": len(writer.index),
                "feature_dim": int(feats.shape[2]),
                "dtype": self.dtype,
                "bytes_per_sample": round(sum(n for _, _, n in writer.index) * feats.shape[2] * feats.itemsize
                                          / len(writer.index), 1),
                "fields": sorted(fields),
                "shards": writer.shards,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.perf_counter() - start, 3),
                "parts": parts,  # why this key: compare two manifests to see what invalidated a cache
            }
            (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1, default=_jsonable))  # last: marks complete
            self._publish(tmp, final)
        finally:
            model.to(home).train(was_training)
            shutil.rmtree(tmp, ignore_errors=True)  # a failed or lost race leaves nothing behind
        log.info("feature cache written: %s (%d samples, %.1f s)", final, len(writer.index),
                 time.perf_counter() - start)
        return CachedFeaturesDataset(final)

    def _publish(self, tmp: Path, final: Path) -> None:
        """Rename the finished temp dir into place; a concurrent writer that won keeps its copy."""
        if final.exists() and self.load(final.name) is None:
            shutil.rmtree(final, ignore_errors=True)  # a partial directory from outside: replace it
        try:
            os.rename(tmp, final)  # atomic on one filesystem: readers see all of it or nothing
        except OSError:
            if self.load(final.name) is None:  # not a lost race: a real error
                raise

    def prune(self, keep: Iterable[str] = ()) -> list[Path]:
        """Delete every cache under ``root`` except the keys in ``keep``, and temp dirs of dead writers.

        Only entries that are cnnlstm caches (a 32-hex name, or a ``.tmp-`` dir older than an hour) are
        touched. Returns the deleted paths.

        Example:
            >>> FeatureCache("/tmp/features").prune(keep=[train.path.name])  # doctest: +SKIP
        """
        if not self.root.is_dir():
            return []
        keep, removed, now = set(keep), [], time.time()
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or entry.name in keep:
                continue
            is_cache = len(entry.name) == 32 and all(c in "0123456789abcdef" for c in entry.name)
            dead_tmp = entry.name.startswith(_TMP_PREFIX) and now - entry.stat().st_mtime > _STALE_TMP_SECONDS
            if is_cache or dead_tmp:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed


# ----------------------------------------------------------------------------------------------- model + wiring
class CachedFeaturesModel(nn.Module):
    """Runs only the recurrent part and head of a frame model, on cached per-frame features.

    It holds the full model (so checkpoints keep every weight and the encoder stays available) but never
    calls the encoder: ``forward(x, lengths) = model.forward_from_features(x, lengths)``. Save and export the
    wrapped :attr:`model`, which gives the same logits from frames.

    Args:
        model: a frame model with ``forward_from_features`` (``frame_lstm``).

    Shape:
        - x: ``(B, T, D)`` features; lengths: ``(B,)`` int64, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> fast = CachedFeaturesModel(model)  # doctest: +SKIP
        >>> fast(feats, lengths).shape  # doctest: +SKIP
        torch.Size([2, 4])
    """

    input_names = ("x", "lengths")
    supports_lengths = True

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if _encoder_of(model) is None:
            raise ConfigError(cache_problem(model) or "model has no feature path")
        self.model = model
        self.output_kind = getattr(model, "output_kind", "logits")
        self.num_classes = model.num_classes
        self.num_features = model.num_features
        self.model_name = getattr(model, "model_name", type(model).__name__)

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, D)`` features -> ``(B, num_features)``."""
        return self.model.forward_recurrent(x, lengths)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, num_features) -> (B, K)``."""
        return self.model.forward_head(features)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits from cached features; see the class docstring for shapes."""
        return self.model.forward_from_features(x, lengths)  # (B, K)

    def forward_chunk(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One chunk of the LSTM from ``state``, for truncated BPTT (:mod:`cnnlstm.tasks.tbptt`).

        Shape:
            - x: ``(B, k, D)`` features; lengths: ``(B,)`` valid steps in this chunk (0..k), optional.
            - output: ``(B, k, H)`` and ``(h, c)``, each ``(num_layers, B, H)``.
        """
        return self.model.recurrent_chunk(x, state, lengths)


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
        root: cache directory (default :func:`default_cache_dir`).
        batch_size: clips per encoder forward while building.
        num_workers: DataLoader workers while building.
        device: where to encode (default CUDA when available).
        dtype: storage dtype, ``"float32"`` or ``"float16"`` (see :class:`FeatureCache`).

    Returns:
        ``(bundle, model)`` to train with: the cached bundle and a :class:`CachedFeaturesModel`, or the inputs
        unchanged when not caching.

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
        problem = problem or cache_problem(model, bundle.train) or cache_problem(model, bundle.test)
    if problem:
        if mode is True:
            raise ConfigError(f"data.feature_cache: true, but {problem} (or set data.feature_cache: false)")
        log.info("feature cache off: %s", problem)
        return bundle, model
    cache = FeatureCache(root, dtype=dtype)
    kwargs = {"batch_size": batch_size, "num_workers": num_workers, "collate_fn": bundle.collate_fn, "device": device}
    train = cache.get_or_build(model, bundle.train, identity={**identity, "split": "train"}, **kwargs)
    test = cache.get_or_build(model, bundle.test, identity={**identity, "split": "test"}, **kwargs)
    info = {**bundle.info, "feature_cache": {"train": str(train.path), "test": str(test.path), "dtype": dtype,
                                             "bytes_per_sample": train.manifest.get("bytes_per_sample")}}
    cached = dataclasses.replace(bundle, train=train, test=test, info=info, collate_fn=pad_collate)
    return cached, CachedFeaturesModel(model)
