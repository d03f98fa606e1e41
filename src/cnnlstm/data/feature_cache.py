"""Storage of the frozen-encoder feature cache: per-frame features of a dataset, computed once, kept on disk.

When a frame model's encoder is frozen (every parameter fixed, every module in eval mode) its per-frame
features never change, so recomputing the CNN each epoch is wasted work. :class:`FeatureCache` computes each
split's features once with a module it is given (the model side,
:class:`~cnnlstm.models.cached_features.FrameFeatures`, says what the features depend on) and serves them as a
dataset whose samples are ``{"x": (T, D) features, "y"}``. The engine swaps them in with the model's recurrent
part (:func:`cnnlstm.engine.feature_cache.use_feature_cache`).

Storage: ``root/<key>/`` holds ``manifest.json``, ``index.npy`` (per sample: shard, first row, length),
one ``<field>.npy`` per other sample key (``y``) and sharded ``feats-00000.npy`` files of shape
``(rows, D)`` (the valid frames of consecutive samples, no padding stored), float32 or, with
``dtype="float16"``, half precision: half the disk and page cache, read back as float32. A frame's features are
one flat row whatever the model makes of them: a pooled vector, or a grid flattened channel-major
(``frame_lstm``'s grid modes), so grids grow the cache by ``h * w`` times the stage's channels per frame.
Shards are opened with ``np.load(mmap_mode="r")`` on first use, so a dataset never holds its features in RAM
and DataLoader workers page in only the rows they read.

The key is a digest of everything the features depend on: what the feature module's ``cache_identity()`` names
(for a frame model, the encoder's name and build config and a digest of its weights), the data pipeline
(frame size, channels, normalisation, frame count and sampling), the data's identity (spec, options, seed, split
and subset indices, the clips' paths and file stats, a digest of the first sample) and
:data:`CACHE_FORMAT_VERSION`. Any change gives a new key and
so a new directory; :meth:`FeatureCache.prune` removes the stale ones. A cache is written into a temporary
directory and renamed into place only when complete (manifest last), so an interrupted write never leaves a
directory that looks valid.

Random frame sampling or augmentation makes every epoch see different inputs, so a cache would silently
train on one frozen draw: ``feature_cache: true`` then raises :class:`~cnnlstm.errors.ConfigError`, and
``"auto"`` trains end to end and logs why.
"""

from __future__ import annotations

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

from cnnlstm.data.collate import pad_collate
from cnnlstm.errors import ConfigError, DataError

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CACHE_DIR_ENV",
    "DTYPES",
    "CachedFeaturesDataset",
    "FeatureCache",
    "dataset_cache_problem",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

