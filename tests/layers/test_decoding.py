"""CTC decoders and the autoregressive beam search, checked against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.decoding import beam_search, ctc_beam_search, ctc_greedy_decode, ctc_prefix_beam_search


def _collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, previous = [], None
    for k in path:
        if k != previous and k != blank:
            out.append(k)
        previous = k
    return tuple(out)


def _labelling_probs(probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """P(labelling) by summing the probability of every path of a (T, K) table that collapses to it."""
    T, K = probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(K), repeat=T):
        p = math.prod(float(probs[t, k]) for t, k in enumerate(path))
        label = _collapse(path)
        totals[label] = totals.get(label, 0.0) + p
    return totals


# The classic table where the best path ("--", p=0.36, reads "") is not the best labelling ("a", p=0.64).
CLASSIC = torch.tensor([[0.6, 0.4], [0.6, 0.4]])


def test_classic_table_best_path_differs_from_best_labelling() -> None:
    truth = _labelling_probs(CLASSIC)
    assert max(truth, key=truth.get) == (1,)
    log_probs = CLASSIC.log().unsqueeze(0)  # (1, T, K)
    assert ctc_greedy_decode(log_probs) == [[]]
    assert ctc_beam_search(log_probs, beam_size=4) == [[1]]


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_matches_brute_force_labelling_probabilities(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    T, K = 4, 3
    probs = torch.softmax(2.0 * torch.randn(T, K, generator=gen, dtype=torch.float64), dim=-1)
    truth = _labelling_probs(probs)
    # A beam wider than the number of distinct prefixes makes the search exact.
    nbest = ctc_prefix_beam_search(probs.log(), beam_size=64)
    assert nbest[0][0] == list(max(truth, key=truth.get))
    for labels, score in nbest:
        assert math.isclose(math.exp(score), truth[tuple(labels)], rel_tol=1e-9)
    assert math.isclose(sum(math.exp(s) for _, s in nbest), 1.0, rel_tol=1e-9)  # every labelling was kept


def test_prefix_beam_search_accepts_raw_logits() -> None:
    logits = torch.randn(5, 4)
    a = ctc_prefix_beam_search(logits, beam_size=3)
    b = ctc_prefix_beam_search(torch.log_softmax(logits, -1), beam_size=3)
    assert [x for x, _ in a] == [x for x, _ in b]


def _one_hot_log(paths: list[list[int]], K: int) -> torch.Tensor:
    probs = torch.nn.functional.one_hot(torch.tensor(paths), K).float() * 0.9 + 0.1 / K  # (B, T, K)
    return probs.log()


def test_repeats_separated_by_blank_stay_apart() -> None:
    log_probs = _one_hot_log([[1, 0, 1], [1, 1, 1], [2, 1, 1]], K=3)  # "a-a", "aaa", "baa"
    assert ctc_greedy_decode(log_probs) == [[1, 1], [1], [2, 1]]
    assert ctc_beam_search(log_probs, beam_size=4) == [[1, 1], [1], [2, 1]]


def test_input_lengths_truncate_each_sequence() -> None:
    log_probs = _one_hot_log([[1, 2, 1, 2], [2, 0, 2, 1]], K=3)
    lengths = torch.tensor([2, 3])
    assert ctc_greedy_decode(log_probs, lengths) == [[1, 2], [2, 2]]
    assert ctc_beam_search(log_probs, lengths, beam_size=4) == [[1, 2], [2, 2]]
    assert ctc_greedy_decode(log_probs, torch.tensor([0, 4])) == [[], [2, 2, 1]]


def test_non_zero_blank_index() -> None:
    log_probs = _one_hot_log([[0, 2, 0]], K=3)  # blank=2: "a-a"
    assert ctc_greedy_decode(log_probs, blank=2) == [[0, 0]]
    assert ctc_beam_search(log_probs, blank=2) == [[0, 0]]


def test_ctc_decoders_reject_bad_inputs() -> None:
    with pytest.raises(ShapeError, match=r"\(B, T, K\)"):
        ctc_greedy_decode(torch.zeros(3, 4))
    with pytest.raises(ShapeError, match="input_lengths"):
        ctc_beam_search(torch.zeros(2, 3, 4), torch.tensor([3]))
    with pytest.raises(ShapeError, match=r"\[0, 3\]"):
        ctc_greedy_decode(torch.zeros(2, 3, 4), torch.tensor([3, 4]))
    with pytest.raises(ConfigError, match="blank"):
        ctc_greedy_decode(torch.zeros(2, 3, 4), blank=4)


# ---------------------------------------------------------------------------------------------------------------
# Autoregressive beam search. A bigram "decoder": the next-token distribution depends on the previous token only,
# with a different table per sample; the state counts steps so that reordering is exercised and checked.
START, END, V = 0, 1, 5


def _bigram_tables(batch_size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    tables = torch.log_softmax(1.5 * torch.randn(batch_size, V, V, generator=gen), dim=-1)  # (B, prev, next)
    tables[..., START] = -math.inf  # <start> is never generated
    return torch.log_softmax(tables, dim=-1)


def _bigram_step(tables: torch.Tensor, beam_size: int):
    sample = torch.arange(tables.shape[0]).repeat_interleave(beam_size)  # (N,) row -> sample

    def step(tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        # The state carries each row's sample id: reordering must never move a row to another sample.
        assert torch.equal(state["sample"], sample)
        return tables[state["sample"], tokens], {"sample": state["sample"], "steps": state["steps"] + 1}

    initial = {"sample": torch.arange(tables.shape[0]), "steps": torch.zeros(tables.shape[0])}
    return step, initial


def _greedy(table: torch.Tensor, max_length: int) -> list[int]:
    out, prev = [], START
    for _ in range(max_length):
        prev = int(table[prev].argmax())
        if prev == END:
            break
        out.append(prev)
    return out


def _brute_force_best(table: torch.Tensor, max_length: int, alpha: float) -> list[int]:
    """Best normalised score over every sequence that ends with <end> within max_length steps."""
    best, best_score = None, -math.inf
    for n in range(max_length):
        for words in itertools.product(range(2, V), repeat=n):
            seq = (START, *words, END)
            total = sum(float(table[a, b]) for a, b in itertools.pairwise(seq))
            score = total / (n + 1) ** alpha
            if score > best_score:
                best, best_score = list(words), score
    return best


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_one_equals_greedy(length_penalty: float) -> None:
    tables = _bigram_tables(4, seed=1)
    step, initial = _bigram_step(tables, beam_size=1)
    out = beam_search(step, initial, batch_size=4, start_index=START, end_index=END, beam_size=1, max_length=6,
                      length_penalty=length_penalty)
    assert out == [_greedy(t, 6) for t in tables]


@pytest.mark.parametrize("length_penalty", [0.0, 0.7, 1.0])
def test_wide_beam_finds_the_brute_force_best(length_penalty: float) -> None:
    B, max_length, beam = 3, 4, 32  # 3 words, <= 3 of them before <end>: 40 sequences, all fit in the beam
    tables = _bigram_tables(B, seed=2)
    step, initial = _bigram_step(tables, beam_size=beam)
    out = beam_search(step, initial, batch_size=B, start_index=START, end_index=END, beam_size=beam,
                      max_length=max_length, length_penalty=length_penalty)
    assert out == [_brute_force_best(t, max_length, length_penalty) for t in tables]


def test_beam_beats_greedy_on_a_garden_path() -> None:
    # Greedy takes word 2 (p=0.6) but then has only bad continuations; beam 2 finds 3 -> <end>.
    table = torch.full((V, V), -20.0)
    table[START, 2], table[START, 3] = math.log(0.6), math.log(0.4)
    table[2, 4], table[2, END] = math.log(0.5), math.log(0.5)  # 2 then a coin flip
    table[3, END] = 0.0  # 3 then surely <end>
    table[4, END] = 0.0
    kwargs = dict(batch_size=1, start_index=START, end_index=END, max_length=5, length_penalty=0.0)
    step, initial = _bigram_step(table.unsqueeze(0), beam_size=1)
    assert beam_search(step, initial, beam_size=1, **kwargs) == [[2]]  # p = 0.3
    step, initial = _bigram_step(table.unsqueeze(0), beam_size=2)
    assert beam_search(step, initial, beam_size=2, **kwargs) == [[3]]  # p = 0.4


@pytest.mark.parametrize("beam", [1, 3])
def test_no_end_within_max_length_returns_a_max_length_hypothesis(beam: int) -> None:
    tables = _bigram_tables(2, seed=3)
    tables[..., END] = -math.inf  # <end> is impossible
    step, initial = _bigram_step(tables, beam_size=beam)
    out = beam_search(step, initial, batch_size=2, start_index=START, end_index=END, beam_size=beam, max_length=5)
    assert [len(x) for x in out] == [5, 5]
    assert all(END not in x and START not in x for x in out)
    if beam == 1:
        assert out == [[int(t[p].argmax()) for p in [START] + x[:-1]] for t, x in zip(tables, out, strict=True)]


def test_state_is_reordered_with_its_hypothesis() -> None:
    """A trigram decoder keeps the token before the previous one in its state: only a correct reorder of the
    state rows after each step lets a wide beam find the brute-force best sequence."""
    B, beam, max_length = 2, 32, 4
    gen = torch.Generator().manual_seed(5)
    tables = 2.0 * torch.randn(B, V, V, V, generator=gen)  # (B, prev2, prev, next)
    tables[..., START] = -math.inf  # <start> is never generated
    tables = torch.log_softmax(tables, dim=-1)
    sample = torch.arange(B).repeat_interleave(beam)  # (N,)

    def step(tokens, state):
        before_previous, _ = state
        return tables[sample, before_previous, tokens], (tokens, state[1] + 1)

    initial = (torch.full((B,), START), torch.zeros(B, 1))  # a tuple state; the second entry just rides along
    out = beam_search(step, initial, batch_size=B, start_index=START, end_index=END, beam_size=beam,
                      max_length=max_length, length_penalty=0.0)

    def score(table, words):
        seq = (START, START, *words, END)
        return sum(float(table[a, b, c]) for a, b, c in zip(seq, seq[1:], seq[2:], strict=False))

    for table, got in zip(tables, out, strict=True):
        candidates = [list(w) for n in range(max_length) for w in itertools.product(range(2, V), repeat=n)]
        assert got == max(candidates, key=lambda w: score(table, w))


def test_beam_search_rejects_bad_arguments() -> None:
    step, initial = _bigram_step(_bigram_tables(1, seed=0), beam_size=2)
    with pytest.raises(ConfigError, match="beam_size"):
        beam_search(step, initial, batch_size=1, start_index=START, end_index=END, beam_size=0)
    with pytest.raises(ShapeError, match="batch dimension first"):
        beam_search(step, {"sample": torch.zeros(3)}, batch_size=1, start_index=START, end_index=END, beam_size=2)
    with pytest.raises(ConfigError, match="end_index"):
        beam_search(step, initial, batch_size=1, start_index=START, end_index=V, beam_size=2)
