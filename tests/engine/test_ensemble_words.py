"""trainer.ensemble_weights: words: per-question member weights from the question's words, cross-fitted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import log_softmax
from torch import Tensor
from toys import FixedLogits

from cnnlstm.data import load_dataset
from cnnlstm.engine import evaluate_run, fit, load_weights
from cnnlstm.engine.ensemble import (
    WEIGHTS_FILE,
    WORD_GATE_PENALTY,
    EnsembleClassifier,
    WordGate,
    cross_fitted_probabilities,
    fit_member_weights,
    fit_word_gate,
    validation_probabilities,
    word_presence,
)
from cnnlstm.engine.rundir import weights_path
from cnnlstm.errors import ConfigError, WeightsError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from user_images import make_vqa  # noqa: E402


def _hand_gate_weights(gate: WordGate, sequence: Tensor) -> Tensor:
    """softmax(b + sum of v_w over the distinct non-padding words of each row), one row at a time."""
    rows = []
    for ids in sequence.tolist():
        logits = gate.bias.clone()
        for word in sorted(set(ids) - {0}):
            logits = logits + gate.vectors[word]
        rows.append(torch.softmax(logits, dim=0))
    return torch.stack(rows)  # (B, M)


def _objective(params: np.ndarray, probs: np.ndarray, targets: np.ndarray, x: np.ndarray, penalty: float) -> float:
    m = probs.shape[0]
    vectors, bias = params[:-m].reshape(x.shape[1], m), params[-m:]
    log_w = log_softmax(bias + x @ vectors, axis=1)  # (N, M)
    right = probs[:, np.arange(len(targets)), targets].T  # (N, M)
    return float(-np.log((np.exp(log_w) * right).sum(1)).sum() + penalty * (vectors ** 2).sum())


def _gated_problem(seed: int, rows: int = 150, words: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """Three members; member k is good on questions holding word k + 1 and poor elsewhere; word 5 is never used."""
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (rows,), generator=gen)
    kind = torch.randint(0, 3, (rows,), generator=gen)
    presence = torch.zeros(rows, words, dtype=torch.float64)
    presence[torch.arange(rows), kind + 1] = 1.0
    presence[:, 4] = (torch.rand(rows, generator=gen) < 0.5).double()  # a word that says nothing
    logits = torch.randn(3, rows, 3, generator=gen)
    for k in range(3):
        logits[k, torch.arange(rows), targets] += torch.where(kind == k, 3.0, 0.3)
    return logits.softmax(-1).double(), targets, presence


def test_word_presence_marks_each_distinct_word_and_never_padding() -> None:
    sequence = torch.tensor([[3, 1, 3, 0, 0], [2, 2, 2, 2, 4], [0, 0, 0, 0, 0]])
    want = torch.zeros(3, 5)
    for i, ids in enumerate(sequence.tolist()):
        for word in set(ids) - {0}:
            want[i, word] = 1.0
    torch.testing.assert_close(word_presence(sequence, 5), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_word_gate_reaches_the_optimum_an_independent_optimiser_finds(seed: int) -> None:
    probs, targets, presence = _gated_problem(seed)
    gate = fit_word_gate(probs, targets, presence)
    p, y, x = probs.numpy(), targets.numpy(), presence.numpy()
    start = np.concatenate([np.zeros(x.shape[1] * 3), np.log(fit_member_weights(probs, targets).numpy())])
    reference = minimize(_objective, start, args=(p, y, x, WORD_GATE_PENALTY), method="L-BFGS-B",
                         options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-10})
    ours = _objective(np.concatenate([gate.vectors.numpy().ravel(), gate.bias.numpy()]), p, y, x, WORD_GATE_PENALTY)
    assert ours <= reference.fun + 1e-5
    assert ours < _objective(start, p, y, x, WORD_GATE_PENALTY) - 10  # far better than one weight per member
    assert bool((gate.vectors[[0, 5]] == 0).all())  # padding and a word no row holds stay at zero
    weights = gate.log_weights(presence).exp()  # (N, 3)
    kind = presence[:, 1:4].argmax(1)
    for k in range(3):  # each kind of question goes mostly to the member that is good at it
        assert float(weights[kind == k, k].mean()) > 0.5


def test_one_shared_word_gives_the_question_independent_weights() -> None:
    probs, targets, _ = _gated_problem(3)
    presence = torch.zeros(len(targets), 4, dtype=torch.float64)
    presence[:, 2] = 1.0  # every question holds word 2 and nothing else: the words cannot tell rows apart
    gate = fit_word_gate(probs, targets, presence)
    torch.testing.assert_close(gate.log_weights(presence[:1]).exp()[0], fit_member_weights(probs, targets),
                               atol=1e-4, rtol=0)
    assert float(gate.vectors.abs().max()) < 1e-4  # the prior keeps the shared word's vector at zero


def test_gated_ensemble_weighs_each_row_by_its_words() -> None:
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 1.0], [-1.0, 2.0]])
    gate = WordGate(torch.tensor([[0.0, 0.0], [1.5, -0.5], [-2.0, 1.0], [0.3, 0.3]], dtype=torch.float64),
                    torch.tensor([0.2, -0.2], dtype=torch.float64))
    sequence = torch.tensor([[1, 1, 0], [2, 3, 1], [0, 0, 0]])
    reads = ("sequence",)
    out = EnsembleClassifier([FixedLogits(a, reads), FixedLogits(b, reads)], gate=gate)(sequence=sequence)
    w = _hand_gate_weights(gate, sequence).float()  # (3, 2)
    torch.testing.assert_close(out.softmax(1), w[:, :1] * a.softmax(1) + w[:, 1:] * b.softmax(1))
    with pytest.raises(ConfigError, match="token"):  # members that read no question
        EnsembleClassifier([FixedLogits(a), FixedLogits(b)], gate=gate)
    with pytest.raises(WeightsError, match="3 members"):
        EnsembleClassifier([FixedLogits(a, reads)] * 3, gate=gate)


def test_cross_fitted_gate_leaves_out_each_rows_group() -> None:
    probs, targets, presence = _gated_problem(4, rows=60)
    groups = torch.arange(60) // 6  # 10 groups of 6 questions (one image each)
    crossed = cross_fitted_probabilities(probs, targets, groups, folds=10, presence=presence)
    for g in range(10):  # reference: a hand leave-one-group-out loop
        rows = groups == g
        gate = fit_word_gate(probs[:, ~rows], targets[~rows], presence[~rows])
        w = gate.log_weights(presence[rows]).exp()  # (n, M)
        torch.testing.assert_close(crossed[rows], (w.T[:, :, None] * probs[:, rows]).sum(0))


def test_words_on_data_without_questions_is_refused_before_training(tmp_path: Path) -> None:
    recipe = {"name": "toy_words", "seed": 0, "data": {"spec": "toy:a", "batch_size": 8, "val_fraction": 0.3},
              "model": {"name": "toy_lstm", "hidden_size": 4}, "optim": {"lr": 0.01, "scheduler": "none"},
              "trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False, "ensemble": 2,
                          "ensemble_weights": "words"}}
    with pytest.raises(ConfigError, match="no vocabulary"):
        fit(recipe, out=tmp_path / "run", verbose=False)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


TINY = ["trainer.max_epochs=2", "trainer.enable_progress_bar=false", "data.batch_size=4", "data.val_fraction=0.3",
        "data.options.image_size=32", "model.hidden_size=8", "model.encoder_kwargs.widths=[4,8]",
        "trainer.ensemble_weights=words", "trainer.ensemble_jobs=1",
        "trainer.ensemble_models=[{name: multi_input, fusion: product, hidden_size: 8, encoder_kwargs: "
        "{widths: [4, 8]}}, model]"]


@pytest.mark.slow
def test_fit_gates_members_by_question_words_and_every_reader_uses_the_gate(tmp_path: Path) -> None:
    from cnnlstm.export import export_run

    root = make_vqa(tmp_path / "v", n_train=12, n_test=6)
    run = tmp_path / "run"
    result = fit("vqa", data=f"vqa:{root}", overrides=TINY, out=run, verbose=False)
    stored = json.loads((run / WEIGHTS_FILE).read_text())
    gate = WordGate.from_json(stored["gate"])
    members = [load_weights(weights_path(run / "members" / str(k))).eval() for k in range(2)]

    # val/*: cross-fitted gates, by a hand loop over the folds the engine deals
    val = validation_probabilities(run, 2)
    refit = fit_word_gate(val.probs.double(), val.targets, val.presence.double())
    torch.testing.assert_close(refit.vectors, gate.vectors, atol=1e-6, rtol=0)
    crossed = cross_fitted_probabilities(val.probs.double(), val.targets, val.groups, seed=0,
                                         presence=val.presence.double())
    assert result.metrics["val/loss"] == pytest.approx(float(F.nll_loss(crossed.log(), val.targets)), rel=1e-5)
    mean_weights = gate.log_weights(val.presence.double()).exp().mean(0)
    assert [result.metrics[f"member{k}/weight"] for k in range(2)] == pytest.approx(mean_weights.tolist())

    # test/*: each test question's own mixture of the members, by hand
    bundle = load_dataset(f"vqa:{root}", image_size=32)
    test = bundle.collate_fn([bundle.test[i] for i in range(len(bundle.test))])
    inputs = {key: test[key] for key in members[0].input_names if key in test}
    with torch.no_grad():
        probs = torch.stack([m(**inputs).softmax(-1) for m in members]).double()  # (2, N, K)
    w = _hand_gate_weights(gate, test["sequence"])  # (N, 2)
    mixed = (w.T[:, :, None] * probs).sum(0)
    assert result.metrics["test/loss"] == pytest.approx(float(F.nll_loss(mixed.log(), test["y"])), rel=1e-4)
    assert result.metrics["test/acc"] == pytest.approx(float((mixed.argmax(1) == test["y"]).double().mean()))
    assert evaluate_run(run).metrics["test/loss"] == pytest.approx(result.metrics["test/loss"], rel=1e-6)
    report = export_run(run, formats=("onnx",))[0]  # one graph: members, gate and mixture; parity checked
    assert report.parity.passed, report.summary()

    del stored["gate"]  # a gated run that lost its gate is not silently weighed another way
    (run / WEIGHTS_FILE).write_text(json.dumps(stored))
    with pytest.raises(WeightsError, match="no gate"):
        evaluate_run(run)

