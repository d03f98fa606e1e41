"""Pattern 1 on ``builtin:digit_sequences``: what the LSTM adds over a frozen CNN, and what pretraining adds.

Three variants, each scored once on the same test split with the checkpoint or epoch validation chose:

- **frozen CNN -> LSTM**: the ``digit_sequences`` recipe as shipped (pretrain the CNN on single digits,
  freeze it, train a ``frame_lstm`` over sequences).
- **frozen CNN, mean-pooled, no LSTM**: the same pretrained CNN's frame features averaged over time, then a
  linear classifier. ``frame_lstm``'s ``pooling`` option pools the *LSTM's* outputs, so it always keeps the
  LSTM; this variant is built here from the saved encoder instead.
- **end to end from scratch**: the same recipe without the pretraining stage, every weight trained.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.runs import fit_seeds, mean_std, quiet, summarize

__all__ = ["RECIPE", "mean_pooled_runs", "run_digits", "digits_markdown"]

RECIPE = "digit_sequences"


@torch.no_grad()
def _pooled_features(encoder: nn.Module, dataset: Dataset, collate: Any) -> tuple[Tensor, Tensor]:
    feats, ys = [], []
    for batch in DataLoader(dataset, batch_size=256, collate_fn=collate):
        x = batch["x"]  # (B, T, C, H, W)
        B, T = x.shape[:2]
        z = encoder(x.flatten(0, 1)).view(B, T, -1)  # (B*T, D) -> (B, T, D)
        if "lengths" in batch:  # average over each sequence's own frames only
            keep = (torch.arange(T) < batch["lengths"][:, None]).to(z.dtype)  # (B, T)
            feats.append((z * keep[..., None]).sum(1) / keep.sum(1, keepdim=True))  # (B, D)
        else:
            feats.append(z.mean(1))  # (B, D)
        ys.append(batch["y"])
    return torch.cat(feats), torch.cat(ys)


def _train_linear(train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], num_classes: int, seed: int,
                  epochs: int = 300, lr: float = 3e-3) -> nn.Linear:
    """Full-batch Adam on a linear head; the epoch with the best validation accuracy is kept."""
    torch.manual_seed(seed)
    head = nn.Linear(train[0].shape[1], num_classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    best, best_state = -1.0, copy.deepcopy(head.state_dict())
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(head(train[0]), train[1]).backward()
        opt.step()
        with torch.no_grad():
            acc = float((head(val[0]).argmax(1) == val[1]).float().mean())
        if acc > best:
            best, best_state = acc, copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return head


def mean_pooled_runs(encoder_path: Path, config: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Mean-pooled frozen-CNN features + linear head, with the recipe's data, validation carve and seeds.

    Args:
        encoder_path: the pretrained encoder a ``digit_sequences`` run saved (``RUN/pretrain/encoder.safetensors``).
        config: that run's resolved recipe (data spec, options, validation fraction).
        seeds: one run per seed (data, validation carve and head initialisation).

    Returns:
        one ``{"seed", "test_acc", "val_acc"}`` record per seed.

    Example:
        >>> runs = mean_pooled_runs(Path("runs/d/seed0/pretrain/encoder.safetensors"), cfg, [0])  # doctest: +SKIP
    """
    from cnnlstm.data.splits import split_train_val
    from cnnlstm.encoders.saving import load_encoder
    from cnnlstm.engine.data import load_bundle

    encoder = load_encoder(encoder_path, freeze="all").eval()
    records = []
    for seed in seeds:
        bundle = load_bundle(config["data"], seed=seed)
        fit_set, val_set = split_train_val(bundle.train, config["data"]["val_fraction"], seed,
                                           stratify=bundle.info.targets)
        train = _pooled_features(encoder, fit_set, bundle.collate_fn)
        val = _pooled_features(encoder, val_set, bundle.collate_fn)
        test = _pooled_features(encoder, bundle.test, bundle.collate_fn)
        head = _train_linear(train, val, int(bundle.info.model_kwargs["num_classes"]), seed)
        with torch.no_grad():
            records.append({"seed": seed, "val_acc": float((head(val[0]).argmax(1) == val[1]).float().mean()),
                            "test_acc": float((head(test[0]).argmax(1) == test[1]).float().mean())})
    return records


