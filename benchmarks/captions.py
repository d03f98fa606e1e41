"""``python -m benchmarks captions``: the Show-Attend-Tell captioner on shape scenes, greedy decoding vs beam search.

The ``shape_captions`` recipe is trained once per seed; the checkpoint validation chose (``val/bleu4``) then
captions the test images once per decoder, timed per caption:

- **greedy**, decoded here independently of the model's beam search: the teacher-forced ``forward`` is re-run
  on the caption so far and its last step's argmax appended, one word at a time (``<pad>`` and ``<start>``
  excluded, as :meth:`~cnnlstm.models.captioner.Captioner.generate` excludes them);
- **beam K** for each ``--captions-beams`` size through ``Captioner.generate(beam_size=K)``. ``beam 1`` must
  give the greedy captions exactly, which checks the beam search against the independent loop.

Each caption is scored with corpus BLEU-4 (torchmetrics) against the reading-order caption (the one training
target, as the task's ``test/bleu4``) and against every valid object order of the scene (``info.extras["references"]``,
several references as in COCO), plus the share of captions equal to the reading-order caption.

Example:
    $ python -m benchmarks captions --captions-seeds 3 --captions-beams 1 3 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.runs import fit_seeds, mean_std, summarize

__all__ = ["HELP", "RECIPE", "add_arguments", "greedy_captions", "score_decoders", "captions_seed",
           "captions_record", "run_captions", "run", "markdown"]

HELP = "Show-Attend-Tell captioner on generated shape scenes: BLEU-4 with greedy decoding vs beam search"
RECIPE = "shape_captions"
PAD, START, END = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, all prefixed ``--captions-`` so ``python -m benchmarks all`` can hold every suite's options.

    Args:
        parser: the ``captions`` (or ``all``) sub-parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_arguments(p); p.parse_args([]).captions_beams
        [1, 3, 5]
    """
    parser.add_argument("--captions-seeds", type=int, default=1, help="runs of the shape_captions recipe")
    parser.add_argument("--captions-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every captioning run, e.g. trainer.max_epochs=2")
    parser.add_argument("--captions-accelerator", choices=("cpu", "gpu", "auto"), default="auto",
                        help="trainer.accelerator of every run; decoding runs on the same device")
    parser.add_argument("--captions-beams", nargs="+", type=int, default=[1, 3, 5], metavar="K",
                        help="beam sizes compared with greedy decoding (1 checks beam search against greedy)")
    parser.add_argument("--captions-reuse", action="store_true",
                        help="take finished runs with exactly the same config from --runs instead of retraining")


@torch.no_grad()
def greedy_captions(model: nn.Module, images: Tensor, max_length: int) -> list[list[int]]:
    """Greedy captions through the teacher-forced ``forward`` alone (no beam search, no step function).

    Each step re-runs ``model(images, captions=<start> w1 .. wt <pad>)`` and appends the argmax of step ``t``'s
    scores, ``<pad>`` and ``<start>`` excluded; a caption stops at ``<end>`` or after ``max_length`` words.

    Args:
        model: a captioner (``output_kind == "caption_logits"``) in eval mode.
        images: the images to caption.
        max_length: most words per caption.

    Returns:
        one list of word ids per image, without ``<start>`` and ``<end>`` (as ``Captioner.generate``).

    Shape:
        - images: ``(B, C, H, W)``.

    Example:
        >>> greedy_captions(model.eval(), torch.rand(2, 3, 48, 48), max_length=12)  # doctest: +SKIP
        [[4, 9, 12], [4, 7, 13, 18, 4, 6, 14]]
    """
    B = images.shape[0]
    tokens = torch.full((B, 1), START, dtype=torch.long, device=images.device)  # (B, 1)
    done = torch.zeros(B, dtype=torch.bool, device=images.device)  # (B,)
    for _ in range(max_length):
        # A trailing pad gives the forward one more input, so its last step scores the word after ``tokens``.
        padded = torch.cat([tokens, torch.full_like(tokens[:, :1], PAD)], dim=1)  # (B, t+1)
        scores = model(images=images, captions=padded)[:, -1].float()  # (B, V)
        scores[:, [PAD, START]] = float("-inf")
        nxt = scores.argmax(dim=-1).masked_fill(done, PAD)  # (B,)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)  # (B, t+1)
        done |= nxt == END
        if bool(done.all()):
            break
    out = []
    for row in tokens[:, 1:].tolist():
        out.append(row[: row.index(END)] if END in row else [w for w in row if w != PAD])
    return out


