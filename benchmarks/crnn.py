"""``python -m benchmarks crnn``: CRNN + CTC reading generated 4-character captcha strings.

The ``captcha_crnn`` recipe is trained once per seed with the issue's test set (2,000 held-out images of
4-character strings, :data:`BENCH_SETS`) and scored once on test with the checkpoint validation chose: sequence
accuracy (the whole string right) and character error rate. The seed draws the data too (strings and renderings
of train and test), so the spread over seeds covers both initialisation and data.

For the record the same weights then read the test images again, outside Lightning, with best-path CTC decoding
and with prefix beam search (:meth:`cnnlstm.models.crnn.CRNN.decode`), timed per image. The greedy pass repeats
the trainer's test metric by an independent route, so the two must agree. Rendering the test images is timed
on its own, which gives the data-generation cost per image.

Example:
    $ python -m benchmarks crnn --crnn-seeds 3 --crnn-accelerator gpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.runs import fit_seeds, mean_std, summarize

__all__ = ["HELP", "RECIPE", "BENCH_SETS", "TARGET", "add_arguments", "bench_overrides", "compare_decoding",
           "crnn_seed", "crnn_record", "run_crnn", "run", "markdown"]

HELP = "CRNN + CTC on generated captcha text: sequence accuracy and CER on 2,000 held-out images"
RECIPE = "captcha_crnn"
#: the issue's test set: 2,000 held-out images of 4-character strings
BENCH_SETS = ("data.options.n_test=2000", "data.options.length=4")
#: the issue's target: test sequence accuracy on 4-character strings
TARGET = 0.95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, all prefixed ``--crnn-`` so ``python -m benchmarks all`` can hold every suite's options.

    Args:
        parser: the ``crnn`` (or ``all``) sub-parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p); p.parse_args(["--crnn-seeds", "3"]).crnn_seeds
        3
    """
    parser.add_argument("--crnn-seeds", type=int, default=1, help="runs of the captcha recipe (seeds 0..N-1)")
    parser.add_argument("--crnn-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every run, after the suite's own (n_test=2000, length=4)")
    parser.add_argument("--crnn-accelerator", choices=("cpu", "gpu", "auto"), default="auto",
                        help="trainer.accelerator of every run; the decoding comparison runs on the same device")
    parser.add_argument("--crnn-beam", type=int, default=8,
                        help="prefix beam size compared with best-path decoding (0 skips the comparison)")
    parser.add_argument("--crnn-reuse", action="store_true",
                        help="take finished runs with exactly the same config from --runs instead of retraining")


def bench_overrides(sets: list[str], accelerator: str) -> list[str]:
    """The recipe overrides of every run: the issue's test set, the accelerator, then the user's ``--crnn-set``.

    Example:
        >>> bench_overrides(["trainer.max_epochs=1"], "cpu")[-2:]
        ['trainer.accelerator=cpu', 'trainer.max_epochs=1']
    """
    return [*BENCH_SETS, f"trainer.accelerator={accelerator}", *sets]


