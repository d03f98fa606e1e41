"""Ensembles: ``trainer.ensemble: N`` trains N members and averages their class probabilities.

Every member trains on the same data and the same train/validation split (the recipe's ``seed``); member ``k``
starts from its own initialisation and per-epoch random state (seed ``seed + k``), so members differ in
weights, dropout masks and augmentation draws. With ``trainer.ensemble_models`` they differ in family too
(member ``k`` takes entry ``k mod len`` as its model section), as long as every family reads the same inputs.
Each keeps its own best-on-validation checkpoint. The run directory holds the members under ``members/<k>/``
(each a complete run directory of its own) and, at the top, the recipe, ``data_info.json`` and the ensemble's
``metrics.json``; :func:`load_run_model` rebuilds the ensemble from it, so ``cnnlstm test --run`` and
``predict`` score the averaged model, and ``cnnlstm export`` writes it as one graph: every member and the
averaging in one ONNX (or TorchScript) file, with the same parity check as a single model.

The ensemble is a classifier: :class:`EnsembleClassifier` returns the log of the averaged probabilities as its
logits, so softmax gives back the average exactly and cross-entropy is the ensemble's own log loss.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.engine.rundir import load_weights, weights_path, write_json
from cnnlstm.errors import ConfigError, WeightsError

__all__ = ["EnsembleClassifier", "ensemble_size", "member_dirs", "load_run_model", "fit_ensemble", "fits_validation",
           "OWN_MODEL", "model_section"]


class EnsembleClassifier(nn.Module):
    """Average the class probabilities of classifiers that read the same inputs.

    Args:
        members: registered models with ``output_kind == "logits"``, the same ``input_names`` and classes.

    Shape:
        - inputs: those of the members; output: ``(B, K)``, ``log(mean_k softmax(member_k(inputs)))``.

    Example:
        >>> from cnnlstm import create_model
        >>> members = [create_model("lstm_fcn", num_classes=3, in_channels=2, hidden_size=4) for _ in range(2)]
        >>> ensemble = EnsembleClassifier(members).eval()
        >>> probs = ensemble(x=torch.randn(4, 9, 2)).exp()  # the members' mean probabilities
        >>> probs.shape, bool(torch.allclose(probs.sum(dim=1), torch.ones(4)))
        (torch.Size([4, 3]), True)
    """

    output_kind = "logits"

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        first = members[0]
        for member in members:
            if getattr(member, "output_kind", None) != "logits":
                raise ConfigError(f"trainer.ensemble averages class probabilities; {type(member).__name__} outputs "
                                  f"{getattr(member, 'output_kind', '?')}: drop trainer.ensemble for this task")
            if member.input_names != first.input_names or member.num_classes != first.num_classes:
                raise ConfigError("ensemble members must read the same inputs and predict the same classes")
        self.members = nn.ModuleList(members)
        self.input_names = tuple(first.input_names)
        self.num_classes = int(first.num_classes)
        self.supports_lengths = bool(getattr(first, "supports_lengths", False))
        #: the members' registered model: what export looks up (a static time axis, say)
        self.base_model_name = getattr(first, "model_name", type(first).__name__)
        names = list(dict.fromkeys(getattr(m, "model_name", type(m).__name__) for m in members))
        self.model_name = f"ensemble of {len(members)} {', '.join(names)}"

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Keyword inputs the members read (the first member's :meth:`example_input`): what export traces with."""
        return self.members[0].example_input(batch_size=batch_size)

    def forward(self, **inputs: Tensor) -> Tensor:
        log_probs = torch.stack([m(**inputs).float().log_softmax(dim=-1) for m in self.members])  # (N, B, K)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))  # (B, K): log of the mean


def ensemble_size(config: dict[str, Any]) -> int:
    """Members a recipe asks for: ``trainer.ensemble``, 1 when unset.

    Raises:
        ConfigError: a value below 1.

    Example:
        >>> ensemble_size({"trainer": {"ensemble": 3}})
        3
    """
    size = config.get("trainer", {}).get("ensemble")
    if size is None:
        return len(config.get("trainer", {}).get("ensemble_models") or []) or 1
    if size < 1:
        raise ConfigError(f"trainer.ensemble must be >= 1 (members to train), got {size}")
    return int(size)


#: the ``trainer.ensemble_models`` entry that stands for the recipe's own ``model`` section
OWN_MODEL = "model"


