"""Cross-validation of the ``ucr`` recipe's MiniRocket member, reusing finished single-model fold runs.

``python -m benchmarks.ucr_cv OUT --name NAME --set trainer.ensemble_models=null ...`` leaves one LSTM-FCN run
per fold of each set's TRAIN split (the archive's TEST split is never read). For each of those runs this script
rebuilds the run's own split (same seed: the same training part and validation part), fits ``minirocket`` on the
training part and on the whole fold's training data (``fit_on_validation``), and scores on the held-out fold the
run alone, MiniRocket alone and the average of their probabilities: what ``trainer.ensemble_models: [model,
minirocket]`` gives, without training the LSTM-FCN member again. It also scores weighted and geometric averages
and, with ``--seeds K``, MiniRockets of several seeds (the alternatives the recipe was compared with).

Usage:
    python -m benchmarks.ucr_cv_minirocket OUT/runs/NAME [OUT/runs/OTHER ...] [--json PATH] [--seeds K]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["score_fold"]


#: weights of the LSTM-FCN run in a weighted average with MiniRocket (0.5 is the recipe's plain average)
WEIGHTS = (0.2, 0.3, 0.4, 0.6, 0.7, 0.8)


def score_fold(run: Path, seeds: int = 1) -> dict[str, int]:
    """Held-out correct counts on one fold run.

    Keys: ``n``; ``run`` (the LSTM-FCN run alone); ``minirocket_{train,all}`` and ``ensemble_{train,all}``
    (MiniRocket fitted on the run's training part or on the whole fold, alone and averaged with the run); with
    the whole-fold MiniRocket also ``weighted_W`` (``W`` times the run's probabilities plus ``1 - W`` times
    MiniRocket's) and ``geometric`` (log-probabilities averaged); with ``seeds > 1`` also
    ``minirocket_seeds{k}`` and ``ensemble_seeds{k}`` (MiniRockets of seeds ``0 .. k-1`` averaged first).
    """
    from cnnlstm.engine.data import RecipeData
    from cnnlstm.engine.fit import rebuild_run, stack_series
    from cnnlstm.models import create_model

    config, bundle, _, task = rebuild_run(run)
    data = RecipeData.from_section(bundle, config["data"], seed=config["seed"], stratify=True)

    def probs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths, y = stack_series(data, data.test_set)
        with torch.no_grad():
            return model.eval()(x=x, lengths=lengths).float().softmax(-1), y

    def minirocket(subset: object, seed: int = 0) -> torch.Tensor:
        model = create_model("minirocket", seed=seed, **bundle.info.model_kwargs)
        model.fit_data(*stack_series(data, subset))
        return probs(model)[0]

    def correct(p: torch.Tensor) -> int:
        return int((p.argmax(1) == y).sum())

    ours, y = probs(task.model)
    out = {"n": len(y), "run": correct(ours)}
    for tag, subset in (("train", data.train_set), ("all", data.whole_train_set())):
        theirs = minirocket(subset)
        out[f"minirocket_{tag}"] = correct(theirs)
        out[f"ensemble_{tag}"] = correct(ours + theirs)
    for w in WEIGHTS:
        out[f"weighted_{w}"] = correct(w * ours + (1 - w) * theirs)
    out["geometric"] = correct(ours.clamp_min(1e-9).log() + theirs.clamp_min(1e-9).log())
    pooled = theirs
    for k in range(2, seeds + 1):
        pooled = pooled + minirocket(data.whole_train_set(), seed=k - 1)
        out[f"minirocket_seeds{k}"] = correct(pooled)
        out[f"ensemble_seeds{k}"] = correct(ours + pooled / k)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="folders of fold runs (SET_FOLD sub-folders)")
    p.add_argument("--json", type=Path, help="also write the per-fold and per-set counts here")
    p.add_argument("--seeds", type=int, default=1, help="also score MiniRockets of 2 .. SEEDS seeds averaged")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    folds: dict[str, dict[str, int]] = {}
    for root in args.runs:
        for run in sorted(d for d in root.iterdir() if (d / "metrics.json").is_file()):
            folds[run.name] = score_fold(run, args.seeds)
            print(run.name, folds[run.name], flush=True)
    sets: dict[str, dict[str, Any]] = {}
    for name, counts in folds.items():
        total = sets.setdefault(name.rsplit("_", 1)[0], {k: 0 for k in counts})
        for key, value in counts.items():
            total[key] += value
    errors = {key: sum(s["n"] - s[key] for s in sets.values()) for key in next(iter(sets.values())) if key != "n"}
    print("held-out errors over", sum(s["n"] for s in sets.values()), "series:", errors)
    if args.json:
        args.json.write_text(json.dumps({"folds": folds, "sets": sets, "errors": errors}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
