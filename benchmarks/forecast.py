"""Suite ``forecast``: the ConvLSTM encoder-forecaster on moving digits against the copy-last-frame baseline.

Each seed trains the shipped ``moving_digits`` recipe; its best-on-validation weights are then scored here on
the run's test clips, and so is the copy-last-frame forecast (repeat the last input frame for every future
step) on the very same clips: MSE, MAE and SSIM over all future frames, and the MSE at each step ahead. A
forecaster that does not beat copy-last has learned nothing about motion. The engine's own ``test/mse`` and
``test/baseline_mse`` are kept beside the suite's figures as a cross-check (they must agree).

Example:
    $ python -m benchmarks forecast --forecast-seeds 3
    $ python -m benchmarks forecast --forecast-set trainer.max_epochs=2 --forecast-accelerator gpu
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError

from benchmarks.runs import fit_seeds, mean_std
from cnnlstm.tasks.forecasting import frame_ssim, ssim_sigma

__all__ = ["HELP", "RECIPE", "add_arguments", "score_forecasts", "copy_last", "evaluate_run_forecasts",
           "run_forecast", "run", "markdown"]

HELP = "ConvLSTM next-frame prediction on moving digits: MSE, MAE, SSIM against the copy-last-frame baseline"
RECIPE = "moving_digits"
#: per-run figures read from the engine's ``metrics.json``
ENGINE_METRICS = {"engine_test_mse": "test/mse", "engine_test_baseline_mse": "test/baseline_mse",
                  "engine_test_ssim": "test/ssim", "val_mse": "val/mse", "val_baseline_mse": "val/baseline_mse"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the suite's ``--forecast-*`` options to ``parser``.

    Args:
        parser: the ``python -m benchmarks forecast`` (or ``all``) parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p)
        >>> p.parse_args(["--forecast-seeds", "2"]).forecast_seeds
        2
    """
    parser.add_argument("--forecast-seeds", type=int, default=3, help="runs of the recipe (seeds 0..N-1)")
    parser.add_argument("--forecast-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run, e.g. trainer.max_epochs=2 data.options.n_train=64")
    parser.add_argument("--forecast-accelerator", choices=("cpu", "gpu", "auto"), default="auto",
                        help="trainer.accelerator of every run (the suite's own scoring follows it)")


def copy_last(x: Tensor, horizon: int) -> Tensor:
    """The copy-last-frame forecast: the last input frame repeated ``horizon`` times.

    Args:
        x: input frames.
        horizon: future frames ``K``.

    Shape:
        - x: ``(B, T, C, H, W)``; output: ``(B, K, C, H, W)``.

    Example:
        >>> copy_last(torch.rand(2, 4, 1, 8, 8), 3).shape
        torch.Size([2, 3, 1, 8, 8])
    """
    return x[:, -1:].expand(-1, horizon, *x.shape[2:])  # (B, K, C, H, W)


def ssim_kernel(height: int, width: int) -> int:
    """The SSIM window side the forecasting task uses: 11, or the largest odd side that fits the frame."""
    side = min(height, width)
    return min(11, side if side % 2 else side - 1)


