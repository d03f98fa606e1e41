"""``RUN/report.html`` and side-by-side comparisons of runs: pages people look at instead of JSON.

A run's page holds the resolved recipe, the data summary, the test metrics (read from ``metrics.json``), the
learning curves (``history.json``), the confusion matrix and per-class precision/recall/F1 for classification,
the generalisation gap and overfitting warning, the cost summary (parameters, FLOPs and peak memory at the
data's sequence length, from :func:`~cnnlstm.profile.cost_report`) and the K test examples with the
highest per-sample loss, drawn for the data's kind (:mod:`cnnlstm.report.gallery`). ``fit`` writes it at the
end of every run that was tested; ``cnnlstm report RUN`` rebuilds it from the directory alone, running the best
weights over the test split again.

``cnnlstm report RUN1 RUN2 ... --out FILE`` (run directories or ``cnnlstm tune`` study folders, whose trials
are the runs) puts the runs' metrics side by side and overlays their learning curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from cnnlstm._io import atomic_write
from cnnlstm.data import DatasetBundle
from cnnlstm.data.collate import pad_collate
from cnnlstm.engine.outputs import enclosing_run
from cnnlstm.engine.rundir import read_config
from cnnlstm.errors import CnnLstmError, ConfigError
from cnnlstm.tasks import ClassificationTask, Task

__all__ = ["REPORT_NAME", "run_report", "write_run_report", "build_run_page", "compare_runs", "expand_runs",
           "check_report_path"]

log = logging.getLogger(__name__)

#: the report's file name inside a run directory
REPORT_NAME = "report.html"
#: test examples shown by default
DEFAULT_WORST = 8
#: metrics whose lower value is better (everything else: higher is better)
_LOWER_IS_BETTER = ("loss", "cer", "mse", "mae", "baseline_mse")


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path.parent} has no {path.name}; was its fit finished and tested? ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); rerun the fit") from None


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "metrics.json").is_file()


def check_report_path(out: str | Path, *, overwrite: bool = False) -> Path:
    """Check, before any work, that a report may be written at ``out``.

    Raises:
        ConfigError: ``out`` exists (without ``overwrite``), is a folder, or lies inside a run directory (a
            command never writes inside a run it did not create).

    Example:
        >>> check_report_path("/tmp/cnnlstm-compare.html", overwrite=True).name
        'cnnlstm-compare.html'
    """
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the .html file to write")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists; choose another file or pass --overwrite")
    run = enclosing_run(out.resolve())
    if run is not None:
        raise ConfigError(f"--out {out} lies inside the run directory {run}; write the report elsewhere")
    return out


def _score_test_split(task: Task, bundle: DatasetBundle, batch_size: int) -> list[dict[str, Any]]:
    from torch.utils.data import DataLoader

    from cnnlstm.report.per_sample import score_samples

    loader = DataLoader(bundle.test, batch_size=batch_size, shuffle=False,  # type: ignore[arg-type]
                        collate_fn=bundle.collate_fn or pad_collate)
    return score_samples(task, loader)


def _per_class(scores: list[dict[str, Any]], class_names: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The (K, K) test confusion matrix (rows true, columns predicted) and precision/recall/F1 per class."""
    index = {name: i for i, name in enumerate(class_names)}
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    for s in scores:
        matrix[index[s["true"]], index[s["pred"]]] += 1
    rows = []
    for k, name in enumerate(class_names):
        hit, predicted, actual = matrix[k, k], matrix[:, k].sum(), matrix[k].sum()
        precision = hit / predicted if predicted else 0.0
        recall = hit / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"name": name, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(actual)})
    return matrix, rows


