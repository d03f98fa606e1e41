"""PNG charts of the benchmark records (accuracy, digit sequences, speed), drawn from their JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnlstm.errors import DataError

__all__ = ["draw_charts"]


def _bars(ax: Any, groups: list[str], series: dict[str, tuple[list[float], list[float]]], ylabel: str) -> None:
    width = 0.8 / max(len(series), 1)
    for k, (label, (values, errors)) in enumerate(series.items()):
        pos = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        ax.bar(pos, values, width, yerr=errors, capsize=3, label=label)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)


def _accuracy(record: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = list(record["datasets"])
    series: dict[str, tuple[list[float], list[float]]] = {}
    ours = f"cnnlstm {record.get('recipe', 'ucr')} recipe"
    for key, label in (("ours", ours), ("ours_shuffle", "cnnlstm shuffle=true"), ("minirocket", "MiniRocket (aeon)")):
        cells = [record["datasets"][n].get(key) or {} for n in names]
        if any(c.get("mean") is not None for c in cells):  # unmeasured cells stay empty (NaN)
            series[label] = ([float("nan") if c.get("mean") is None else c["mean"] for c in cells],
                             [0.0 if c.get("std") is None else c["std"] for c in cells])
    best = [record["datasets"][n].get("best_published") or float("nan") for n in names]
    series["best published"] = (best, [0.0] * len(names))
    fig, ax = plt.subplots(figsize=(9, 4))
    _bars(ax, names, series, "test accuracy")
    low = float(np.nanmin([v for values, _ in series.values() for v in values]))
    ax.set_ylim(max(0.0, low - 0.05), 1.01)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"UCR/UEA test accuracy, mean ± std over {len(record['seeds'])} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _digits(record: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = list(record["variants"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    means = [record["variants"][n]["mean"] for n in names]
    stds = [record["variants"][n]["std"] for n in names]
    ax.barh(names, means, xerr=stds, capsize=3, color=["C0", "C1", "C2"][: len(names)])
    ax.axvline(record["chance"], color="k", ls="--", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy (position of the largest digit)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _speed(record: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, key, unit in ((axes[0], "frame_lstm", "clips/s"), (axes[1], "lstm_fcn", "samples/s")):
        paths = record[key]["paths"]
        names = list(paths)
        ax.barh(names, [paths[n]["median"] for n in names], color=[f"C{i}" for i in range(len(names))])
        ax.set_xlabel(f"training {unit} (median, this CPU)")
        ax.set_title(key, fontsize=10)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_charts(results: Path, img_dir: Path) -> list[Path]:
    """Draw a PNG for every benchmark record found in ``results`` (``accuracy``/``digits``/``speed.json``).

    Args:
        results: directory of the JSON records.
        img_dir: where the PNGs go (``bench_<name>.png``).

    Returns:
        the written PNG paths.

    Example:
        >>> draw_charts(Path("benchmarks/results"), Path("docs/img"))  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("accuracy", _accuracy), ("digits", _digits), ("speed", _speed)):
        source = results / f"{name}.json"
        if source.is_file():
            record = _read_record(source)
            try:
                if name == "accuracy":
                    record = _with_shuffle(record, results / "accuracy_shuffle.json")
                written.append(draw(record, img_dir / f"bench_{name}.png"))
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise DataError(f"{source} is not a complete {name} benchmark record ({type(exc).__name__}: "
                                f"{exc}); rerun `python -m benchmarks {name}` or restore the file") from None
    return written


def _read_record(path: Path) -> dict[str, Any]:
    """A benchmark record: a JSON object, or a ``DataError`` naming the file and the broken spot."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun the benchmark that writes it or restore "
                        "the file") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} holds a JSON {type(record).__name__}, not a benchmark record (an object)")
    return record


def _with_shuffle(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add the shuffle runs of a separate record (``--variants shuffle --name accuracy_shuffle``) when present
    and trained with the same recipe and overrides (bars of two recipes side by side would compare settings)."""
    if not path.is_file():
        return record
    shuffle = _read_record(path)
    if (shuffle.get("recipe"), shuffle.get("overrides")) != (record.get("recipe"), record.get("overrides")):
        return record
    other = shuffle["datasets"]
    for name, entry in record["datasets"].items():
        if "ours_shuffle" not in entry and "ours_shuffle" in other.get(name, {}):
            entry["ours_shuffle"] = other[name]["ours_shuffle"]
    return record