def run_digits(seeds: list[int], *, out: Path, overrides: list[str] | None = None,
               log: Any = print) -> dict[str, Any]:
    """Run the three pattern-1 variants on ``builtin:digit_sequences``.

    Args:
        seeds: seeds per variant.
        out: directory for run directories.
        overrides: recipe overrides applied to every run (e.g. ``["trainer.max_epochs=2"]``).
        log: called with one line per finished variant.

    Returns:
        ``{"recipe", "overrides", "seeds", "variants": {name: summary}, "chance"}``.

    Example:
        >>> res = run_digits([0], out=Path("runs/bench/digits"))  # doctest: +SKIP
    """
    from cnnlstm.engine import resolve_config

    overrides = list(overrides or [])
    variants: dict[str, Any] = {}
    lstm_runs = fit_seeds(RECIPE, seeds, data=None, overrides=overrides, out=out / "frozen_lstm")
    variants["frozen CNN -> LSTM"] = summarize(lstm_runs)
    log(f"digits: frozen CNN -> LSTM {variants['frozen CNN -> LSTM']['mean']:.4f}")

    config = resolve_config(RECIPE, overrides=overrides)
    pooled: list[dict[str, Any]] = []
    with quiet():
        for seed in seeds:  # each seed's own pretrained encoder, so the two variants share their CNN
            cfg = {**config, "seed": seed}
            pooled += mean_pooled_runs(out / "frozen_lstm" / f"seed{seed}" / "pretrain" / "encoder.safetensors",
                                       cfg, [seed])
    variants["frozen CNN, mean-pooled, no LSTM"] = summarize(pooled)
    log(f"digits: mean-pooled {variants['frozen CNN, mean-pooled, no LSTM']['mean']:.4f}")

    scratch = {k: v for k, v in copy.deepcopy(config).items() if k != "pretrain"}
    scratch["model"]["freeze"] = "none"
    stage_two = [o for o in overrides if not o.startswith("pretrain.")]  # this variant has no pretraining stage
    scratch_runs = fit_seeds(scratch, seeds, data=None, overrides=stage_two, out=out / "scratch")
    variants["end to end from scratch"] = summarize(scratch_runs)
    log(f"digits: from scratch {variants['end to end from scratch']['mean']:.4f}")
    pretrain_acc = [r.get("pretrain_test_acc") for r in lstm_runs if r.get("pretrain_test_acc") is not None]
    return {"recipe": RECIPE, "overrides": overrides, "seeds": seeds, "variants": variants,
            "chance": 1.0 / float(config["data"].get("options", {}).get("length", 4) or 4),
            "pretrain_digit_acc": statistics.fmean(pretrain_acc) if pretrain_acc else None}


def digits_markdown(record: dict[str, Any]) -> str:
    """The digit-sequence variants as a Markdown table (test accuracy, mean ± std, median fit time).

    Example:
        >>> print(digits_markdown(record))  # doctest: +SKIP
    """
    lines = ["| variant | test accuracy (mean ± std) | best epoch | fit s (median) |", "|---|---|---|---|"]
    for name, s in record["variants"].items():
        epochs = [r["best_epoch"] for r in s["runs"] if "best_epoch" in r]
        fit_s = "—" if s.get("fit_seconds_median") is None else f"{s['fit_seconds_median']:.1f}"
        lines.append(f"| {name} | {mean_std(s)} | "
                     f"{'/'.join(map(str, epochs)) or '—'} | {fit_s} |")
    lines.append(f"| chance (1/T) | {record['chance']:.3f} | | |")
    frozen = record["variants"].get("frozen CNN -> LSTM", {}).get("runs", [])
    stage_one = [r["pretrain_fit_seconds"] for r in frozen if "pretrain_fit_seconds" in r]
    if record.get("pretrain_digit_acc") is not None and stage_one:
        lines += ["", f"Stage one (CNN + linear head on single digits, shared by both frozen variants): digit test "
                  f"accuracy {record['pretrain_digit_acc']:.3f}, {statistics.median(stage_one):.0f} s, not included "
                  "in the fit times above."]
    return "\n".join(lines)