def _cost_rows(model: nn.Module, bundle: DatasetBundle) -> tuple[list[tuple[str, str]], str]:
    """Parameters, FLOPs and peak memory at the test data's sequence length (batch 1), and what they mean."""
    from cnnlstm.profile import cost_report, format_bytes, format_si

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = [("parameters", f"{total:,}"), ("trainable", f"{trainable:,}")]
    sample = bundle.test[0]  # type: ignore[index]
    key = next((k for k in ("x", "sequence", "captions") if k in sample), None)
    seq_len = int(len(sample[key])) if key else None
    if bundle.kind == "text_image":  # T of a line image is the model's output columns
        was_training = model.training
        with torch.no_grad():
            seq_len = int(model.eval()(x=sample["x"][None].to(next(model.parameters()).device)).shape[1])
        model.train(was_training)
    image = next((sample[k] for k in ("image", "images", "x") if k in sample and sample[k].dim() >= 3), None)
    frame = tuple(int(v) for v in image.shape[-2:]) if image is not None else None
    try:
        table = cost_report(model, seq_lens=(seq_len,) if seq_len else (16,), frame_sizes=[frame] if frame else None,
                            batch_size=1)
    except (CnnLstmError, RuntimeError, TypeError, ValueError) as exc:
        return rows, f"FLOPs and memory not measured: {str(exc).splitlines()[0]}"
    row = table.rows[0]
    rows += [("FLOPs forward / sample", format_si(row.flops_forward, "FLOP")),
             ("FLOPs train step / sample", format_si(row.flops_train, "FLOP")),
             ("peak memory, inference", format_bytes(row.peak_inference_bytes)),
             ("peak memory, train step (Adam)", format_bytes(row.peak_train_bytes))]
    where = f"T={row.seq_len}" + (f", frames {row.frame_size[0]}x{row.frame_size[1]}" if row.frame_size else "")
    note = (f"Measured by cost_report at {where}, batch 1 on {table.device} (memory: {table.memory_source}); "
            "`cnnlstm summary` shows how they grow with T and frame size.")
    return rows, note


def _png_file(path: Path) -> str | None:
    """A PNG the run already holds, as a data URI (``None`` when it has none)."""
    from cnnlstm.report.gallery import png_data_uri

    return png_data_uri(path.read_bytes()) if path.is_file() else None


def _monitor_metric(history: list[dict[str, float]]) -> str | None:
    names = [k.split("/", 1)[1] for h in history[:1] for k in h if k.startswith("val/") and k != "val/loss"]
    return names[0] if names else None


def _data_summary(bundle: DatasetBundle, name: str, metrics: dict[str, Any]) -> list[tuple[str, str]]:
    sample = bundle.test[0]  # type: ignore[index]
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sample.items() if hasattr(v, "shape") and v.dim() > 0)
    rows = [("dataset", bundle.name), ("kind", bundle.kind), ("task", name)]
    for split in ("train", "val", "test"):
        if f"{split}_samples" in metrics:
            rows.append((f"{split} samples", f"{metrics[f'{split}_samples']:,}"))
    classes = bundle.info.class_names
    if classes:
        shown = ", ".join(map(str, classes[:20])) + (" ..." if len(classes) > 20 else "")
        rows.append((f"classes ({len(classes)})", shown))
    for key, label in (("charset", "characters"), ("vocab", "vocabulary")):
        if bundle.info.extras.get(key):
            rows.append((label, f"{len(bundle.info.extras[key])} entries"))
    rows.append(("one test sample", shapes))
    return rows


