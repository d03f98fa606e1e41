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

``trainer.ensemble_weights: fit`` weighs the members instead of averaging them equally: the weights on the simplex
that minimise the ensemble's log loss on the validation split (:func:`fit_member_weights`; a weighted ensemble
fitted on held-out predictions, as in stacking), kept in the run directory's ``ensemble_weights.json``. A member
that never leaves a poor plateau then weighs little. The ensemble's ``val/*`` are cross-fitted
(:func:`cross_fitted_probabilities`): each fold of validation images is scored with weights fitted on the other
folds, so they stay an estimate of unseen data.

``trainer.ensemble_weights: words`` lets the weights depend on the question (members that read token ids, VQA):
a softmax over the members of ``b + sum_w v_w``, summed over the distinct words the question holds
(:class:`WordGate`, fitted by :func:`fit_word_gate` on the validation log loss with a Gaussian prior on the word
vectors). Members that are good at different kinds of question ("what shape", "how many") then each answer theirs.
Its ``val/*`` are cross-fitted the same way.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from cnnlstm.engine.rundir import load_weights, weights_path, write_json
from cnnlstm.errors import ConfigError, WeightsError

__all__ = ["EnsembleClassifier", "ensemble_size", "member_dirs", "load_run_model", "fit_ensemble", "fits_validation",
           "OWN_MODEL", "model_section", "validation_fitted_models", "fit_member_weights", "cross_fitted_probabilities",
           "WEIGHTS_FILE", "WordGate", "fit_word_gate", "word_presence", "WORD_GATE_PENALTY"]

#: the run directory's file with the fitted member weights (``trainer.ensemble_weights: fit`` or ``words``)
WEIGHTS_FILE = "ensemble_weights.json"
#: the word gate's penalty ``c * sum v^2`` added to the summed validation log loss: a Gaussian prior of standard
#: deviation ``1 / sqrt(2 c)`` (0.35) on how far one word moves a member's log weight. Measured on the validation
#: splits of seven held-out VQA sets (docs/benchmarks.md 2h, session 12): ``c`` from about 0.4 to 40 (0.001 to 0.1
#: on the mean log loss of 420 rows) scored within 0.002 of each other; 4 is the middle of that range.
WORD_GATE_PENALTY = 4.0


def word_presence(sequence: Tensor, vocab_size: int) -> Tensor:
    """Which words of a vocabulary each token sequence holds: 1.0 or 0.0 per word (id 0, padding, never).

    Shape:
        - sequence: ``(B, L)`` int64 ids in ``[0, vocab_size)``; output: ``(B, vocab_size)`` float32.

    Example:
        >>> word_presence(torch.tensor([[2, 2, 1, 0]]), 4)
        tensor([[0., 1., 1., 0.]])
    """
    ids = torch.arange(vocab_size, device=sequence.device)  # (V,)
    present = (sequence[:, :, None] == ids).any(dim=1)  # (B, V): a comparison, so ONNX exports it plainly
    return present.float() * (ids > 0).float()  # (B, V): padding (id 0) is no word


@dataclass
class WordGate:
    """Per-question member weights: ``softmax(bias + presence @ vectors)`` over the members.

    Attributes:
        vectors: one log-weight shift per word and member, ``(V, M)``.
        bias: the members' log weights for a question of no known word, ``(M,)``.
    """

    vectors: Tensor
    bias: Tensor

    def log_weights(self, presence: Tensor) -> Tensor:
        """``(B, V)`` word presence -> ``(B, M)`` log weights (each row's weights sum to 1)."""
        return torch.log_softmax(self.bias.to(presence.dtype) + presence @ self.vectors.to(presence.dtype), dim=1)

    def to_json(self) -> dict[str, Any]:
        return {"vectors": self.vectors.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WordGate:
        return cls(torch.tensor(data["vectors"], dtype=torch.float64), torch.tensor(data["bias"], dtype=torch.float64))


class EnsembleClassifier(nn.Module):
    """Average the class probabilities of classifiers that read the same inputs (weighted, when weights are given).

    Args:
        members: registered models with ``output_kind == "logits"``, the same ``input_names`` and classes.
        weights: one weight per member, ``>= 0``, summing to 1 (:func:`fit_member_weights`); ``None``: equal.
        gate: per-question weights instead (:class:`WordGate`, members that read token ids as ``sequence``).

    Shape:
        - inputs: those of the members; output: ``(B, K)``, ``log(sum_k w_k softmax(member_k(inputs)))``, ``w``
          the gate's weights for each row's question when there is a gate.

    Example:
        >>> from cnnlstm import create_model
        >>> members = [create_model("lstm_fcn", num_classes=3, in_channels=2, hidden_size=4) for _ in range(2)]
        >>> ensemble = EnsembleClassifier(members).eval()
        >>> probs = ensemble(x=torch.randn(4, 9, 2)).exp()  # the members' mean probabilities
        >>> probs.shape, bool(torch.allclose(probs.sum(dim=1), torch.ones(4)))
        (torch.Size([4, 3]), True)
    """

    output_kind = "logits"

    def __init__(self, members: list[nn.Module], weights: list[float] | Tensor | None = None,
                 gate: WordGate | None = None) -> None:
        super().__init__()
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        if weights is None:
            weights = torch.full((len(members),), 1.0 / len(members), dtype=torch.float64)
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (len(members),) or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) \
                or abs(float(weights.sum()) - 1.0) > 1e-6:
            raise WeightsError(f"ensemble weights must be {len(members)} values >= 0 that sum to 1, got "
                               f"{weights.tolist()}")
        # log w of the members' weights (equal unless fitted), with 0 -> a large negative number rather than -inf
        # (exported graphs keep finite constants): a zero weight keeps its member out of the sum
        self.register_buffer("log_weights", weights.clamp_min(1e-30).log().float(), persistent=False)
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
        self.gated = gate is not None
        if gate is not None:
            if "sequence" not in self.input_names:
                raise ConfigError("trainer.ensemble_weights=words weighs members by the words of their token "
                                  f"sequence; these members read {', '.join(self.input_names)}: use fit instead")
            if gate.vectors.shape[1:] != (len(members),) or gate.bias.shape != (len(members),):
                raise WeightsError(f"a word gate for {len(members)} members needs (V, {len(members)}) vectors and "
                                   f"{len(members)} biases, got {tuple(gate.vectors.shape)} and "
                                   f"{tuple(gate.bias.shape)}")
            self.register_buffer("gate_vectors", gate.vectors.float(), persistent=False)  # (V, M)
            self.register_buffer("gate_bias", gate.bias.float(), persistent=False)  # (M,)

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Keyword inputs the members read (the first member's :meth:`example_input`): what export traces with."""
        return self.members[0].example_input(batch_size=batch_size)

    def forward(self, **inputs: Tensor) -> Tensor:
        log_probs = torch.stack([m(**inputs).float().log_softmax(dim=-1) for m in self.members])  # (M, B, K)
        if self.gated:  # each row's own weights, from the words of its question
            gate = WordGate(self.gate_vectors, self.gate_bias)
            log_weights = gate.log_weights(word_presence(inputs["sequence"], self.gate_vectors.shape[0]))  # (B, M)
            return torch.logsumexp(log_probs + log_weights.T[:, :, None], dim=0)  # (B, K)
        return torch.logsumexp(log_probs + self.log_weights[:, None, None], dim=0)  # (B, K): log of the weighted mean


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
    weights, gate = None, None
    mode = config.get("trainer", {}).get("ensemble_weights", "mean")
    if mode != "mean":
        path = Path(run_dir) / WEIGHTS_FILE
        if not path.is_file():
            raise WeightsError(f"{run_dir} weighs its members (trainer.ensemble_weights: {mode}) but has no "
                               f"{WEIGHTS_FILE}; was its fit finished?")
        stored = json.loads(path.read_text(encoding="utf-8"))
        weights = stored.get("weights")
        if mode == "words":
            if "gate" not in stored:
                raise WeightsError(f"{run_dir} weighs its members by question words but its {WEIGHTS_FILE} holds "
                                   "no gate; was its fit finished?")
            gate = WordGate.from_json(stored["gate"])
    return EnsembleClassifier([load_weights(p) for p in paths], weights, gate).eval()


def fit_member_weights(probs: Tensor, targets: Tensor, *, max_iter: int = 10_000, tol: float = 1e-12) -> Tensor:
    """Member weights on the simplex that minimise the log loss of the weighted average of ``probs``.

    ``-mean_i log sum_k w_k p_k(y_i | x_i)`` is convex in ``w``; its minimum is the maximum-likelihood mixture
    weight, reached by the EM update ``w_k <- mean_i w_k p_k(y_i) / sum_j w_j p_j(y_i)`` from equal weights (each
    step lowers the loss). Rows whose target is negative (an answer never seen in training) are left out.

    Args:
        probs: each member's class probabilities for the same rows.
        targets: the rows' classes.
        max_iter: EM steps at most.
        tol: stop when no weight moves by more than this.

    Shape:
        - probs: ``(M, N, K)``; targets: ``(N,)`` int64; output: ``(M,)`` float64, ``>= 0``, summing to 1.

    Example:
        >>> good = torch.tensor([[0.9, 0.1], [0.2, 0.8]]); noise = torch.full((2, 2), 0.5)
        >>> fit_member_weights(torch.stack([good, noise]), torch.tensor([0, 1])).round(decimals=3)
        tensor([1., 0.], dtype=torch.float64)
    """
    if probs.dim() != 3 or targets.shape != probs.shape[1:2]:
        raise ConfigError(f"fit_member_weights needs (M, N, K) probabilities and (N,) targets, got "
                          f"{tuple(probs.shape)} and {tuple(targets.shape)}")
    keep = targets >= 0
    if not bool(keep.any()):
        raise ConfigError("fit_member_weights needs at least one row with a known class")
    rows = torch.arange(probs.shape[1])[keep]
    right = probs.double()[:, rows, targets[keep]].clamp_min(1e-300)  # (M, N'): each member's p(true class)
    weights = torch.full((probs.shape[0],), 1.0 / probs.shape[0], dtype=torch.float64)
    for _ in range(max_iter):
        joint = weights[:, None] * right  # (M, N')
        updated = (joint / joint.sum(dim=0, keepdim=True)).mean(dim=1)  # (M,)
        done = float((updated - weights).abs().max()) <= tol
        weights = updated
        if done:
            break
    return weights / weights.sum()


def fit_word_gate(probs: Tensor, targets: Tensor, presence: Tensor, *, penalty: float = WORD_GATE_PENALTY,
                  max_iter: int = 500) -> WordGate:
    """Per-question member weights that minimise the log loss of the gated mixture on the given rows.

    The objective is ``-sum_i log sum_k w_k(x_i) p_k(y_i | x_i) + penalty * sum v^2`` with
    ``w(x) = softmax(b + x V)`` (``x`` a row's word presence). It starts from the best question-independent
    weights (``V = 0``, ``b = log`` of :func:`fit_member_weights`), so the result is never worse on these rows than
    them, and descends by L-BFGS. Words no row holds keep ``v = 0``. Rows whose target is negative are left out.

    Args:
        probs: each member's class probabilities for the same rows.
        targets: the rows' classes.
        presence: each row's words (:func:`word_presence`).
        penalty: weight of the Gaussian prior on the word vectors.
        max_iter: L-BFGS iterations at most.

    Shape:
        - probs: ``(M, N, K)``; targets: ``(N,)``; presence: ``(N, V)``.

    Example:
        >>> yes, no = torch.tensor([[0.9, 0.1]]), torch.tensor([[0.1, 0.9]])  # member 0 right on word 1, 1 on 2
        >>> probs = torch.stack([torch.cat([yes, no] * 20), torch.cat([no, yes] * 20)]).double()
        >>> words = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]] * 20).double()
        >>> gate = fit_word_gate(probs, torch.zeros(40, dtype=torch.long), words)
        >>> gate.log_weights(words[:2]).exp().round(decimals=2)  # 0.5 each with one weight per member
        tensor([[0.7500, 0.2500],
                [0.2500, 0.7500]], dtype=torch.float64)
    """
    if presence.shape[0] != probs.shape[1]:
        raise ConfigError(f"fit_word_gate needs one word row per probability row, got {presence.shape[0]} and "
                          f"{probs.shape[1]}")
    keep = targets >= 0
    start = fit_member_weights(probs, targets)  # (M,): also checks the shapes and that a row is known
    rows = torch.arange(probs.shape[1])[keep]
    log_right = probs.double()[:, rows, targets[keep]].clamp_min(1e-300).log().T  # (N', M)
    x = presence.double()[keep]  # (N', V)
    vectors = torch.zeros(x.shape[1], probs.shape[0], dtype=torch.float64, requires_grad=True)
    bias = start.clamp_min(1e-12).log().clone().requires_grad_(True)
    optimiser = torch.optim.LBFGS([vectors, bias], max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimiser.zero_grad()
        log_weights = torch.log_softmax(bias + x @ vectors, dim=1)  # (N', M)
        loss = -torch.logsumexp(log_weights + log_right, dim=1).sum() + penalty * vectors.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(objective)
    return WordGate(vectors.detach(), bias.detach())


def cross_fitted_probabilities(probs: Tensor, targets: Tensor, groups: Tensor, *, folds: int = 5,
                               seed: int = 0, presence: Tensor | None = None) -> Tensor:
    """The weighted ensemble's probabilities for each row, its weights fitted on the other folds' rows only.

    Groups (an image's questions, say) are dealt to ``folds`` folds in a seeded random order; every row of a
    group lands in one fold. Scoring these probabilities estimates how the weights fitted on all rows do on rows
    they were not fitted on.

    Args:
        probs: each member's class probabilities for the same rows.
        targets: the rows' classes.
        groups: each row's group id.
        folds: folds at most (fewer when there are fewer groups).
        seed: seed of the deal.
        presence: each row's words (:func:`word_presence`): fit a :class:`WordGate` per fold instead of weights.

    Shape:
        - probs: ``(M, N, K)``; targets, groups: ``(N,)``; presence: ``(N, V)``; output: ``(N, K)``.

    Raises:
        ConfigError: fewer than two groups.
    """
    distinct, inverse = torch.unique(groups, return_inverse=True)
    folds = min(folds, len(distinct))
    if folds < 2:
        raise ConfigError("trainer.ensemble_weights cross-fits its validation score over groups of rows; "
                          f"the validation split has {len(distinct)} group: raise data.val_fraction")
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed))
    fold_of_group = torch.empty(len(distinct), dtype=torch.long)
    fold_of_group[order] = torch.arange(len(distinct)) % folds
    fold = fold_of_group[inverse]  # (N,)
    out = torch.empty(probs.shape[1:], dtype=probs.dtype)
    for f in range(folds):
        held = fold == f
        if presence is None:
            weights = fit_member_weights(probs[:, ~held], targets[~held]).to(probs.dtype)[:, None]  # (M, 1)
        else:
            gate = fit_word_gate(probs[:, ~held], targets[~held], presence[~held])
            weights = gate.log_weights(presence[held].double()).exp().T.to(probs.dtype)  # (M, n)
        out[held] = (weights[:, :, None] * probs[:, held]).sum(dim=0)
    return out


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


def validation_fitted_models(config: dict[str, Any]) -> list[str]:
    """Names of the recipe's models (its ``model``, or each ``trainer.ensemble_models`` entry) that fit on the
    validation split (a closed-form model's ``fit_on_validation``): nothing can then be chosen or scored on it.

    Example:
        >>> validation_fitted_models({"model": {"name": "minirocket", "fit_on_validation": True}, "trainer": {}})
        ['minirocket']
    """
    entries = config["trainer"].get("ensemble_models") or [OWN_MODEL]
    sections = [model_section(config, entry) for entry in entries]
    return [str(section.get("name")) for section in sections if section.get("fit_on_validation")]


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
        _exit_with_parent()
    result = _fit(config, run_dir, verbose=False, callbacks=None, test=False, resume=False, train_seed=seed)
    return result.metrics, result.history


def _exit_with_parent(poll_seconds: float = 1.0) -> None:
    """In a worker process: end it as soon as the process that started it is gone.

    A signal that kills the parent (``kill PID``, SIGKILL, an out-of-memory kill) does not reach its workers;
    without this they would train on as orphans for hours, holding the cores and writing into a run nobody
    reads. A process is re-parented when its parent dies, which ``getppid`` shows.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="cnnlstm-exit-with-parent", daemon=True).start()


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
    mode = config["trainer"].get("ensemble_weights", "mean")
    weighted = mode != "mean"
    fitted_on_validation = validation_fitted_models(config)
    if weighted and fitted_on_validation:
        raise ConfigError(f"trainer.ensemble_weights={mode} fits the weights on the validation split, which "
                          f"{', '.join(fitted_on_validation)} fits on (fit_on_validation); drop one of them")
    bundle = load_bundle(config["data"], seed=config["seed"])
    if mode == "words" and not bundle.info.extras.get("vocab"):
        raise ConfigError(f"trainer.ensemble_weights=words weighs members by the words of their questions; "
                          f"{bundle.name} holds no token sequences (no vocabulary): use fit instead")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", config)
    member_config = copy.deepcopy(config)
    member_config["trainer"]["ensemble"] = None
    member_config["trainer"]["ensemble_jobs"] = 1
    member_config["trainer"]["ensemble_weights"] = "mean"  # a member is one model
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
    info = _data_info(bundle, task_name(config, bundle))
    write_json(run_dir / "data_info.json", info)
    if weighted:
        metrics.update(weigh_members(run_dir, size, seed=int(config["seed"]), words=mode == "words"))
    model = load_run_model(run_dir, config)  # every member's weights load, and the members form a classifier
    # The ensemble on the members' common validation split: what model selection (tune) reads. Refit members
    # trained on it, so a refit ensemble has no validation score (members/val/* are their first fits'); nor has
    # one with a member fitted on it (a closed-form model's fit_on_validation).
    if not config["trainer"].get("refit") and not fits_validation(model) and not weighted:
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
        if weighted:
            shares = "  ".join(f"{k}:{metrics[f'member{k}/weight']:.3f}" for k in range(size))
            how = "mean over validation questions, each weighed by its words" if mode == "words" else \
                "fitted on validation"
            lines.append(f"members weight    {shares} ({how}; val/* cross-fitted)")
        print("\n".join(lines), flush=True)
    return RunResult(run_dir=run_dir, metrics=metrics, config=config, history=histories[0] if histories else [])


def weigh_members(run_dir: Path, size: int, *, seed: int, words: bool = False) -> dict[str, float]:
    """Fit the members' weights on the validation split and write them to the run's ``ensemble_weights.json``.

    Args:
        run_dir: an ensemble run whose members have finished.
        size: its member count.
        seed: seed of the folds that cross-fit the validation score.
        words: also fit a :class:`WordGate` (weights per question), which the ensemble then uses.

    Returns:
        ``member<k>/weight`` (with ``words``: the mean of the per-question weights over the validation rows) and the
        weighted ensemble's cross-fitted ``val/*`` (each fold of validation groups scored with weights fitted on
        the other folds).
    """
    val = validation_probabilities(run_dir, size)
    probs, targets = val.probs.double(), val.targets
    weights = fit_member_weights(probs, targets)
    stored: dict[str, Any] = {"weights": weights.tolist(), "fitted_on": "validation log loss"}
    presence = None
    if words:
        if val.presence is None:
            raise ConfigError("trainer.ensemble_weights=words weighs members by the words of their token sequence; "
                              "these members read no token ids: use fit instead")
        presence = val.presence.double()
        gate = fit_word_gate(probs, targets, presence)
        stored["gate"] = gate.to_json()
        stored["fitted_on"] = "validation log loss, per question word"
        weights = gate.log_weights(presence).exp().mean(dim=0)  # (M,): the members' mean share of a question
    write_json(Path(run_dir) / WEIGHTS_FILE, stored)
    metrics = {f"member{k}/weight": float(w) for k, w in enumerate(weights)}
    crossed = cross_fitted_probabilities(probs, targets, val.groups, seed=seed, presence=presence)
    metrics.update(score_probabilities(val.task, crossed, targets, "val", val.qtypes))
    return metrics


class ValidationPredictions(NamedTuple):
    """What :func:`validation_probabilities` returns; see there."""

    probs: Tensor
    targets: Tensor
    groups: Tensor
    qtypes: Tensor | None
    task: Any
    presence: Tensor | None


def validation_probabilities(run_dir: Path, size: int) -> ValidationPredictions:
    """Each member's class probabilities on the ensemble's validation split, in the split's order.

    Args:
        run_dir: an ensemble run whose members have finished.
        size: its member count.

    Returns:
        ``(probs, targets, groups, qtypes, task, presence)``: ``(M, N, K)`` probabilities, ``(N,)`` classes,
        ``(N,)`` group ids (the data's ``info.groups``, e.g. the image of each question; each row its own group
        without them), ``(N,)`` question types (VQA data with a ``type`` column; else ``None``), a classification
        task for the data, whose metrics :func:`score_probabilities` uses, and ``(N, V)`` word presence
        (:func:`word_presence`) when the members read token ids (``sequence`` with a ``vocab`` in the data), else
        ``None``.
    """
    from cnnlstm.engine.data import RecipeData
    from cnnlstm.engine.fit import rebuild_run

    members = [load_weights(weights_path(d)).eval() for d in member_dirs(run_dir, size)]
    # the ensemble run's own data pipeline: the one `test --run` scores the weighted ensemble on
    config, bundle, name, task = rebuild_run(run_dir, model=EnsembleClassifier(members))
    data = RecipeData.from_section(bundle, config["data"], seed=config["seed"], stratify=name == "classification")
    probs: list[list[Tensor]] = [[] for _ in members]
    targets: list[Tensor] = []
    qtypes: list[Tensor] = []
    presence: list[Tensor] = []
    vocab = bundle.info.extras.get("vocab")
    reads_words = vocab is not None and "sequence" in members[0].input_names
    with torch.no_grad():
        for batch in data.val_dataloader():
            inputs = {key: batch[key] for key in members[0].input_names if key in batch}
            for k, member in enumerate(members):
                probs[k].append(member(**inputs).float().softmax(dim=-1))  # (B, K)
            targets.append(batch["y"])
            if "qtype" in batch:
                qtypes.append(batch["qtype"])
            if reads_words:
                presence.append(word_presence(batch["sequence"], len(vocab)))  # (B, V)
    indices = torch.as_tensor(list(data.val_set.indices), dtype=torch.long)  # (N,), the loader's order
    groups = bundle.info.groups
    group_ids = torch.as_tensor(groups, dtype=torch.long)[indices] if groups is not None else indices
    return ValidationPredictions(torch.stack([torch.cat(p) for p in probs]), torch.cat(targets), group_ids,
                                 torch.cat(qtypes) if qtypes else None, task,
                                 torch.cat(presence) if presence else None)


def score_probabilities(task: Any, probs: Tensor, targets: Tensor, stage: str,
                        qtypes: Tensor | None = None) -> dict[str, float]:
    """A classification task's ``{stage}/*`` metrics (loss, accuracy, F1, per question type) of given
    probabilities, computed by the task's own metric code.

    Shape:
        - probs: ``(N, K)``; targets, qtypes: ``(N,)``.
    """
    batch: dict[str, Any] = {"y": targets}
    if qtypes is not None:
        batch["qtype"] = qtypes
    logits = probs.float().clamp_min(1e-30).log()  # (N, K): softmax gives the probabilities back
    values = {"loss": float(task.score(logits, batch, stage))}
    values.update({key: float(v) for key, v in task.metrics[stage].compute().items()})
    task.metrics[stage].reset()
    task.on_stage_epoch_end(stage, values)
    return {f"{stage}/{key}": v for key, v in values.items()}