def _words(ids: list[int], vocab: list[str]) -> str:
    return " ".join(vocab[i] for i in ids if i not in (PAD, START, END))


@torch.no_grad()
def score_decoders(model: nn.Module, dataset: Any, vocab: list[str], references: list[list[str]], *,
                   beams: list[int], max_length: int, batch_size: int = 128,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Caption ``dataset`` greedily and with each beam size; BLEU-4, exact match and time per caption for each.

    Args:
        model: a trained captioner (put in eval mode and moved to ``device`` here).
        dataset: items ``{"images", "captions"}``; ``captions`` (``<start> .. <end>``) is the single reference.
        vocab: index -> word.
        references: every valid caption of each item (several references per image).
        beams: beam sizes to compare with greedy decoding.
        max_length: most words per caption.
        batch_size: images decoded together (beam search folds its ``K`` hypotheses into this batch).
        device: where decoding runs.

    Returns:
        ``{"greedy" | "beam K": {"bleu4", "bleu4_all_orders", "exact", "ms_per_caption", "same_as_greedy"}}``.

    Example:
        >>> scores = score_decoders(model, bundle.test, vocab, refs, beams=[1, 3], max_length=12)  # doctest: +SKIP
        >>> scores["beam 3"]["bleu4"]  # doctest: +SKIP
        0.98
    """
    from torchmetrics.text import BLEUScore

    from cnnlstm.data.collate import pad_collate

    model = model.float().eval().to(device)
    items = [dataset[i] for i in range(len(dataset))]
    batches = [pad_collate(items[i: i + batch_size]) for i in range(0, len(items), batch_size)]
    single = [_words(item["captions"].tolist(), vocab) for item in items]
    decoders: dict[str, Callable[[Tensor], list[list[int]]]] = {
        "greedy": lambda x: greedy_captions(model, x, max_length)}
    for k in beams:
        decoders[f"beam {k}"] = lambda x, k=k: model.generate(x, max_length=max_length, beam_size=k)

    for decode in decoders.values():  # warm-up: kernels chosen, caches filled, before anything is timed
        decode(batches[0]["images"][:2].to(device))
    results: dict[str, Any] = {}
    greedy: list[str] = []
    for name, decode in decoders.items():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ids = [seq for batch in batches for seq in decode(batch["images"].to(device))]  # host lists: synced
        seconds = time.perf_counter() - start
        preds = [_words(seq, vocab) for seq in ids]
        greedy = greedy or preds
        results[name] = {
            "bleu4": round(float(BLEUScore(n_gram=4)(preds, [[r] for r in single])), 4),
            "bleu4_all_orders": round(float(BLEUScore(n_gram=4)(preds, references)), 4),
            "exact": round(statistics.fmean(p == r for p, r in zip(preds, single, strict=True)), 4),
            "ms_per_caption": round(1e3 * seconds / len(preds), 3),
            "same_as_greedy": round(statistics.fmean(p == g for p, g in zip(preds, greedy, strict=True)), 4),
        }
    return results


def _device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("mps" if accelerator == "mps" else "cpu")


def _score_run(run_dir: Path, beams: list[int]) -> dict[str, Any]:
    """Rebuild a finished run from its directory and score its decoders on its test split."""
    from cnnlstm.engine.data import load_bundle
    from cnnlstm.engine.rundir import load_weights, read_config, weights_path

    config = read_config(run_dir)
    bundle = load_bundle(config["data"], seed=config["seed"])
    model = load_weights(weights_path(run_dir))
    extras = bundle.info.extras
    return score_decoders(model, bundle.test, list(extras["vocab"]), extras["references"], beams=beams,
                          max_length=int(extras["max_caption_length"]),  # as the task's test/bleu4
                          device=_device(config["trainer"]["accelerator"]))


def captions_seed(seed: int, *, out: Path, overrides: list[str], beams: list[int],
                  reuse: bool = False) -> dict[str, Any]:
    """Train (or reuse) one seed's run and score its decoders: the per-seed part of :func:`run_captions`.

    Args:
        seed: the run's seed.
        out: parent of the run directory (``out/seed{seed}``).
        overrides: recipe overrides.
        beams: beam sizes compared with greedy decoding.
        reuse: take a finished run from ``out/seed{seed}`` when its config is exactly this one.

    Returns:
        the seed's record: :data:`benchmarks.runs.KEPT` metrics, ``test_bleu4``, ``val_bleu4``, split sizes
        and ``decoders`` (:func:`score_decoders`).

    Example:
        >>> captions_seed(0, out=Path("runs/bench/captions"), overrides=[], beams=[1, 3])  # doctest: +SKIP
    """
    (record,) = fit_seeds(RECIPE, [seed], data=None, overrides=overrides, out=out, reuse=reuse)
    metrics = json.loads((out / f"seed{seed}" / "metrics.json").read_text())
    record.update({k.replace("/", "_"): metrics[k] for k in ("test/bleu4", "val/bleu4", "train_samples",
                                                              "val_samples", "test_samples") if k in metrics})
    record["decoders"] = _score_run(out / f"seed{seed}", beams)
    return record


def captions_record(runs: list[dict[str, Any]], overrides: list[str], beams: list[int]) -> dict[str, Any]:
    """The suite's record from per-seed records (:func:`captions_seed`), each decoder summarised over seeds.

    Args:
        runs: one record per seed.
        overrides: the recipe overrides every run used.
        beams: the beam sizes compared.

    Returns:
        ``recipe``, ``overrides``, ``seeds``, ``beams``, ``settings``, ``runs``, ``test_bleu4`` / ``val_bleu4``
        summaries and ``decoders``.

    Example:
        >>> record = captions_record([captions_seed(0, out=out, overrides=[], beams=[1])], [], [1])  # doctest: +SKIP
    """
    from cnnlstm.engine import resolve_config

    config = resolve_config(RECIPE, overrides=overrides)
    decoders: dict[str, Any] = {}
    for name in runs[0]["decoders"] if runs else ():
        per_seed = [r["decoders"][name] for r in runs]
        decoders[name] = {key: summarize(per_seed, key) for key in ("bleu4", "bleu4_all_orders", "exact")}
        decoders[name]["ms_per_caption"] = statistics.median(d["ms_per_caption"] for d in per_seed)
        decoders[name]["same_as_greedy"] = min(d["same_as_greedy"] for d in per_seed)
    data, model = config["data"], config["model"]
    return {
        "recipe": RECIPE, "overrides": overrides, "seeds": [r["seed"] for r in runs], "beams": beams,
        "settings": {"options": data["options"], "batch_size": data["batch_size"], "encoder": model.get("encoder"),
                     "encoder_kwargs": model.get("encoder_kwargs"), "hidden_size": model.get("hidden_size"),
                     "embedding_dim": model.get("embedding_dim"), "lr": config["optim"]["lr"],
                     "max_epochs": config["trainer"]["max_epochs"]},
        "runs": runs,
        "test_bleu4": summarize(runs, "test_bleu4"), "val_bleu4": summarize(runs, "val_bleu4"),
        "decoders": decoders,
    }


def run_captions(seeds: list[int], *, out: Path, sets: list[str] | None = None, accelerator: str = "auto",
                 beams: list[int] | None = None, reuse: bool = False, log: Any = print) -> dict[str, Any]:
    """Train ``shape_captions`` once per seed and compare greedy decoding with beam search on its test split.

    Args:
        seeds: one run per seed (weights, training order, validation carve and the generated scenes).
        out: parent of the run directories (``out/seed{s}``).
        sets: recipe overrides for every run.
        accelerator: ``trainer.accelerator`` of every run.
        beams: beam sizes (default 1, 3, 5).
        reuse: take a seed's finished run from ``out/seed{s}`` when its config is exactly this one.
        log: called with one line per finished seed.

    Returns:
        the record of :func:`captions_record`.

    Example:
        >>> record = run_captions([0], out=Path("runs/bench/captions"))  # doctest: +SKIP
    """
    beams = list(beams or [1, 3, 5])
    overrides = [f"trainer.accelerator={accelerator}", *(sets or [])]
    runs = []
    for seed in seeds:
        record = captions_seed(seed, out=out, overrides=overrides, beams=beams, reuse=reuse)
        runs.append(record)
        scores = ", ".join(f"{name} {d['bleu4']:.4f}" for name, d in record["decoders"].items())
        log(f"captions: seed {seed} test BLEU-4 {scores} (best epoch {record.get('best_epoch')})")
    return captions_record(runs, overrides, beams)


def run(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    """The ``python -m benchmarks captions`` entry point (see :data:`benchmarks.cli.SUITES`).

    Example:
        >>> record = run(build_parser().parse_args(["captions"]), print)  # doctest: +SKIP
    """
    return run_captions(list(range(args.captions_seeds)), out=Path(args.runs) / "captions", sets=args.captions_set,
                        accelerator=args.captions_accelerator, beams=args.captions_beams, reuse=args.captions_reuse,
                        log=log)


def markdown(record: dict[str, Any]) -> str:
    """The suite's tables: the trained runs, then each decoder on the same checkpoint.

    Example:
        >>> print(markdown(record))  # doctest: +SKIP
    """
    runs, s = record["runs"], record["settings"]
    first = runs[0] if runs else {}
    sizes = "/".join(str(first.get(k, "?")) for k in ("train_samples", "val_samples", "test_samples"))
    fit_s = record["test_bleu4"].get("fit_seconds_median")
    lines = [
        f"Show-Attend-Tell captioner on `builtin:shape_captions` ({s['options']}); {len(runs)} seed(s), each "
        "drawing its own scenes; one checkpoint per seed, chosen on validation BLEU-4.",
        "",
        "| model | params | train/val/test images | val BLEU-4 | test BLEU-4 (trainer, greedy) | best epoch | "
        "fit s (median) |",
        "|---|---|---|---|---|---|---|",
        f"| captioner, {s['encoder']} {s['encoder_kwargs']}, LSTM {s['hidden_size']} | "
        f"{first['params'] / 1e3:.0f} k | {sizes} | {mean_std(record['val_bleu4'])} | "
        f"{mean_std(record['test_bleu4'])} | "
        f"{'/'.join(str(r.get('best_epoch', '?')) for r in runs)} | {'—' if fit_s is None else f'{fit_s:.0f}'} |"
        if runs else "| — | | | | | | |",
        "",
        "Decoders on the same checkpoint and test images (BLEU-4: corpus, torchmetrics; one reference is the "
        "reading-order caption the model trained on, all orders lists every valid caption of the scene):",
        "",
        "| decoder | BLEU-4 | BLEU-4, all orders | exact caption | same caption as greedy | ms / caption |",
        "|---|---|---|---|---|---|",
    ]
    for name, d in record["decoders"].items():
        label = "greedy (teacher-forced loop)" if name == "greedy" else f"beam search, {name.split()[1]}"
        lines.append(f"| {label} | {mean_std(d['bleu4'])} | {mean_std(d['bleu4_all_orders'])} | "
                     f"{mean_std(d['exact'])} | {d['same_as_greedy']:.3f} | {d['ms_per_caption']:.2f} |")
    if "beam 1" in record["decoders"]:
        same = record["decoders"]["beam 1"]["same_as_greedy"]
        lines += ["", f"Beam 1 against the independent greedy loop: {same:.1%} of captions identical "
                  "(100% expected). The loop re-runs the whole caption at every step, so its time is a check's, "
                  "not a decoder's: beam 1 is the greedy decoding time."]
    lines.append(f"Settings: batch {s['batch_size']}, lr {s['lr']}, at most {s['max_epochs']} epochs; decoding "
                 "batches of 128 images.")
    return "\n".join(lines)
