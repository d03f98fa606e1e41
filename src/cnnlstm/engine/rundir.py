"""The run directory: every file a run writes, written atomically, and what rebuilds the run from it alone.

Layout::

    RUN/config.yaml              the resolved recipe (defaults, overrides and --data applied)
    RUN/checkpoints/best.ckpt    Lightning's checkpoint of the best validation epoch (last.ckpt: the last one)
    RUN/checkpoints/best.safetensors
                                 the best model's weights + its registry name and kwargs (metadata); this is
                                 what ``cnnlstm test`` / ``predict`` load: tensors only, no unpickling of code
    RUN/metrics.json             flat metrics (test/acc, val/acc, best_epoch, fit_seconds, params, ...)
    RUN/history.json             per-epoch train/val metrics (the learning curves' data)
    RUN/logs/metrics.csv         Lightning's CSV log (trainer.logger adds logs/tensorboard/ and mlflow.db)
    RUN/*.png                    learning curves, confusion matrix
    RUN/report.html              the run's page: metrics, curves, per-class scores, cost, worst test examples
    RUN/refit/                   with trainer.refit: the refit's history.json, curves and logs; best.safetensors
                                 is then the refit model, best.ckpt and history.json the first fit's
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from cnnlstm._io import atomic_write, write_through_temp
from cnnlstm.engine.recipe import parse_yaml, read_recipe_text, resolve_config
from cnnlstm.errors import ConfigError, WeightsError
from cnnlstm.models import create_model, model_config

__all__ = [
    "RUN_DIR_ENV",
    "write_json",
    "write_yaml",
    "read_config",
    "resolve_run_dir",
    "save_weights",
    "load_weights",
    "weights_path",
    "offline_kwargs",
]

#: set by the launching process so DDP workers, started later, write to the same run directory
RUN_DIR_ENV = "CNNLSTM_RUN_DIR"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a metric that could not be computed is null
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN/inf become ``null``)."""
    return atomic_write(path, json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | Path, data: dict[str, Any]) -> Path:
    """Atomically write ``data`` as YAML in its key order."""
    return atomic_write(path, yaml.safe_dump(_jsonable(data), sort_keys=False))


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved recipe a run was trained with (``RUN/config.yaml``), validated again.

    A config.yaml edited after training (``batch_size: -3``) is checked like a recipe, so ``test``,
    ``predict``, ``export`` and ``fit --resume`` refuse it in one line naming the file and key.

    Raises:
        ConfigError: the folder or its config.yaml is missing, unreadable or fails validation.
    """
    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {str(run_dir)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: it has no config.yaml (pass the --out of a fit)")
    config = parse_yaml(read_recipe_text(path), str(path))  # a damaged config.yaml is a ConfigError, not a crash
    try:  # over the defaults, as a recipe is: a hand-trimmed config.yaml gets a message, not a KeyError
        return resolve_config(config)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}; fix or restore the run's config.yaml") from None


def resolve_run_dir(out: str | Path | None, recipe_name: str) -> Path:
    """The run directory: ``out``, or one shared by all processes of a run, or ``runs/<recipe>-<timestamp>``."""
    if out is not None:
        return Path(out)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{recipe_name}-{stamp}"
    n = 1
    while path.exists():  # two runs started in the same second
        path = Path("runs") / f"{recipe_name}-{stamp}-{n}"
        n += 1
    return path


def weights_path(run_dir: str | Path) -> Path:
    """Where a run keeps its best model's weights."""
    return Path(run_dir) / "checkpoints" / "best.safetensors"


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save a registered model's weights as safetensors, with its registry name and kwargs as metadata.

    Args:
        model: a model built by ``create_model`` (it knows its name and kwargs).
        path: target ``.safetensors`` file (written atomically).

    Example:
        >>> save_weights(create_model("lstm_fcn", in_channels=3, num_classes=2), "m.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    config = model_config(model)
    # save_model (not save_file) de-duplicates tied tensors, which safetensors refuses to store twice.
    metadata = {"cnnlstm_model": json.dumps(_jsonable(config))}
    write_through_temp(path, lambda tmp: save_model(model, tmp, metadata=metadata))
    return path


def offline_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor kwargs with every ``pretrained`` switched off: the weights come from the run's file.

    A rebuilt timm encoder then never downloads, and a pretrained file that was moved or deleted after
    training does not break ``test``, ``predict`` or ``export``.

    Example:
        >>> offline_kwargs({"pretrained": "enc.safetensors", "encoder_kwargs": {"pretrained": True}, "hidden_size": 8})
        {'pretrained': False, 'encoder_kwargs': {'pretrained': False}, 'hidden_size': 8}
    """
    out = dict(kwargs)
    if "pretrained" in out:
        out["pretrained"] = False
    for key, value in out.items():
        if isinstance(value, dict) and "pretrained" in value:
            out[key] = {**value, "pretrained": False}
    return out


def load_weights(path: str | Path) -> nn.Module:
    """Rebuild a model from a file written by :func:`save_weights` (eval mode, on the CPU).

    Raises:
        WeightsError: the file is missing, not safetensors, lacks the model metadata, or does not match
            the model it names.

    Example:
        >>> model = load_weights("runs/basic_motions/checkpoints/best.safetensors")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights at {path}; was the run's fit finished?")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from None
    if "cnnlstm_model" not in meta:
        raise WeightsError(f"{path} does not say which model it holds (no cnnlstm_model metadata)")
    config = json.loads(meta["cnnlstm_model"])
    model = create_model(config["name"], **offline_kwargs(config["kwargs"]))
    try:
        load_model(model, str(path), strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match {config['name']}: {str(exc).splitlines()[0]}") from None
    return model.eval()