def build_run_page(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any], history: list[dict[str, float]],
                   bundle: DatasetBundle, name: str, task: Task, model: nn.Module, k: int = DEFAULT_WORST) -> str:
    """The HTML of a run's report, from what the run holds in memory (``fit``) or rebuilt (``cnnlstm report``).

    Args:
        run_dir: the run directory (shown on the page).
        config: the resolved recipe.
        metrics: the run's ``metrics.json``.
        history: the run's ``history.json``.
        bundle: the run's data (its test split is scored again).
        name: the task name.
        task: a task around the full model with the run's kept weights (best or SWA).
        model: the full model (for the cost summary).
        k: how many of the worst test examples to draw.

    Example:
        >>> html = build_run_page(run_dir, config, metrics, history, bundle, "classification", task, model)
        ... # doctest: +SKIP
    """
    from cnnlstm.report.gallery import draw_sample, png_data_uri
    from cnnlstm.report.html import render_page
    from cnnlstm.report.per_sample import worst_samples
    from cnnlstm.report.plots import confusion_matrix_figure, learning_curves_figure, png_bytes

    scores = _score_test_split(task, bundle, int(config["data"]["batch_size"]))
    info = bundle.info
    if len(info.extras.get("references") or []) != len(scores):  # reference captions: one list per test image
        info = dataclasses.replace(info, extras={k: v for k, v in info.extras.items() if k != "references"})
    gallery = [draw_sample(bundle.kind, bundle.test[s["index"]], s, info)  # type: ignore[index]
               for s in worst_samples(scores, k)]
    curves = _png_file(run_dir / "learning_curves.png")  # drawn by fit from the same history
    if history and curves is None:
        metric = task.monitor.split("/", 1)[1] if task.monitor != "val/loss" else _monitor_metric(history)
        curves = png_data_uri(png_bytes(learning_curves_figure(history, metric)))
    confusion, per_class = None, []
    if isinstance(task, ClassificationTask):
        matrix, per_class = _per_class(scores, task.class_names)
        confusion = _png_file(run_dir / "confusion_matrix.png") or png_data_uri(
            png_bytes(confusion_matrix_figure(matrix, task.class_names)))
    gaps = [(key[4:], metrics.get(f"best/train/{key[4:]}"), metrics.get(f"val/{key[4:]}"), metrics[key])
            for key in sorted(metrics) if key.startswith("gap/")]
    cost, cost_note = _cost_rows(model, bundle)
    facts = [(key, metrics[key]) for key in ("best_epoch", "epochs", "fit_seconds", "params", "trainable_params",
                                             "weights") if key in metrics]
    model_name = getattr(model, "model_name", type(model).__name__)
    return render_page(
        "run.html.j2",
        title=f"{config.get('name', run_dir.name)}: {model_name} on {bundle.name}",
        subtitle=f"{name} · {run_dir}",
        warning=metrics.get("warning"),
        test_metrics=[(key, v) for key, v in metrics.items() if key.startswith("test/")],
        val_metrics=[(key, v) for key, v in metrics.items() if key.startswith("val/")],
        run_facts=facts, curves=curves, gaps=gaps, confusion=confusion, per_class=per_class, gallery=gallery,
        n_test=len(scores), data_summary=_data_summary(bundle, name, metrics), cost=cost, cost_note=cost_note,
        recipe=yaml.safe_dump(config, sort_keys=False),
    )


def write_run_report(run_dir: Path, config: dict[str, Any], metrics: dict[str, Any],
                     history: list[dict[str, float]], bundle: DatasetBundle, name: str, task: Task,
                     model: nn.Module, out: Path | None = None, k: int = DEFAULT_WORST) -> Path:
    """Write :func:`build_run_page` to ``out`` (``RUN/report.html`` by default), atomically."""
    return atomic_write(out or run_dir / REPORT_NAME, build_run_page(run_dir, config, metrics, history, bundle, name,
                                                                     task, model, k))


def run_report(run_dir: str | Path, *, out: str | Path | None = None, overwrite: bool = False,
               k: int = DEFAULT_WORST) -> Path:
    """Rebuild a finished run from its directory and write its report (``cnnlstm report RUN``).

    Args:
        run_dir: a directory written by ``fit`` (tested: it has ``metrics.json`` with test metrics).
        out: where to write; ``RUN/report.html`` (replaced) by default.
        overwrite: replace an existing ``out``.
        k: how many of the worst test examples to draw.

    Raises:
        ConfigError: not a finished run, or ``out`` not writable (see :func:`check_report_path`).

    Example:
        >>> run_report("runs/basic_motions-20250101-120000")  # doctest: +SKIP
        PosixPath('runs/basic_motions-20250101-120000/report.html')
    """
    from cnnlstm.engine.fit import rebuild_run

    run_dir = Path(run_dir)
    read_config(run_dir)  # a clear message for a folder that is not a run
    target = check_report_path(out, overwrite=overwrite) if out is not None else None
    metrics = _read_json(run_dir / "metrics.json", "metrics")
    if not any(key.startswith("test/") for key in metrics):
        raise ConfigError(f"{run_dir} was never tested (a tuning trial?); its report would show test examples")
    history = _read_json(run_dir / "history.json", "history") if (run_dir / "history.json").is_file() else []
    config, bundle, name, task = rebuild_run(run_dir)
    return write_run_report(run_dir, config, metrics, history, bundle, name, task, task.model, out=target, k=k)