@torch.no_grad()
def score_forecasts(predict: Callable[[Tensor], Tensor], dataset: Dataset, collate: Callable, *,
                    data_range: float = 1.0, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """MSE, MAE and SSIM of a forecaster over a whole split, plus the MSE at each step ahead.

    SSIM uses the forecasting task's settings (Gaussian window of :func:`ssim_kernel`, sigma scaled from 1.5
    at 11), averaged over every predicted frame, so the figures are comparable with the engine's ``test/ssim``.

    Args:
        predict: frames ``(B, T, C, H, W)`` -> forecasts ``(B, K, C, H, W)`` (a model, or :func:`copy_last`).
        dataset: samples with ``x`` (input frames) and ``y`` (future frames).
        collate: the bundle's collate function.
        data_range: pixel value range, for SSIM.
        batch_size: clips per batch.
        device: where ``predict`` runs.

    Returns:
        ``{"mse", "mae", "ssim", "mse_by_step"}`` (floats; ``mse_by_step`` a list of ``K``).

    Shape:
        - dataset ``x``: ``(T, C, H, W)``; ``y``: ``(K, C, H, W)``.

    Example:
        >>> scores = score_forecasts(lambda x: copy_last(x, 5), bundle.test, bundle.collate_fn)  # doctest: +SKIP
    """
    mse, mae, ssim = MeanSquaredError().to(device), MeanAbsoluteError().to(device), MeanMetric().to(device)
    sigma = None
    step_sq: Tensor | None = None
    count = 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        x, y = batch["x"].to(device).float(), batch["y"].to(device).float()  # (B, T, C, H, W), (B, K, C, H, W)
        pred = predict(x).float().contiguous()  # (B, K, C, H, W); copy_last gives an expanded view
        if sigma is None:
            sigma = ssim_sigma(ssim_kernel(*y.shape[-2:]))
        mse.update(pred, y)
        mae.update(pred, y)
        ssim.update(frame_ssim(pred.flatten(0, 1), y.flatten(0, 1), data_range=data_range, sigma=sigma))  # (B*K,)
        sq = (pred - y).pow(2).flatten(2).sum(dim=(0, 2))  # (K,) squared error per step ahead
        step_sq = sq if step_sq is None else step_sq + sq
        count += y.shape[0] * y[0, 0].numel()
    if sigma is None:
        raise ValueError("score_forecasts got an empty dataset")
    return {"mse": float(mse.compute()), "mae": float(mae.compute()), "ssim": float(ssim.compute()),
            "mse_by_step": [float(v) / count for v in step_sq]}


def evaluate_run_forecasts(run_dir: Path, *, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Score a finished forecasting run's best weights and the copy-last baseline on the run's test clips.

    The test clips are rebuilt from the run's ``config.yaml`` (data spec, options and seed), exactly as the
    run saw them.

    Args:
        run_dir: a run directory written by :func:`cnnlstm.engine.fit.fit`.
        device: where the model runs.

    Returns:
        ``{"model": scores, "copy_last": scores}``, each as :func:`score_forecasts` returns.

    Example:
        >>> evaluate_run_forecasts(Path("runs/bench/forecast/seed0"))["copy_last"]["mse"]  # doctest: +SKIP
    """
    from cnnlstm.engine.data import load_bundle
    from cnnlstm.engine.rundir import load_weights, read_config, weights_path

    config = read_config(run_dir)
    bundle = load_bundle(config["data"], seed=config["seed"])
    model = load_weights(weights_path(run_dir)).eval().to(device)
    data_range = float(bundle.info.extras.get("data_range", 1.0))
    horizon = int(bundle.test[0]["y"].shape[0])
    score = dict(dataset=bundle.test, collate=bundle.collate_fn, data_range=data_range, device=device)
    return {"model": score_forecasts(lambda x: model(x=x), **score),
            "copy_last": score_forecasts(lambda x: copy_last(x, horizon), **score)}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def run_forecast(seeds: list[int], *, out: Path, overrides: list[str] | None = None, accelerator: str = "auto",
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the moving-digits forecaster once per seed and score it beside copy-last on the same test clips.

    Args:
        seeds: one run per seed; the seed draws the clips (train and test; the digit images' train/test
            partition is fixed), the validation carve, the initialisation and the training order.
        out: parent directory; run ``s`` goes to ``out/seed{s}``.
        overrides: ``key=value`` recipe overrides for every run.
        accelerator: ``trainer.accelerator``; the suite scores on CUDA when it is ``gpu`` (or ``auto`` and a
            GPU exists).
        log: called with one line per finished run.

    Returns:
        ``{"recipe", "overrides", "seeds", "accelerator", "data", "model", "epochs", "convlstm", "copy_last",
        "runs", "params", "fit_seconds_median", "target_met"}``; ``convlstm`` and ``copy_last`` hold ``mse``,
        ``mae``, ``ssim`` (each ``mean``, ``std`` over seeds) and ``mse_by_step`` (mean over seeds per step).

    Example:
        >>> rec = run_forecast([0], out=Path("runs/bench/forecast"))  # doctest: +SKIP
        >>> rec["convlstm"]["mse"]["mean"] < rec["copy_last"]["mse"]["mean"]  # doctest: +SKIP
        True
    """
    from cnnlstm.engine import resolve_config

    overrides = [f"trainer.accelerator={accelerator}", *(overrides or [])]
    config = resolve_config(RECIPE, overrides=overrides)  # fails fast on a bad override, before any training
    device = "cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    runs = []
    for seed in seeds:
        record = fit_seeds(RECIPE, [seed], data=None, overrides=overrides, out=out)[0]
        run_dir = out / f"seed{seed}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        record.update({key: float(metrics[name]) for key, name in ENGINE_METRICS.items() if name in metrics})
        scores = evaluate_run_forecasts(run_dir, device=device)
        for who, prefix in (("model", "test"), ("copy_last", "baseline")):
            record.update({f"{prefix}_{k}": v for k, v in scores[who].items()})
        runs.append(record)
        log(f"forecast: seed {seed}: MSE {record['test_mse']:.4f} vs copy-last {record['baseline_mse']:.4f}, "
            f"SSIM {record['test_ssim']:.3f} vs {record['baseline_ssim']:.3f} ({record.get('fit_seconds', 0):.0f} s)")

    def side(prefix: str) -> dict[str, Any]:
        steps = zip(*(r[f"{prefix}_mse_by_step"] for r in runs), strict=True)
        return {**{k: _mean_std([r[f"{prefix}_{k}"] for r in runs]) for k in ("mse", "mae", "ssim")},
                "mse_by_step": [statistics.fmean(s) for s in steps]}

    data = config["data"]
    times = [r["fit_seconds"] for r in runs if "fit_seconds" in r]
    return {
        "recipe": RECIPE, "overrides": overrides, "seeds": list(seeds), "accelerator": accelerator,
        "data": {"spec": data["spec"], "options": data.get("options", {}), "val_fraction": data["val_fraction"]},
        "model": {k: v for k, v in config["model"].items()},
        "epochs": config["trainer"]["max_epochs"],
        "convlstm": side("test"), "copy_last": side("baseline"), "runs": runs,
        "params": runs[0].get("params") if runs else None,
        "fit_seconds_median": statistics.median(times) if times else None,
        # every seed must beat copy-last on both error and structure, not just on average
        "target_met": bool(runs) and all(r["test_mse"] < r["baseline_mse"] and r["test_ssim"] > r["baseline_ssim"]
                                         for r in runs),
    }


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """The suite's entry point for ``python -m benchmarks forecast``.

    Args:
        args: parsed options (``--forecast-*`` and ``--runs``).
        log: progress printer.

    Returns:
        the record of :func:`run_forecast`.

    Example:
        >>> record = run(build_parser().parse_args(["forecast", "--forecast-seeds", "1"]), print)  # doctest: +SKIP
    """
    return run_forecast(list(range(args.forecast_seeds)), out=Path(args.runs) / "forecast",
                        overrides=list(args.forecast_set), accelerator=args.forecast_accelerator, log=log)


def markdown(record: dict[str, Any]) -> str:
    """The ConvLSTM vs copy-last table, then the MSE at each step ahead.

    Args:
        record: what :func:`run` returned.

    Returns:
        Markdown text.

    Example:
        >>> print(markdown(record))  # doctest: +SKIP
    """
    opts, model = record["data"]["options"], record["model"]
    m, b = record["convlstm"], record["copy_last"]

    def scores(side: dict[str, Any]) -> str:  # MSE | MAE | SSIM cells
        return " | ".join(mean_std(side[k], digits=d) for k, d in (("mse", 4), ("mae", 4), ("ssim", 3)))

    fit_s = "—" if record["fit_seconds_median"] is None else f"{record['fit_seconds_median']:.0f}"
    params = "—" if record["params"] is None else f"{record['params'] / 1e3:.0f}k"
    kwargs = ", ".join(f"{k}={v}" for k, v in model.items() if k != "name")
    lines = [
        f"Moving digits (`{record['recipe']}` recipe: {opts.get('n_train', '?')} training / "
        f"{opts.get('n_test', '?')} test clips, {record['epochs']} epochs max; `{model.get('name')}` {kwargs}; "
        f"seeds {', '.join(map(str, record['seeds']))}; test split, mean ± std over seeds).",
        "",
        "| forecast | MSE ↓ | MAE ↓ | SSIM ↑ | params | fit s (median) |",
        "|---|---|---|---|---|---|",
        f"| ConvLSTM encoder-forecaster | {scores(m)} | {params} | {fit_s} |",
        f"| copy last frame | {scores(b)} | 0 | 0 |",
        "",
        "| MSE at step ahead | " + " | ".join(str(k + 1) for k in range(len(m["mse_by_step"]))) + " |",
        "|---|" + "---|" * len(m["mse_by_step"]),
        "| ConvLSTM | " + " | ".join(f"{v:.4f}" for v in m["mse_by_step"]) + " |",
        "| copy last frame | " + " | ".join(f"{v:.4f}" for v in b["mse_by_step"]) + " |",
        "",
        f"Target (beat copy-last on MSE and SSIM in every seed): {'met' if record['target_met'] else 'not met'}; "
        f"MSE ratio {m['mse']['mean'] / b['mse']['mean']:.2f}x copy-last. Accelerator: {record['accelerator']}.",
    ]
    return "\n".join(lines)
