"""Time-series accuracy: one default recipe on every dataset, beside MiniRocket and the published numbers.

The recipe is the same for every dataset (no per-dataset tuning): ``ucr``, the default for any UCR/UEA set
(LSTM-FCN at the paper's widths, a long cosine schedule, early stopping and checkpoint choice on a validation
split carved from train; its settings were chosen by cross-validation inside the training splits, see the
recipe's comments). Each dataset runs ``seeds`` times; MiniRocket runs on the same test split with the same
seeds in the same process, so fit-time ratios are side by side. The shuffle study runs the model again with
the paper's dimension shuffle (``model.shuffle=true``), so its default can be decided on data.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.minirocket import minirocket_runs
from benchmarks.published import METHODS, best_published, published_for
from benchmarks.runs import fit_seeds, mean_std, summarize

__all__ = ["DEFAULT_RECIPE", "DEFAULT_DATASETS", "TARGET_GAP", "dataset_name", "run_accuracy", "target_check",
           "accuracy_markdown"]

DEFAULT_RECIPE = "ucr"
DEFAULT_DATASETS = ("ucr:GunPoint", "ucr:ItalyPowerDemand", "ucr:BasicMotions", "ucr:JapaneseVowels")
#: the target allows our mean to sit at most this far below the best published accuracy on each dataset
TARGET_GAP = 0.01


def dataset_name(spec: str) -> str:
    """``"ucr:GunPoint" -> "GunPoint"``; other specs keep everything after the prefix.

    Example:
        >>> dataset_name("ucr:GunPoint")
        'GunPoint'
    """
    return spec.split(":", 1)[-1]


def _longest(bundle: Any) -> int:
    # The shuffled LSTM reads each whole series as one feature vector, so it is built for the longest series of
    # either split: a shape fixed before training, like MiniRocket's padding; no test label or score is used.
    parts = (bundle.train, bundle.test)
    return max(int(part[i]["x"].shape[0]) for part in parts for i in range(len(part)))


def run_accuracy(specs: list[str], seeds: list[int], *, out: Path, recipe: str = DEFAULT_RECIPE,
                 overrides: list[str] | None = None, variants: tuple[str, ...] | list[str] = ("default", "shuffle"),
                 minirocket: bool = True, reuse: bool = False, train: bool = True,
                 log: Any = print) -> dict[str, Any]:
    """Run our recipe (and its shuffle variant) and MiniRocket on each dataset; collect published numbers.

    Args:
        specs: dataset specs, e.g. ``["ucr:GunPoint"]`` (any UCR/UEA name aeon can load).
        seeds: seeds per method.
        out: directory for the run directories.
        recipe: the one recipe used for every dataset.
        overrides: recipe overrides for every run (e.g. ``["trainer.max_epochs=40"]``).
        variants: ``"default"`` runs the recipe as is, ``"shuffle"`` with ``model.shuffle=true`` (the paper's
            dimension shuffle).
        minirocket: also run aeon's MiniRocket.
        reuse: take finished runs with exactly the same config from ``out`` instead of training them again.
        train: ``False`` only collects finished runs (a table of what an interrupted benchmark measured).
        log: called with one progress line per finished method and dataset.

    Returns:
        ``{"recipe", "overrides", "seeds", "datasets": {name: {"ours", "ours_shuffle", "minirocket",
        "published"}}}`` where each method holds ``runs``, ``mean``, ``std`` and ``fit_seconds_median``.

    Example:
        >>> res = run_accuracy(["ucr:GunPoint"], [0], out=Path("runs/bench"))  # doctest: +SKIP
    """
    from cnnlstm.data import load_dataset

    overrides = list(overrides or [])
    results: dict[str, Any] = {"recipe": recipe, "overrides": overrides, "seeds": seeds, "datasets": {}}
    for spec in specs:
        name = dataset_name(spec)
        bundle = load_dataset(spec)
        entry: dict[str, Any] = {"spec": spec, "train": len(bundle.train), "test": len(bundle.test)}
        start = time.perf_counter()
        if "default" in variants:
            entry["ours"] = summarize(fit_seeds(recipe, seeds, data=spec, overrides=overrides,
                                                out=out / name / "ours", reuse=reuse, train=train))
            log(f"{name}: cnnlstm {_cell(entry['ours'], len(seeds))} ({time.perf_counter() - start:.0f} s)")
        if "shuffle" in variants:
            start = time.perf_counter()
            sets = [*overrides, "model.shuffle=true", f"model.seq_len={_longest(bundle)}"]
            entry["ours_shuffle"] = summarize(fit_seeds(recipe, seeds, data=spec, overrides=sets,
                                                        out=out / name / "shuffle", reuse=reuse, train=train))
            log(f"{name}: cnnlstm shuffle=true {_cell(entry['ours_shuffle'], len(seeds))} "
                f"({time.perf_counter() - start:.0f} s)")
        if minirocket:
            entry["minirocket"] = summarize(minirocket_runs(bundle, seeds))
            log(f"{name}: MiniRocket {_cell(entry['minirocket'], len(seeds))}")
        entry["published"] = {m: {"accuracy": p.accuracy, "optimistic": p.optimistic, "note": p.note}
                              for m, p in published_for(name).items()}
        entry["best_published"] = best_published(name)
        results["datasets"][name] = entry
    results["means"] = {
        method: round(statistics.fmean(d[method]["mean"] for d in results["datasets"].values()), 4)
        for method in ("ours", "ours_shuffle", "minirocket")
        # a mean over datasets only when every dataset has the method's full set of seeds
        if results["datasets"] and all(len(d.get(method, {}).get("runs", [])) == len(seeds)
                                       for d in results["datasets"].values())
    }
    results["target"] = target_check(results)
    return results


def target_check(results: dict[str, Any]) -> dict[str, Any]:
    """Whether our recipe meets the accuracy target: mean at or above MiniRocket's, each set near the best.

    "Near" is within :data:`TARGET_GAP` of the best published accuracy (results chosen on test left out). A
    dataset without a published number, or a method not measured on every seed, leaves its part undecided
    (``None``).

    Args:
        results: the record of :func:`run_accuracy` (``datasets`` and ``means``).

    Returns:
        ``{"mean_vs_minirocket": ours - MiniRocket or None, "per_dataset": {name: ours - best or None},
        "met": True / False / None}``.

    Example:
        >>> target_check({"datasets": {"A": {"ours": {"mean": 0.99}, "best_published": 1.0}},
        ...               "means": {"ours": 0.99, "minirocket": 0.98}})["met"]
        True
    """
    means = results.get("means", {})
    vs_minirocket = (round(means["ours"] - means["minirocket"], 4)
                     if "ours" in means and "minirocket" in means else None)
    gaps: dict[str, float | None] = {}
    for name, d in results["datasets"].items():
        ours, best = (d.get("ours") or {}).get("mean"), d.get("best_published")
        gaps[name] = None if ours is None or best is None else round(ours - best, 4)
    parts = [vs_minirocket is None or vs_minirocket >= 0, *(g is None or g >= -TARGET_GAP for g in gaps.values())]
    undecided = vs_minirocket is None or any(g is None for g in gaps.values())
    met = False if not all(parts) else (None if undecided else True)
    return {"mean_vs_minirocket": vs_minirocket, "per_dataset": gaps, "met": met}


def _cell(summary: dict[str, Any] | None, n_seeds: int) -> str:
    if not summary or summary["mean"] is None:
        return "not measured"
    n = len(summary["runs"])
    return mean_std(summary) + ("" if n == n_seeds else f" (n={n} of {n_seeds})")


def _seconds(summary: dict[str, Any] | None) -> str:
    return "—" if not summary or summary.get("fit_seconds_median") is None else f"{summary['fit_seconds_median']:.1f}"


def accuracy_markdown(results: dict[str, Any]) -> str:
    """The accuracy results as Markdown: ours, shuffle variant, MiniRocket, published, gap to best published.

    Example:
        >>> print(accuracy_markdown(results))  # doctest: +SKIP
    """
    has_shuffle = any("ours_shuffle" in d for d in results["datasets"].values())
    n = len(results["seeds"])
    head = ["dataset", "cnnlstm (mean ± std)", "fit s"]
    if has_shuffle:
        head += ["shuffle=true", "fit s"]
    head += ["MiniRocket", "fit s", *METHODS, "best published", "cnnlstm − best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, d in results["datasets"].items():
        row = [f"{name} ({d['train']}/{d['test']})", _cell(d.get("ours"), n), _seconds(d.get("ours"))]
        if has_shuffle:
            row += [_cell(d.get("ours_shuffle"), n), _seconds(d.get("ours_shuffle"))]
        row += [_cell(d.get("minirocket"), n), _seconds(d.get("minirocket"))]
        for method in METHODS:
            p = d["published"].get(method)
            row.append("—" if p is None else f"{p['accuracy']:.3f}{'†' if p['optimistic'] else ''}")
        best = d.get("best_published")
        ours = d.get("ours")
        row += ["—" if best is None else f"{best:.3f}",
                "—" if best is None or not ours or ours["mean"] is None else f"{ours['mean'] - best:+.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    means = results.get("means", {})
    if means:
        def mean(key: str) -> str:
            return f"{means[key]:.3f}" if key in means else "—"

        row = ["**mean**", f"**{mean('ours')}**", ""]
        if has_shuffle:
            row += [mean("ours_shuffle"), ""]
        row += [mean("minirocket"), ""]
        row += [""] * (len(METHODS) + 2)
        lines.append("| " + " | ".join(row) + " |")
    target = results.get("target") or target_check(results)
    verdict = {True: "met", False: "missed", None: "undecided"}[target["met"]]
    short = [f"{name} {gap:+.3f}" for name, gap in target["per_dataset"].items()
             if gap is not None and gap < -TARGET_GAP]
    vs = target["mean_vs_minirocket"]
    lines += ["", f"Target (mean ≥ MiniRocket's, every set within {TARGET_GAP:.2f} of the best published): "
              f"**{verdict}**; mean − MiniRocket's: {'—' if vs is None else f'{vs:+.3f}'}"
              + (f"; short of best − {TARGET_GAP:.2f} on: {', '.join(short)}" if short else "") + "."]
    return "\n".join(lines)