#: bump when the on-disk layout or the way features are computed changes; old caches then miss
CACHE_FORMAT_VERSION = 1
#: environment variable that moves the default cache root
CACHE_DIR_ENV = "CNNLSTM_CACHE_DIR"
_MANIFEST = "manifest.json"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 3600.0  # a temp dir older than this belongs to a writer that died
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
# ----------------------------------------------------------------------------------------------- validity
def dataset_cache_problem(dataset: Dataset) -> str | None:
    """Why the samples of ``dataset`` cannot be cached, or ``None`` when they can.

    Cached features stand for the samples of every epoch, so the samples must repeat exactly: no random frame
    sampling or augmentation (checked from the dataset's settings and by reading sample 0 twice). What the model
    side needs is :func:`cnnlstm.models.cached_features.feature_path_problem`.

    Args:
        dataset: the data to encode.

    Example:
        >>> from cnnlstm.data import load_dataset
        >>> dataset_cache_problem(load_dataset("builtin:digit_sequences", n_train=2, n_test=2).train) is None
        True
    """
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
        >>> train = cache.get_or_build(FrameFeatures(model), bundle.train, identity={"spec": "frames:clips"})
        ... # doctest: +SKIP
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

    def key_parts(self, features: nn.Module, dataset: Dataset, identity: Mapping[str, Any]) -> dict[str, Any]:
        """Everything the cached features depend on (hashed into the key; stored in the manifest).

        Args:
            features: the module that computes the features; its ``cache_identity()`` says what they depend on
                (e.g. :class:`~cnnlstm.models.cached_features.FrameFeatures`: the encoder and its weights).
            dataset: the data to encode (a ``Subset`` adds its indices).
            identity: what names the data: spec, options, seed and split (``{"spec": ..., "split": "train"}``).
        """
        base, indices = _unwrap(dataset)
        parts = {
            **features.cache_identity(),
            "format": CACHE_FORMAT_VERSION,
            "pipeline": _pipeline(base),
            "data": {
                "identity": dict(identity),
                "indices": indices,
                "num_samples": len(dataset),  # type: ignore[arg-type]
                "source": _source_digest(base),
                "first_sample": _sample_digest(dataset[0]) if len(dataset) else None,  # type: ignore[arg-type]
            },
        }
        if self.dtype != "float32":  # float32 caches keep the keys they had before dtypes existed
            parts["dtype"] = self.dtype
        return parts

    def key(self, features: nn.Module, dataset: Dataset, identity: Mapping[str, Any]) -> str:
        """The cache key (32 hex digits) of :meth:`key_parts`."""
        return _digest(self.key_parts(features, dataset, identity))

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
        features: nn.Module,
        dataset: Dataset,
        *,
        identity: Mapping[str, Any],
        batch_size: int = 32,
        num_workers: int = 0,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        device: str | torch.device | None = None,
    ) -> CachedFeaturesDataset:
        """Load the cached features of ``dataset``, computing them with ``features`` first when there are none.

        Args:
            features: a module ``(x (B, T, ...), lengths) -> (B, T, D)`` with ``cache_identity()``, e.g.
                :class:`~cnnlstm.models.cached_features.FrameFeatures` of a frame model with a frozen encoder.
            dataset: samples ``{"x": (T, C, H, W), "y", ...}``.
            identity: spec, options, seed and split of the data (see :meth:`key_parts`).
            batch_size: clips encoded per forward.
            num_workers: DataLoader workers that read the clips.
            collate_fn: batches samples (default :func:`pad_collate`).
            device: where to encode (default: CUDA when available, else the module's device); the module is
                moved back afterwards.

        Returns:
            The cached features, in the order of ``dataset``.
        """
        # Building draws from torch's global generator (DataLoader seeds, sample reads); fork it so a run that
        # builds the cache and a run that finds it continue with the same random state (same shuffles).
        with torch.random.fork_rng(devices=[]):
            problem = dataset_cache_problem(dataset)
            if problem:
                raise ConfigError(f"cannot cache features: {problem}")
            parts = self.key_parts(features, dataset, identity)
            key = _digest(parts)
            cached = self.load(key)
            if cached is not None:
                log.info("feature cache hit: %s (%d samples)", cached.path, len(cached))
                return cached
            return self._build(key, parts, features, dataset, batch_size, num_workers, collate_fn or pad_collate,
                               device)

    @torch.no_grad()
    def _build(self, key: str, parts: dict[str, Any], features: nn.Module, dataset: Dataset, batch_size: int,
               num_workers: int, collate_fn: Callable, device: str | torch.device | None) -> CachedFeaturesDataset:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-", dir=self.root))
        final = self.root / key
        home = next(features.parameters()).device
        target = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else home)
        was_training = features.training
        start = time.perf_counter()
        try:
            features.to(target).eval()
            writer = _ShardWriter(tmp, self.shard_bytes)
            fields: dict[str, list[np.ndarray]] = {}
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                collate_fn=collate_fn)
            for batch in loader:
                x = batch["x"].to(target)  # (B, T, C, H, W)
                lengths = batch.get("lengths")
                feats = features(x, lengths).float().cpu().numpy()  # (B, T, D)
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
            features.to(home).train(was_training)
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
