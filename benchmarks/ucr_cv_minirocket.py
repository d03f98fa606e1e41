"""Cross-validation of the ``ucr`` recipe's MiniRocket member, reusing finished single-model fold runs.

``python -m benchmarks.ucr_cv OUT --name NAME --set trainer.ensemble_models=null ...`` leaves one LSTM-FCN run
per fold of each set's TRAIN split (the archive's TEST split is never read). For each of those runs this script
rebuilds the run's own split (same seed: the same training part and validation part), fits ``minirocket`` on the
training part and on the whole fold's training data (``fit_on_validation``), and scores on the held-out fold the
run alone, MiniRocket alone and the average of their probabilities: what ``trainer.ensemble_models: [model,
minirocket]`` gives, without training the LSTM-FCN member again.

Usage:
    python -m benchmarks.ucr_cv_minirocket OUT/runs/NAME [OUT/runs/OTHER ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["score_fold"]


def score_fold(run: Path) -> dict[str, int]:
    """Held-out correct counts on one fold run: ``n``, ``run``, ``minirocket_{train,all}``, ``ensemble_{train,all}``."""
    from cnnlstm.engine.data import RecipeData
    from cnnlstm.engine.fit import rebuild_run, stack_series
    from cnnlstm.models import create_model

    config, bundle, _, task = rebuild_run(run)
    data = RecipeData.from_section(bundle, config["data"], seed=config["seed"], stratify=True)

    def probs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths, y = stack_series(data, data.test_set)
        with torch.no_grad():
            return model.eval()(x=x, lengths=lengths).float().softmax(-1), y

    ours, y = probs(task.model)
    out = {"n": len(y), "run": int((ours.argmax(1) == y).sum())}
    for tag, subset in (("train", data.train_set), ("all", data.whole_train_set())):
        model = create_model("minirocket", **bundle.info.model_kwargs)
        model.fit_data(*stack_series(data, subset))
        theirs, _ = probs(model)
        out[f"minirocket_{tag}"] = int((theirs.argmax(1) == y).sum())
        out[f"ensemble_{tag}"] = int(((ours + theirs).argmax(1) == y).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="folders of fold runs (SET_FOLD sub-folders)")
    p.add_argument("--json", type=Path, help="also write the per-fold and per-set counts here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    folds: dict[str, dict[str, int]] = {}
    for root in args.runs:
        for run in sorted(d for d in root.iterdir() if (d / "metrics.json").is_file()):
            folds[run.name] = score_fold(run)
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
