"""Dataset registry and the bundle every loader returns.

A dataset spec is ``prefix:argument``: ``ucr:GunPoint``, ``npz:path/to/file.npz``, ``ts:train.ts``,
``frames:dir``, ``windows:file.npz``, or ``builtin:digit_sequences``. Loaders register a prefix with
:func:`register_source`; generated datasets register a name under ``builtin:`` with
:func:`register_dataset`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from cnnlstm.data.info import DataInfo
from cnnlstm.errors import ConfigError, UnknownNameError, did_you_mean

__all__ = [
    "DatasetBundle",
    "register_source",
    "register_dataset",
    "load_dataset",
    "list_datasets",
    "register_writer",
    "write_dataset",
    "DATASET_KINDS",
]

DATASET_KINDS = ("series", "frames", "text_image", "vqa", "forecast", "captions", "images")


@dataclass
class DatasetBundle:
    """A loaded dataset: train and test splits plus what a model and task need to know about them.

    Args:
        name: the spec it was loaded from, e.g. ``"ucr:BasicMotions"``.
        kind: one of :data:`DATASET_KINDS`.
        train: training split; validation is carved from it later (``split_train_val``).
        test: test split, evaluated once at the end of a run.
        info: a :class:`~cnnlstm.data.info.DataInfo`: ``model_kwargs`` (what the data fixes, e.g.
            ``num_classes``, ``in_channels``), ``class_names``, ``targets`` (train labels, for stratified
            splits), ``groups`` (optional: the source of each training sample, e.g. its scene; validation then
            takes whole groups), ``normalization``, ``image_size`` and kind-specific ``extras`` (``charset``,
            ``vocab``, ``answers``, ...).
        collate_fn: turns a list of sample dicts into a batch dict (pads and adds ``lengths``).
    """

    name: str
    kind: str
    train: Dataset
    test: Dataset
    info: DataInfo = field(default_factory=DataInfo)
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None


@dataclass
class _Entry:
    loader: Callable[..., DatasetBundle]
    kind: str
    description: str


_SOURCES: dict[str, _Entry] = {}
_BUILTINS: dict[str, _Entry] = {}
_WRITERS: dict[str, Callable[[DatasetBundle, Path], None]] = {}


def register_source(prefix: str, *, kind: str, description: str) -> Callable:
    """Register ``loader(argument, *, seed, **options) -> DatasetBundle`` for specs ``prefix:argument``."""

    def decorator(fn: Callable[..., DatasetBundle]) -> Callable[..., DatasetBundle]:
        if prefix in _SOURCES:
            raise ConfigError(f"dataset source {prefix!r} is already registered")
        _SOURCES[prefix] = _Entry(fn, kind, description)
        return fn

    return decorator


def register_dataset(name: str, *, kind: str, description: str) -> Callable:
    """Register a generated dataset ``builtin:name``: ``fn(*, seed, **options) -> DatasetBundle``."""

    def decorator(fn: Callable[..., DatasetBundle]) -> Callable[..., DatasetBundle]:
        if name in _BUILTINS:
            raise ConfigError(f"built-in dataset {name!r} is already registered")
        _BUILTINS[name] = _Entry(fn, kind, description)
        return fn

    return decorator


def register_writer(name: str) -> Callable:
    """Register ``writer(bundle, folder)`` that writes ``builtin:name`` to disk in a user data layout.

    The writer gets the loaded bundle and a new, empty folder; it writes the files a user source reads
    (``cnnlstm datasets write builtin:name DIR``), so every generated set doubles as an example of its layout.
    """

    def decorator(fn: Callable[[DatasetBundle, Path], None]) -> Callable[[DatasetBundle, Path], None]:
        if name in _WRITERS:
            raise ConfigError(f"a writer for built-in dataset {name!r} is already registered")
        _WRITERS[name] = fn
        return fn

    return decorator


def write_dataset(spec: str, folder: str | Path, *, seed: int = 0, **options: Any) -> Path:
    """Generate ``builtin:NAME`` and write it to ``folder`` in the layout of its user source.

    Args:
        spec: ``builtin:NAME`` of a dataset with a registered writer.
        folder: where to write; must not exist or be empty (nothing is ever written over).
        seed: seed of the generated data.
        **options: the dataset's options (sizes, counts).

    Example:
        >>> write_dataset("builtin:sort_of_clevr", "clevr", n_train=200, n_test=50)  # doctest: +SKIP
    """
    _ensure_loaded()
    name = spec.split(":", 1)[1] if spec.startswith("builtin:") else None
    if name not in _WRITERS:
        raise UnknownNameError(f"cannot write {spec!r}; datasets that can be written: "
                               f"{', '.join(f'builtin:{n}' for n in sorted(_WRITERS))}")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not an empty folder; give a new folder to write into")
    bundle = load_dataset(spec, seed=seed, **options)
    folder.mkdir(parents=True, exist_ok=True)
    _WRITERS[name](bundle, folder)
    return folder


def _ensure_loaded() -> None:
    # Every module of cnnlstm.data (and cnnlstm.data.builtin) registers what it provides on import.
    import cnnlstm.data as package

    for pkg in (package,):
        for module in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}."):
            if not module.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(module.name)


def list_datasets() -> dict[str, tuple[str, str]]:
    """``{spec_pattern: (kind, description)}`` for every source prefix and built-in dataset."""
    _ensure_loaded()
    out = {f"{p}:<arg>": (e.kind, e.description) for p, e in sorted(_SOURCES.items())}
    out.update({f"builtin:{n}": (e.kind, e.description) for n, e in sorted(_BUILTINS.items())})
    return out


def load_dataset(spec: str, *, seed: int = 0, **options: Any) -> DatasetBundle:
    """Load the dataset named by ``spec`` (``prefix:argument``).

    Args:
        spec: e.g. ``"ucr:GunPoint"``, ``"npz:data.npz"``, ``"builtin:digit_sequences"``.
        seed: seed for generated data and any sampling.
        **options: loader options (sizes, frame count, window length, ...).

    Example:
        >>> bundle = load_dataset("ucr:GunPoint")  # doctest: +SKIP
    """
    _ensure_loaded()
    if ":" not in spec:
        choices = [f"builtin:{n}" for n in _BUILTINS]
        if spec in _BUILTINS:
            raise UnknownNameError(f"dataset spec {spec!r} needs a prefix: use 'builtin:{spec}'")
        raise UnknownNameError(
            f"dataset spec {spec!r} has no prefix; use one of {', '.join(p + ':' for p in sorted(_SOURCES))} "
            f"or builtin:NAME{did_you_mean(spec, choices)}"
        )
    prefix, arg = spec.split(":", 1)
    if prefix == "builtin":
        if arg not in _BUILTINS:
            raise UnknownNameError(
                f"unknown built-in dataset {arg!r}{did_you_mean(arg, _BUILTINS)}; `cnnlstm datasets` lists them"
            )
        bundle = _BUILTINS[arg].loader(seed=seed, **options)
    else:
        if prefix not in _SOURCES:
            raise UnknownNameError(
                f"unknown dataset source {prefix!r} in {spec!r}{did_you_mean(prefix, list(_SOURCES) + ['builtin'])}"
            )
        bundle = _SOURCES[prefix].loader(arg, seed=seed, **options)
    return bundle