def _device(accelerator: str) -> torch.device:
    """The torch device a Lightning ``accelerator`` setting trains on (one device)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    if accelerator == "mps":
        return torch.device("mps")
    return torch.device("cpu")


@torch.no_grad()
def compare_decoding(run_dir: Path, beam_sizes: list[int], *, batch_size: int = 256) -> dict[str, Any]:
    """Score a finished run's weights on its test split with best-path decoding and with prefix beam search.

    The run is rebuilt from its directory alone (``config.yaml``, best weights), the test images are rendered
    again from their seeds (timed apart: that is the generator's cost), and each decoder reads them all.

    Args:
        run_dir: a ``captcha_crnn`` run directory written by :func:`cnnlstm.engine.fit.fit`.
        beam_sizes: decoders to compare; 1 is best-path (greedy) decoding, more is CTC prefix beam search.
        batch_size: images per forward pass.

    Returns:
        ``{"render_ms_per_image", "test_images", "device", "decoders": {"greedy" | "beam N": {"acc", "cer",
        "ms_per_image"}}}``; ``ms_per_image`` includes the forward pass.

    Example:
        >>> compare_decoding(Path("runs/bench/crnn/seed0"), [1, 8])["decoders"]["beam 8"]["acc"]  # doctest: +SKIP
        0.97
    """
    from torchmetrics.text import CharErrorRate

    from cnnlstm.data.collate import pad_collate
    from cnnlstm.engine.data import load_bundle
    from cnnlstm.engine.rundir import load_weights, read_config, weights_path

    config = read_config(run_dir)
    device = _device(config["trainer"]["accelerator"])
    model = load_weights(weights_path(run_dir)).float().eval().to(device)
    bundle = load_bundle(config["data"], seed=config["seed"])
    charset, test = bundle.info.extras["charset"], bundle.test
    start = time.perf_counter()
    samples = [test[i] for i in range(len(test))]  # renders every image once (the dataset caches it)
    render_s = time.perf_counter() - start
    batches = [pad_collate(samples[i: i + batch_size]) for i in range(0, len(samples), batch_size)]
    truth = list(test.texts)

    model.decode(batches[0]["x"][:2].to(device))  # warm-up (kernel choice, allocator) before anything is timed
    decoders: dict[str, Any] = {}
    for beam in beam_sizes:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ids: list[list[int]] = []
        for batch in batches:
            widths = batch.get("widths")
            ids += model.decode(batch["x"].to(device), beam_size=beam,
                                widths=None if widths is None else widths.to(device))  # host lists: synced
        seconds = time.perf_counter() - start
        preds = ["".join(charset[k] for k in seq) for seq in ids]
        decoders["greedy" if beam == 1 else f"beam {beam}"] = {
            "acc": round(statistics.fmean(p == t for p, t in zip(preds, truth, strict=True)), 4),
            "cer": round(float(CharErrorRate()(preds, truth)), 4),
            "ms_per_image": round(1e3 * seconds / len(truth), 3),
        }
    return {"render_ms_per_image": round(1e3 * render_s / len(test), 3), "test_images": len(test),
            "device": str(device), "decoders": decoders}


def crnn_seed(seed: int, *, out: Path, overrides: list[str], beam_size: int = 8,
              reuse: bool = False) -> dict[str, Any]:
    """Train (or reuse) one seed's run and score it: the per-seed part of :func:`run_crnn`.

    Seeds are independent, so they may run in separate processes (or machines) and be gathered with
    :func:`crnn_record`.

    Args:
        seed: the run's seed.
        out: parent of the run directory (``out/seed{seed}``).
        overrides: the full recipe overrides (:func:`bench_overrides`).
        beam_size: prefix beam size of the decoding comparison; 0 skips it.
        reuse: take a finished run from ``out/seed{seed}`` when its config is exactly this one.

    Returns:
        the seed's record: :data:`benchmarks.runs.KEPT` metrics, ``test_cer``, ``val_cer``, split sizes and
        ``decoding`` (:func:`compare_decoding`).

    Example:
        >>> crnn_seed(0, out=Path("runs/bench/crnn"), overrides=bench_overrides([], "gpu"))  # doctest: +SKIP
    """
    (record,) = fit_seeds(RECIPE, [seed], data=None, overrides=overrides, out=out, reuse=reuse)
    metrics = json.loads((out / f"seed{seed}" / "metrics.json").read_text())
    record.update({k.replace("/", "_"): metrics[k] for k in ("test/cer", "val/cer", "train_samples", "val_samples",
                                                              "test_samples") if k in metrics})
    if beam_size > 0:
        record["decoding"] = compare_decoding(out / f"seed{seed}", [1, beam_size] if beam_size > 1 else [1])
    return record


def crnn_record(runs: list[dict[str, Any]], overrides: list[str]) -> dict[str, Any]:
    """The suite's record from per-seed records (:func:`crnn_seed`): summaries over seeds and the target check.

    Args:
        runs: one record per seed.
        overrides: the recipe overrides every run used.

    Returns:
        ``recipe``, ``overrides``, ``seeds``, ``settings``, ``runs``, ``test_acc``, ``test_cer``, ``val_acc``,
        ``val_cer`` (mean ± std summaries), ``decoding``, ``render_ms_per_image``, ``target``, ``target_met``.

    Example:
        >>> record = crnn_record([crnn_seed(0, out=out, overrides=sets)], sets)  # doctest: +SKIP
    """
    from cnnlstm.engine import resolve_config

    config = resolve_config(RECIPE, overrides=overrides)
    decoding: dict[str, Any] = {}
    for name in (runs[0].get("decoding", {}).get("decoders", {}) if runs else {}):
        per_seed = [r["decoding"]["decoders"][name] for r in runs]
        decoding[name] = {"acc": summarize(per_seed, "acc"), "cer": summarize(per_seed, "cer"),
                          "ms_per_image": statistics.median(d["ms_per_image"] for d in per_seed)}
    data, model = config["data"], config["model"]
    test_acc = summarize(runs, "test_acc")
    return {
        "recipe": RECIPE, "overrides": overrides, "seeds": [r["seed"] for r in runs],
        "settings": {"options": data["options"], "augment": data["augment"], "batch_size": data["batch_size"],
                     "val_fraction": data["val_fraction"], "widths": model.get("widths"),
                     "hidden_size": model.get("hidden_size"), "num_layers": model.get("num_layers"),
                     "lr": config["optim"]["lr"], "max_epochs": config["trainer"]["max_epochs"],
                     "precision": config["trainer"]["precision"]},
        "runs": runs,
        "test_acc": test_acc, "test_cer": summarize(runs, "test_cer"),
        "val_acc": summarize(runs, "val_acc"), "val_cer": summarize(runs, "val_cer"),
        "decoding": decoding,
        # The greedy pass re-reads the saved weights outside Lightning: it must repeat the trainer's test score.
        "greedy_vs_trainer_max_gap": max(abs(r["decoding"]["decoders"]["greedy"]["acc"] - r["test_acc"])
                                         for r in runs) if runs and "decoding" in runs[0] else None,
        "render_ms_per_image": statistics.median(r["decoding"]["render_ms_per_image"] for r in runs)
        if runs and "decoding" in runs[0] else None,
        "target": TARGET, "target_met": test_acc["mean"] is not None and test_acc["mean"] >= TARGET,
    }


def run_crnn(seeds: list[int], *, out: Path, sets: list[str] | None = None, accelerator: str = "auto",
             beam_size: int = 8, reuse: bool = False, log: Any = print) -> dict[str, Any]:
    """Train ``captcha_crnn`` once per seed on the issue's data and score it (see the module docs).

    Args:
        seeds: one run per seed (weights, training order, validation carve and the generated data).
        out: parent of the run directories (``out/seed{s}``).
        sets: recipe overrides applied after :data:`BENCH_SETS`.
        accelerator: ``trainer.accelerator`` of every run.
        beam_size: prefix beam size of the decoding comparison; 0 skips it.
        reuse: take a seed's finished run from ``out/seed{s}`` when its config is exactly this one.
        log: called with one line per finished seed.

    Returns:
        the record of :func:`crnn_record`.

    Example:
        >>> record = run_crnn([0], out=Path("runs/bench/crnn"), sets=["trainer.max_epochs=1"])  # doctest: +SKIP
    """
    overrides = bench_overrides(list(sets or []), accelerator)
    runs = []
    for seed in seeds:
        record = crnn_seed(seed, out=out, overrides=overrides, beam_size=beam_size, reuse=reuse)
        runs.append(record)
        log(f"crnn: seed {seed} test seq acc {record['test_acc']:.4f}, CER {record.get('test_cer', float('nan')):.4f}"
            f" (best epoch {record.get('best_epoch')}, {record.get('fit_seconds', 0):.0f} s)")
    return crnn_record(runs, overrides)


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """The ``python -m benchmarks crnn`` entry point (see :data:`benchmarks.cli.SUITES`).

    Example:
        >>> record = run(build_parser().parse_args(["crnn"]), print)  # doctest: +SKIP
    """
    return run_crnn(list(range(args.crnn_seeds)), out=Path(args.runs) / "crnn", sets=args.crnn_set,
                    accelerator=args.crnn_accelerator, beam_size=args.crnn_beam, reuse=args.crnn_reuse, log=log)


def markdown(record: dict[str, Any]) -> str:
    """The suite's tables: the runs' test scores, then best-path vs prefix-beam decoding of the same weights.

    Example:
        >>> print(markdown(record))  # doctest: +SKIP
    """
    runs, s = record["runs"], record["settings"]
    first = runs[0] if runs else {}
    sizes = "/".join(str(first.get(k, "?")) for k in ("train_samples", "val_samples", "test_samples"))
    epochs = "/".join(str(r.get("best_epoch", "?")) for r in runs) or "—"
    fit_s = record["test_acc"].get("fit_seconds_median")
    params = f"{first['params'] / 1e3:.0f} k" if "params" in first else "—"
    lines = [
        f"CRNN + CTC on `builtin:captcha`, {s['options'].get('length', 4)}-character strings over "
        f"{len(s['options'].get('charset', '0123456789'))} symbols; {len(runs)} seed(s), each drawing its own "
        "images; the test split is scored once, with the checkpoint validation chose.",
        "",
        "| model | params | train/val/test images | test seq acc (mean ± std) | test CER (mean ± std) | "
        "val seq acc | best epoch | fit s (median) |",
        "|---|---|---|---|---|---|---|---|",
        f"| crnn {s['widths']}, BiLSTM {s['hidden_size']}x{s['num_layers']} | {params} | {sizes} | "
        f"{mean_std(record['test_acc'])} | {mean_std(record['test_cer'])} | {mean_std(record['val_acc'])} | {epochs} | "
        f"{'—' if fit_s is None else f'{fit_s:.0f}'} |",
    ]
    if record.get("decoding"):
        device = first.get("decoding", {}).get("device", "?")
        lines += ["", f"Decoding the same weights on the same test images ({device}):", "",
                  "| decoder | test seq acc | test CER | ms / image |", "|---|---|---|---|"]
        for name, d in record["decoding"].items():
            label = "best path (greedy)" if name == "greedy" else f"prefix beam search, {name.split()[1]} beams"
            lines.append(f"| {label} | {mean_std(d['acc'])} | {mean_std(d['cer'])} | {d['ms_per_image']:.3f} |")
        gap = record.get("greedy_vs_trainer_max_gap")
        if gap is not None:
            lines += ["", f"Best path here against the trainer's test accuracy (an independent route to the same "
                      f"figure): largest gap over seeds {gap:.4f}. Times include the CNN + BiLSTM forward pass."]
    verdict = "met" if record["target_met"] else "not met"
    lines += ["", f"Target: test sequence accuracy >= {record['target']:.2f}: **{verdict}** "
              f"({mean_std(record['test_acc'])})."]
    if record.get("render_ms_per_image") is not None:
        n_train = s["options"].get("n_train", 0)
        ms = record["render_ms_per_image"]
        lines.append(f"Data generation: {ms:.2f} ms per image on one core ({n_train} training images ≈ "
                     f"{ms * n_train / 1e3:.0f} s, spread over the first epoch and cached).")
    lines.append(f"Settings: {s['options']}, augment {s['augment'] or 'none'}, batch {s['batch_size']}, "
                 f"lr {s['lr']}, at most {s['max_epochs']} epochs, precision {s['precision']}.")
    return "\n".join(lines)