def expand_runs(paths: list[str | Path]) -> list[tuple[str, Path]]:
    """``(label, run directory)`` for run directories and ``cnnlstm tune`` study folders (their trials).

    Raises:
        ConfigError: a path is neither a finished run nor a study folder with finished trials.

    Example:
        >>> expand_runs(["runs/a", "runs/study"])  # doctest: +SKIP
        [('a', PosixPath('runs/a')), ('study/0000', PosixPath('runs/study/trials/0000')), ...]
    """
    out: list[tuple[str, Path]] = []
    for item in map(Path, paths):
        if _is_run(item):
            out.append((item.name, item))
        elif (item / "trials").is_dir():
            trials = sorted(p for p in (item / "trials").iterdir() if _is_run(p))
            if not trials:
                raise ConfigError(f"{item} is a study folder without finished trials (no trials/*/metrics.json)")
            out += [(f"{item.name}/{p.name}", p) for p in trials]
        else:
            raise ConfigError(f"{item} is neither a finished run (config.yaml + metrics.json) nor a tune study "
                              "folder (trials/)")
    return out


def _rows(runs: list[dict[str, Any]]) -> list[tuple[str, list[tuple[Any, bool]]]]:
    keys: list[str] = []
    for prefix in ("test/", "val/", "gap/", "pretrain/test/"):
        keys += sorted({k for m in runs for k in m if k.startswith(prefix) and isinstance(m[k], int | float)})
    keys += [k for k in ("best_epoch", "epochs", "params", "trainable_params", "fit_seconds")
             if any(k in m for m in runs)]
    rows = []
    for key in keys:
        values = [m.get(key) for m in runs]
        best = None
        numbers = [v for v in values if isinstance(v, int | float)]
        if key.startswith(("test/", "val/")) and len(numbers) > 1:
            lower = key.rsplit("/", 1)[1] in _LOWER_IS_BETTER
            best = min(numbers) if lower else max(numbers)
        rows.append((key, [(v, best is not None and v == best) for v in values]))
    return rows


def _overlaid_curves(labels: list[str], histories: list[list[dict[str, float]]]) -> str | None:
    from cnnlstm.report.gallery import png_data_uri
    from cnnlstm.report.plots import MaxNLocator, plt, png_bytes

    if not any(histories):
        return None
    metric = next((_monitor_metric(h) for h in histories if _monitor_metric(h)), None)
    panels = [("val/loss", "validation loss")] + ([(f"val/{metric}", f"validation {metric}")] if metric else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for i, (label, history) in enumerate(zip(labels, histories, strict=True)):
            rows = [h for h in history if key in h]
            if rows:
                ax.plot([h["epoch"] for h in rows], [h[key] for h in rows], marker="o", ms=3, label=label,
                        color=f"C{i % 10}")
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return png_data_uri(png_bytes(fig))


def compare_runs(paths: list[str | Path], out: str | Path, *, overwrite: bool = False) -> Path:
    """Metrics of several runs side by side and their validation curves overlaid, in one HTML file.

    Args:
        paths: run directories and/or ``cnnlstm tune`` study folders.
        out: the ``.html`` file to write (never inside a run directory).
        overwrite: replace an existing ``out``.

    Raises:
        ConfigError: a path is not a run or study, or ``out`` cannot be written (checked before any work).

    Example:
        >>> compare_runs(["runs/a", "runs/b"], "compare.html")  # doctest: +SKIP
    """
    from cnnlstm.report.html import render_page

    target = check_report_path(out, overwrite=overwrite)
    runs = expand_runs(paths)
    labels = [label for label, _ in runs]
    if len(set(labels)) != len(labels):  # two runs of the same folder name: tell them apart by their path
        labels = [str(path) for _, path in runs]
    metrics = [_read_json(path / "metrics.json", "metrics") for _, path in runs]
    histories = [_read_json(path / "history.json", "history") if (path / "history.json").is_file() else []
                 for _, path in runs]
    html = render_page("compare.html.j2", title=f"{len(runs)} runs side by side",
                       subtitle=" · ".join(str(p) for p in paths), runs=labels, rows=_rows(metrics),
                       curves=_overlaid_curves(labels, histories),
                       warnings=[(label, m["warning"]) for label, m in zip(labels, metrics, strict=True)
                                 if m.get("warning")])
    return atomic_write(target, html)