def fits_validation(model: nn.Module) -> bool:
    """Whether ``model`` (or a member of it) was fitted on the validation split (a closed-form model's
    ``fit_on_validation``): then a validation score of it is in-sample and is not reported."""
    members = getattr(model, "members", None)
    if members is not None:
        return any(fits_validation(m) for m in members)
    return bool(getattr(model, "closed_form", False) and getattr(model, "fit_on_validation", False))


def member_dirs(run_dir: str | Path, size: int) -> list[Path]:
    """The members' run directories inside an ensemble run."""
    return [Path(run_dir) / "members" / str(k) for k in range(size)]


def load_run_model(run_dir: str | Path, config: dict[str, Any]) -> nn.Module:
    """The model a run directory holds: its best weights, or the averaged members of an ensemble run.

    Args:
        run_dir: a directory written by ``fit``.
        config: its ``config.yaml``.

    Raises:
        WeightsError: a member's (or the run's) weights are missing or do not load.

    Example:
        >>> model = load_run_model("runs/ucr-ens", read_config("runs/ucr-ens"))  # doctest: +SKIP
    """
    size = ensemble_size(config)
    if size == 1:
        return load_weights(weights_path(run_dir))
    paths = [weights_path(d) for d in member_dirs(run_dir, size)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise WeightsError(f"{run_dir} is an ensemble of {size} but lacks member weights {', '.join(missing)}; "
                           "was its fit finished?")
    return EnsembleClassifier([load_weights(p) for p in paths]).eval()


def model_section(config: dict[str, Any], entry: Any) -> dict[str, Any]:
    """The model section a ``trainer.ensemble_models`` entry stands for.

    An entry is a model section, a model name (that model's defaults), or ``model``: the recipe's own ``model``
    section, so ``--set model.KEY=...`` reaches that member.

    Example:
        >>> model_section({"model": {"name": "lstm_fcn", "hidden_size": 8}}, "model")
        {'name': 'lstm_fcn', 'hidden_size': 8}
    """
    if entry == OWN_MODEL:
        return config["model"]
    return {"name": entry} if isinstance(entry, str) else copy.deepcopy(entry)


def _member_config(config: dict[str, Any], models: list[Any] | None, k: int) -> dict[str, Any]:
    """Member ``k``'s recipe: ``config`` with entry ``k mod len`` of ``trainer.ensemble_models`` as its model."""
    if not models:
        return config
    return {**config, "model": model_section(config, models[k % len(models)])}


def _fit_member(config: dict[str, Any], run_dir: Path, seed: int,
                threads: int | None = None) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train one member (validation only); its metrics and history. In a worker process, ``threads`` caps torch."""
    from cnnlstm.engine.fit import _fit

    if threads is not None:
        torch.set_num_threads(threads)
    result = _fit(config, run_dir, verbose=False, callbacks=None, test=False, resume=False, train_seed=seed)
    return result.metrics, result.history


def _fit_members_in_processes(members: list[tuple[dict[str, Any], Path, int]],
                              jobs: int) -> list[tuple[dict[str, Any], list[dict[str, float]]]]:
    """Train members ``jobs`` at a time, each in a fresh (spawned) process with an equal share of the threads.

    Spawned, not forked: a forked child would inherit this process's thread pools and any CUDA context. A member
    that fails raises its error here, after the members already running finish.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from cnnlstm.engine.fit import MAIN_GUARD_HINT

    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_fit_member, config, run_dir, seed, threads) for config, run_dir, seed in members]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool:
            raise ConfigError(f"a process training ensemble members died (out of memory or killed, or, when "
                              f"cnnlstm is called from a script, the script ran again in it): {MAIN_GUARD_HINT}"
                              ) from None


