"""Safe, checked loading of weight files into modules.

Only tensors are ever read: ``.safetensors`` through safetensors, ``.pth``/``.pt``/``.bin``/``.ckpt`` through
``torch.load(weights_only=True)``, which refuses pickles that would run code. Keys can be renamed (a dict, a
function, or ``"ordered"`` one-to-one pairing), and every load reports what was missing or unexpected; a load
that would leave tensors at their random initial values is refused unless asked for.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnlstm.errors import WeightsError

__all__ = ["LoadReport", "KeyMap", "load_weights", "load_state", "read_state_dict", "read_metadata", "remap_keys"]

KeyMap = Mapping[str, str] | Callable[[str], "str | None"] | str | None
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_SHOW = 5  # how many keys error messages list
_OPTIONAL = "num_batches_tracked"  # BatchNorm's counter: absent from many exported files, never needed for inference


@dataclass(frozen=True)
class LoadReport:
    """What a load did, in the module's key names.

    Attributes:
        missing: module tensors the file did not provide (kept at their previous values).
        unexpected: file tensors the module has no place for (ignored).
        loaded: module tensors that were overwritten from the file.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"loaded {len(self.loaded)} tensors, {len(self.missing)} missing, {len(self.unexpected)} unexpected"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict of tensors from a weights file without running any code it might contain.

    A checkpoint that nests the state dict under ``"state_dict"`` (Lightning) or ``"model"`` is unwrapped.

    Args:
        path: a ``.safetensors``, ``.pth``, ``.pt``, ``.bin`` or ``.ckpt`` file.

    Returns:
        name -> tensor, on the CPU.

    Raises:
        WeightsError: the file is missing, of an unknown kind, unreadable, holds no state dict, or is a pickle
            that needs to execute code to load (refused, never run).

    Example:
        >>> state = read_state_dict("digit_cnn.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError for truncated or foreign files
            raise WeightsError(f"cannot read {path} as safetensors: {exc}") from exc
    if suffix not in PICKLE_SUFFIXES:
        raise WeightsError(f"unsupported weights file {path.name!r}: use .safetensors or one of {PICKLE_SUFFIXES}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"refused to load {path}: it is a pickle that would execute code or build arbitrary Python objects "
            f"while loading, and only plain tensors are loaded ({first_line}). If you trust the file, load it "
            "yourself and re-save model.state_dict() with torch.save or safetensors."
        ) from None
    except Exception as exc:  # truncated zip, wrong format, ...
        raise WeightsError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc
    return _unwrap(obj, path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (``{}`` for other kinds or none stored).

    Args:
        path: a weights file.

    Example:
        >>> read_metadata("digit_cnn.safetensors")["format"]  # doctest: +SKIP
        'cnnlstm.encoder'
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"cannot read {path} as safetensors: {exc}") from exc


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path} holds no state dict (got {type(obj).__name__})")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"{path} is not a state dict of tensors: entries {not_tensors[:_SHOW]} are not tensors "
            "(expected a bare state dict or one under 'state_dict' / 'model')"
        )
    return {str(k): v for k, v in obj.items()}


