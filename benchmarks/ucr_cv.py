"""Cross-validation inside a UCR/UEA TRAIN split: how a series recipe (or a change to it) is chosen.

Each named set's TRAIN split is cut into ``--folds`` stratified folds (seeded). For fold k the other folds are
written as the training split of an ``.npz`` and fold k as its test split; ``cnnlstm fit`` then runs the recipe
on it (carving its own validation split from the training part, which picks the checkpoint) and scores fold k.
The archive's TEST split is never read, so a setting chosen here has not seen it. The mean held-out accuracy
per set, with each fold's, goes to the JSON record; variants (``--set`` overrides) are compared on the same
folds. Runs go ``--jobs`` at a time, each in its own process with one torch thread. The ``ucr`` recipe is an
ensemble (its LSTM-FCN model section and MiniRocket); ``--set trainer.ensemble_models=null`` cross-validates the
LSTM-FCN alone, and ``python -m benchmarks.ucr_cv_minirocket`` adds the MiniRocket member to such runs afterwards.

Usage:
    python -m benchmarks.ucr_cv OUT --data GunPoint ItalyPowerDemand BasicMotions JapaneseVowels \\
        [--recipe ucr] [--folds 5] [--jobs 2] [--name base] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_folds", "run_cv"]


def write_folds(name: str, out: Path, folds: int, seed: int = 0) -> list[Path]:
    """Write ``folds`` ``.npz`` files for set ``name``: each holds the other folds as train, one fold as test.

    Series keep their own lengths (zero-padded with ``lengths_train``/``lengths_test``), raw as the archive has
    them: the recipe's ``data.options.normalize`` applies training statistics per fold.
    """
    from sklearn.model_selection import StratifiedKFold

    from cnnlstm.data import load_dataset

    bundle = load_dataset(f"ucr:{name}")  # no normalisation: the recipe normalises per fold
    xs = [np.asarray(bundle.train[i]["x"], dtype=np.float32) for i in range(len(bundle.train))]  # (T_i, F)
    labels = [bundle.info.class_names[int(bundle.train[i]["y"])] for i in range(len(bundle.train))]
    y = np.array(labels)
    longest = max(len(s) for s in xs)
    padded = np.zeros((len(xs), longest, xs[0].shape[1]), dtype=np.float32)  # (N, T_max, F)
    for i, s in enumerate(xs):
        padded[i, : len(s)] = s
    lengths = np.array([len(s) for s in xs])
    paths = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (train_idx, test_idx) in enumerate(splitter.split(padded, y)):
        path = out / f"{name}_fold{k}.npz"
        np.savez(path, X_train=padded[train_idx], y_train=y[train_idx], lengths_train=lengths[train_idx],
                 X_test=padded[test_idx], y_test=y[test_idx], lengths_test=lengths[test_idx])
        paths.append(path)
    return paths


def _fit(recipe: str, data: Path, run: Path, overrides: list[str]) -> dict[str, Any]:
    if not (run / "metrics.json").is_file():
        command = [sys.executable, "-m", "cnnlstm", "fit", "--recipe", recipe, "--data", f"npz:{data}", "--out",
                   str(run), "--set", "trainer.enable_progress_bar=false", *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"acc": metrics["test/acc"], "best_epoch": metrics.get("best_epoch"), "fit_s": metrics.get("fit_seconds")}


def run_cv(out: Path, names: list[str], *, recipe: str, folds: int, jobs: int, variant: str,
           overrides: list[str]) -> dict[str, Any]:
    """Every fold of every set for one variant; finished runs are reused (``OUT/runs/VARIANT/...``)."""
    data_dir = out / "folds"
    data_dir.mkdir(parents=True, exist_ok=True)
    tasks = []
    for name in names:
        paths = sorted(data_dir.glob(f"{name}_fold*.npz")) or write_folds(name, data_dir, folds)
        tasks += [(name, k, p) for k, p in enumerate(paths)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on its own fit process
        results = list(pool.map(lambda t: _fit(recipe, t[2], out / "runs" / variant / f"{t[0]}_{t[1]}", overrides),
                                tasks))
    record: dict[str, Any] = {"variant": variant, "recipe": recipe, "overrides": overrides, "folds": folds, "sets": {}}
    for (name, _k, _path), result in zip(tasks, results, strict=True):
        record["sets"].setdefault(name, {"folds": []})["folds"].append(result)
    for entry in record["sets"].values():
        entry["mean_acc"] = round(statistics.fmean(f["acc"] for f in entry["folds"]), 4)
        entry["median_best_epoch"] = statistics.median(f["best_epoch"] or 0 for f in entry["folds"])
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--data", nargs="+", required=True, help="UCR/UEA set names (aeon's, or downloaded)")
    p.add_argument("--recipe", default="ucr")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--name", default="base", help="the variant's name (its runs' folder)")
    p.add_argument("--set", nargs="+", action="extend", default=[], dest="overrides")
    args = p.parse_args(argv)
    record = run_cv(args.out, args.data, recipe=args.recipe, folds=args.folds, jobs=args.jobs, variant=args.name,
                    overrides=args.overrides)
    path = args.out / f"cv_{args.name}.json"
    path.write_text(json.dumps(record, indent=1))
    print(json.dumps({n: e["mean_acc"] for n, e in record["sets"].items()}), "->", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