def fit_ensemble(config: dict[str, Any], run_dir: Path, *, verbose: bool, test: bool) -> Any:
    """Train the members of ``config`` (one after the other, or ``trainer.ensemble_jobs`` at a time in processes of
    their own), then score the ensemble on the test split.

    Args:
        config: a validated recipe with ``trainer.ensemble >= 2``.
        run_dir: the ensemble's run directory (created).
        verbose: print the end-of-run summary.
        test: evaluate the ensemble on the test split (``False`` for model selection).

    Returns:
        A :class:`~cnnlstm.engine.fit.RunResult`: the ensemble's ``val/*`` and ``test/*`` metrics, each
        member's validation metrics as ``member<k>/val/*`` and their mean as ``members/val/*``.

    Raises:
        ConfigError: a recipe with ``pretrain`` or ``trainer.tbptt_steps`` (not combined with ensembles yet).

    Example:
        >>> fit("gunpoint", overrides=["trainer.ensemble=3"]).metrics["test/acc"]  # doctest: +SKIP
    """
    from cnnlstm.engine.data import load_bundle
    from cnnlstm.engine.fit import RunResult, _data_info, evaluate_run, task_name
    from cnnlstm.engine.rundir import write_yaml

    size = ensemble_size(config)
    for key in ("pretrain",):
        if config.get(key):
            raise ConfigError(f"trainer.ensemble with a {key} stage is not supported; drop one of them")
    if config["trainer"].get("tbptt_steps") is not None:
        raise ConfigError("trainer.ensemble with trainer.tbptt_steps is not supported; drop one of them")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", config)
    member_config = copy.deepcopy(config)
    member_config["trainer"]["ensemble"] = None
    member_config["trainer"]["ensemble_jobs"] = 1
    metrics: dict[str, Any] = {"ensemble": size}
    jobs = min(int(config["trainer"].get("ensemble_jobs") or 1), size)
    if jobs > 1:
        member_config["trainer"]["enable_progress_bar"] = False  # several processes would draw over each other
    member_config["trainer"]["ensemble_models"] = None
    members = [(_member_config(member_config, config["trainer"].get("ensemble_models"), k), member_dir,
                config["seed"] + k) for k, member_dir in enumerate(member_dirs(run_dir, size))]
    if jobs == 1:
        results = [_fit_member(*member) for member in members]
    else:
        results = _fit_members_in_processes(members, jobs)
    histories = []
    for k, (member_metrics, history) in enumerate(results):
        histories.append(history)
        metrics.update({f"member{k}/{key}": v for key, v in member_metrics.items() if key.startswith("val/")})
        metrics["fit_seconds"] = round(metrics.get("fit_seconds", 0.0) + member_metrics.get("fit_seconds", 0.0), 3)
    scored = [k for k in range(size) if any(key.startswith(f"member{k}/") for key in metrics)]
    for key in sorted({key.split("/", 1)[1] for key in metrics if key.startswith("member")}):
        values = [metrics[f"member{k}/{key}"] for k in scored if f"member{k}/{key}" in metrics]
        if len(values) == len(scored):  # the mean over the members that hold validation out
            metrics[f"members/{key}"] = sum(values) / len(values)
    bundle = load_bundle(config["data"], seed=config["seed"])
    info = _data_info(bundle, task_name(config, bundle))
    write_json(run_dir / "data_info.json", info)
    model = load_run_model(run_dir, config)  # every member's weights load, and the members form a classifier
    # The ensemble on the members' common validation split: what model selection (tune) reads. Refit members
    # trained on it, so a refit ensemble has no validation score (members/val/* are their first fits'); nor has
    # one with a member fitted on it (a closed-form model's fit_on_validation).
    if not config["trainer"].get("refit") and not fits_validation(model):
        metrics.update(evaluate_run(run_dir, accelerator="cpu", split="val").metrics)
    if test:
        metrics.update(evaluate_run(run_dir, accelerator="cpu").metrics)
        for k, member_dir in enumerate(member_dirs(run_dir, size)):  # each member alone, for comparison
            member_test = evaluate_run(member_dir, accelerator="cpu").metrics
            metrics.update({f"member{k}/{key}": v for key, v in member_test.items() if key.startswith("test/")})
    write_json(run_dir / "metrics.json", metrics)
    if verbose:
        from cnnlstm.report import format_summary

        title = f"{config.get('name', 'run')}: {model.model_name} on {bundle.name}"
        means = "  ".join(f"{k.split('/')[-1]}={metrics[k]:.4f}" for k in sorted(metrics) if k.startswith("members/"))
        lines = [format_summary(metrics, run_dir, title), f"members val   mean {means}"]
        alone = [f"{k}:{getattr(m, 'model_name', type(m).__name__)}={metrics[f'member{k}/test/acc']:.4f}"
                 for k, m in enumerate(model.members) if f"member{k}/test/acc" in metrics]
        if alone:
            lines.append(f"members test  acc {'  '.join(alone)}")
        print("\n".join(lines), flush=True)
    return RunResult(run_dir=run_dir, metrics=metrics, config=config, history=histories[0] if histories else [])