def remap_keys(
    state: Mapping[str, torch.Tensor], key_map: KeyMap, target: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Rename the keys of ``state``.

    Args:
        state: name -> tensor, as read from a file.
        key_map: ``None`` (keep names); a dict old -> new (unlisted keys keep their name); a callable old -> new
            or ``None`` to drop the key; or ``"ordered"``: pair the file's tensors with ``target``'s one to one in
            order (BatchNorm ``num_batches_tracked`` counters skipped on both sides), requiring equal counts,
            shapes and last name parts (``weight`` with ``weight``, ``running_var`` with ``running_var``).
        target: the module's state dict; needed for ``"ordered"``.

    Returns:
        The renamed state dict.

    Example:
        >>> remap_keys({"fc.w": torch.zeros(1)}, {"fc.w": "head.weight"})
        {'head.weight': tensor([0.])}
    """
    if key_map is None:
        return dict(state)
    if isinstance(key_map, str):
        if key_map != "ordered":
            raise WeightsError(f"key_map must be a dict, a callable or 'ordered', got {key_map!r}")
        if target is None:
            raise WeightsError("key_map='ordered' needs the target module's state dict")
        return _ordered(state, target)
    rename = key_map.get if isinstance(key_map, Mapping) else key_map
    out: dict[str, torch.Tensor] = {}
    for old, tensor in state.items():
        new = rename(old, old) if isinstance(key_map, Mapping) else rename(old)
        if new is None:
            continue
        if new in out:
            raise WeightsError(f"key_map sends two file tensors to {new!r} (the second is {old!r})")
        out[new] = tensor
    return out


def _ordered(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    src = [k for k in state if not k.endswith(_OPTIONAL)]
    dst = [k for k in target if not k.endswith(_OPTIONAL)]
    if len(src) != len(dst):
        raise WeightsError(
            f"key_map='ordered' pairs tensors one to one, but the file has {len(src)} and the model {len(dst)} "
            "(not counting num_batches_tracked); drop or rename the extra keys with a dict or callable key_map"
        )
    out: dict[str, torch.Tensor] = {}
    for i, (s, d) in enumerate(zip(src, dst, strict=True)):
        if tuple(state[s].shape) != tuple(target[d].shape) or s.rsplit(".", 1)[-1] != d.rsplit(".", 1)[-1]:
            raise WeightsError(
                f"key_map='ordered': tensor #{i} differs: file {s!r} {tuple(state[s].shape)} vs model {d!r} "
                f"{tuple(target[d].shape)}; the two layouts do not correspond in order"
            )
        out[d] = state[s]
    return out


def load_state(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    key_map: KeyMap = None,
    strict: bool = True,
    allow_partial: bool = False,
    source: str = "weights",
) -> LoadReport:
    """Load a state dict into ``module`` with :func:`load_weights`'s checks (for state dicts already in memory).

    Args:
        module: where to load.
        state: name -> tensor.
        key_map: see :func:`remap_keys`.
        strict: refuse tensors the module has no place for (else ignore and report them).
        allow_partial: accept a load that leaves module tensors unset (they keep their current values).
        source: how error messages name the weights (a file path).

    Returns:
        A :class:`LoadReport`.

    Example:
        >>> report = load_state(nn.Linear(2, 2), nn.Linear(2, 2).state_dict())
        >>> len(report.loaded)
        2
    """
    target = module.state_dict()
    state = remap_keys(state, key_map, target)
    missing = [k for k in target if k not in state and not k.endswith(_OPTIONAL)]
    unexpected = [k for k in state if k not in target and not k.endswith(_OPTIONAL)]
    bad = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    if bad:
        shown = "; ".join(f"{k!r}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}" for k in bad[:_SHOW])
        raise WeightsError(f"{source}: {len(bad)} tensors have the wrong shape: {shown}")
    if strict and unexpected:
        raise WeightsError(
            f"{source} has {len(unexpected)} tensors the model does not: {_list(unexpected)}; "
            "pass strict=False to ignore them, or a key_map to rename them"
        )
    if missing and not allow_partial:
        raise WeightsError(
            f"{source} leaves {len(missing)} of {len(target)} model tensors unset: {_list(missing)}; "
            "pass allow_partial=True to keep their initial values, or a key_map to rename the file's keys"
        )
    usable = {k: v for k, v in state.items() if k in target}
    module.load_state_dict(usable, strict=False)
    return LoadReport(missing=missing, unexpected=unexpected, loaded=[k for k in target if k in usable])


def load_weights(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    key_map: KeyMap = None,
    strict: bool = True,
    allow_partial: bool = False,
) -> LoadReport:
    """Load a weights file into ``module`` safely (no pickled code runs) and completely (or say what is left).

    Args:
        module: where to load.
        path: a ``.safetensors``, ``.pth``, ``.pt``, ``.bin`` or ``.ckpt`` file; a bare state dict or one nested
            under ``"state_dict"`` / ``"model"``.
        key_map: rename the file's keys: a dict old -> new, a callable (return ``None`` to drop a key), or
            ``"ordered"`` (pair tensors one to one in order, shapes equal; ``.pth``-like files only, as
            safetensors files keep tensors sorted by name); see :func:`remap_keys`.
        strict: refuse file tensors the module has no place for (``False``: ignore and report them).
        allow_partial: accept a load that leaves some module tensors at their current values.

    Returns:
        ``LoadReport(missing, unexpected, loaded)``.

    Raises:
        WeightsError: unsafe or unreadable file, a shape mismatch (naming the key and both shapes), unexpected
            keys with ``strict``, or missing keys without ``allow_partial`` (listing the first few).

    Example:
        >>> report = load_weights(encoder, "digit_cnn.safetensors")  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
        loaded 15 tensors, 0 missing, 0 unexpected
    """
    if key_map == "ordered" and Path(path).suffix.lower() == ".safetensors":
        raise WeightsError(
            f"key_map='ordered' cannot be used with {Path(path).name}: safetensors files store tensors sorted by "
            "name, not in the model's order; pass a dict or callable key_map, or a .pth file"
        )
    state = read_state_dict(path)
    return load_state(module, state, key_map=key_map, strict=strict, allow_partial=allow_partial, source=str(path))


def _list(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")
