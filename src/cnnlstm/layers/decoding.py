"""Decoding: CTC outputs to label sequences, and beam search for autoregressive decoders.

Two kinds of model produce sequences here:

- **CTC models** (CRNN) score every input column at once, ``(B, T, K)`` with the blank at index ``blank``. A
  labelling is read off by collapsing repeated labels and dropping blanks. :func:`ctc_greedy_decode` takes the
  best path; :func:`ctc_beam_search` runs the prefix beam search of Hannun et al. (2014), which sums the
  probability of every path that collapses to the same labelling and so finds labellings the best path misses.
- **Autoregressive decoders** (the captioner) emit one token per step, fed back as the next input.
  :func:`beam_search` keeps ``beam_size`` hypotheses per sample, folded into the batch dimension so each step is
  one batched call of the decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cnnlstm.errors import ConfigError, ShapeError

__all__ = ["ctc_greedy_decode", "ctc_prefix_beam_search", "ctc_beam_search", "beam_search"]

_NEG_INF = float("-inf")


def _check_ctc_inputs(log_probs: Tensor, input_lengths: Tensor | None, blank: int, owner: str) -> list[int]:
    """Validate CTC decoder inputs; return each sequence's number of valid steps as a Python list."""
    if not isinstance(log_probs, Tensor) or log_probs.dim() != 3:
        shape = tuple(log_probs.shape) if isinstance(log_probs, Tensor) else type(log_probs).__name__
        raise ShapeError(f"{owner} expects log_probs (B, T, K), got {shape}")
    B, T, K = log_probs.shape
    if not 0 <= blank < K:
        raise ConfigError(f"{owner}: blank={blank} is not a class index of log_probs with K={K} classes")
    if input_lengths is None:
        return [T] * B
    if not isinstance(input_lengths, Tensor) or tuple(input_lengths.shape) != (B,):
        shape = tuple(input_lengths.shape) if isinstance(input_lengths, Tensor) else type(input_lengths).__name__
        raise ShapeError(f"{owner} expects input_lengths of shape ({B},), one per sequence, got {shape}")
    if input_lengths.dtype.is_floating_point or input_lengths.dtype == torch.bool:
        raise ShapeError(f"{owner} expects integer input_lengths, got {input_lengths.dtype}")
    lengths = input_lengths.tolist()
    if any(not 0 <= n <= T for n in lengths):
        raise ShapeError(f"{owner}: input_lengths must lie in [0, {T}] (T of log_probs), got {lengths}")
    return lengths


def ctc_greedy_decode(log_probs: Tensor, input_lengths: Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path CTC decoding: the most probable label per step, repeats collapsed, blanks dropped.

    Args:
        log_probs: per-step class scores; log-probabilities or raw logits (the argmax is the same).
        input_lengths: number of valid steps per sequence; steps past it are ignored. ``None``: all ``T``.
        blank: index of the CTC blank.

    Returns:
        One list of label indices per sequence (blank never appears).

    Shape:
        - log_probs: ``(B, T, K)``.
        - input_lengths: ``(B,)`` integer, each in ``[0, T]``.

    Example:
        >>> # best path "a a - a b" (a=1, b=2, blank=0) reads "aab"
        >>> path = torch.tensor([[1, 1, 0, 1, 2]])
        >>> ctc_greedy_decode(torch.nn.functional.one_hot(path, 3).float().log())
        [[1, 1, 2]]
    """
    lengths = _check_ctc_inputs(log_probs, input_lengths, blank, "ctc_greedy_decode")
    best = log_probs.argmax(dim=-1)  # (B, T)
    previous = torch.nn.functional.pad(best[:, :-1], (1, 0), value=blank)  # (B, T), label at t-1 (blank before t=0)
    keep = (best != blank) & (best != previous)  # (B, T): a new label starts here
    best, keep = best.tolist(), keep.tolist()  # one device-to-host copy for the whole batch
    return [[k for k, s in zip(best[b][:n], keep[b][:n], strict=True) if s] for b, n in enumerate(lengths)]


def ctc_prefix_beam_search(log_probs: Tensor, beam_size: int = 8, blank: int = 0) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over one sequence (Hannun et al. 2014), in log space.

    Each prefix (a collapsed labelling so far) carries two probabilities: that of all paths reaching it and
    ending in a blank, and that of all paths ending in its last label. Keeping them apart is what makes
    ``"a-a"`` (two labels) and ``"aa"`` (one label) different extensions. Scores of every path that collapses
    to the same prefix are summed, so the result approximates the most probable *labelling*, not the most
    probable path; with ``beam_size`` at least the number of distinct prefixes it is exact.

    Work per step is vectorised over the ``K`` classes; the loop runs over the ``T`` steps.

    Args:
        log_probs: per-step scores of one sequence. They are passed through ``log_softmax``, which leaves
            log-probabilities unchanged, so raw logits are accepted too.
        beam_size: number of prefixes kept after each step.
        blank: index of the CTC blank.

    Returns:
        Up to ``beam_size`` pairs ``(labels, log_probability)``, best first.

    Shape:
        - log_probs: ``(T, K)``.

    Example:
        >>> lp = torch.tensor([[0.4, 0.6], [0.4, 0.6]]).log()  # best path "aa" -> "a"
        >>> labels, score = ctc_prefix_beam_search(lp, beam_size=4)[0]
        >>> labels, round(score, 3)  # "a" collects paths aa, a-, -a: log(0.36 + 0.24 + 0.24)
        ([1], -0.174)
    """
    if log_probs.dim() != 2:
        raise ShapeError(
            f"ctc_prefix_beam_search expects log_probs (T, K) of one sequence, got {tuple(log_probs.shape)}"
        )
    if beam_size < 1:
        raise ConfigError(f"ctc_prefix_beam_search: beam_size must be >= 1, got {beam_size}")
    T, K = log_probs.shape
    if not 0 <= blank < K:
        raise ConfigError(f"ctc_prefix_beam_search: blank={blank} is not a class index of K={K} classes")
    # float64 on the CPU: the loop does many tiny ops, and long sums of log-probabilities want the precision.
    lp = torch.log_softmax(log_probs.detach().to("cpu", torch.float64), dim=-1)  # (T, K)

    prefixes: list[tuple[int, ...]] = [()]
    p_blank = torch.zeros(1, dtype=torch.float64)  # (P,) log P(paths reaching the prefix, ending in blank)
    p_label = torch.full((1,), _NEG_INF, dtype=torch.float64)  # (P,) ... ending in the prefix's last label
    for t in range(T):
        row = lp[t]  # (K,)
        total = torch.logaddexp(p_blank, p_label)  # (P,)
        has_last = torch.tensor([len(p) > 0 for p in prefixes])  # (P,)
        last = torch.tensor([p[-1] if p else blank for p in prefixes])  # (P,)
        rows = has_last.nonzero().squeeze(1)  # prefixes with a last label

        # The prefix stays the same: emit a blank, or repeat its last label (which collapses into it).
        stay_blank = total + row[blank]  # (P,)
        stay_label = torch.full_like(total, _NEG_INF)  # (P,)
        stay_label[rows] = p_label[rows] + row[last[rows]]

        # The prefix grows by label k from any path, except that repeating the last label needs a blank between.
        grow = total.unsqueeze(1) + row.unsqueeze(0)  # (P, K)
        grow[rows, last[rows]] = p_blank[rows] + row[last[rows]]
        grow[:, blank] = _NEG_INF

        # A grown prefix that is already in the beam merges into it rather than becoming a duplicate.
        index = {p: i for i, p in enumerate(prefixes)}
        for i, p in enumerate(prefixes):
            parent = index.get(p[:-1]) if p else None
            if parent is not None:
                stay_label[i] = torch.logaddexp(stay_label[i], grow[parent, p[-1]])
                grow[parent, p[-1]] = _NEG_INF

        # Every other grown prefix has a single parent, so its score is final: only the top beam_size can survive.
        grow_scores, grow_flat = grow.flatten().topk(min(beam_size, grow.numel()))  # (G,)
        alive = torch.isfinite(grow_scores)
        grow_scores, grow_flat = grow_scores[alive], grow_flat[alive].tolist()
        candidates = prefixes + [prefixes[f // K] + (f % K,) for f in grow_flat]
        cand_blank = torch.cat([stay_blank, torch.full_like(grow_scores, _NEG_INF)])  # (P+G,)
        cand_label = torch.cat([stay_label, grow_scores])  # (P+G,)
        top = torch.logaddexp(cand_blank, cand_label).topk(min(beam_size, len(candidates))).indices  # (P',)
        prefixes = [candidates[i] for i in top.tolist()]
        p_blank, p_label = cand_blank[top], cand_label[top]

    total = torch.logaddexp(p_blank, p_label)  # (P,)
    order = total.argsort(descending=True, stable=True).tolist()
    return [(list(prefixes[i]), float(total[i])) for i in order]


def ctc_beam_search(
    log_probs: Tensor, input_lengths: Tensor | None = None, beam_size: int = 8, blank: int = 0
) -> list[list[int]]:
    """CTC prefix beam search over a batch: the best labelling of each sequence.

    Runs :func:`ctc_prefix_beam_search` on each sequence, truncated to its length.

    Args:
        log_probs: per-step scores (log-probabilities or raw logits, normalised with ``log_softmax``).
        input_lengths: number of valid steps per sequence; ``None``: all ``T``.
        beam_size: prefixes kept per step; 1 gives a greedy prefix search (close to, not always equal to, the
            best path, because it still sums paths).
        blank: index of the CTC blank.

    Returns:
        One list of label indices per sequence.

    Shape:
        - log_probs: ``(B, T, K)``.
        - input_lengths: ``(B,)`` integer, each in ``[0, T]``.

    Example:
        >>> # best path "--" (p=0.36) reads "", but "a" (0.64 over aa, a-, -a) is more probable
        >>> lp = torch.tensor([[[0.6, 0.4], [0.6, 0.4]]]).log()
        >>> ctc_greedy_decode(lp), ctc_beam_search(lp, beam_size=4)
        ([[]], [[1]])
    """
    lengths = _check_ctc_inputs(log_probs, input_lengths, blank, "ctc_beam_search")
    return [ctc_prefix_beam_search(log_probs[b, :n], beam_size, blank)[0][0] for b, n in enumerate(lengths)]


State = Any  # a Tensor, None, or a (nested) tuple / list / dict of them, batch dimension first


def _map_state(state: State, fn: Callable[[Tensor], Tensor]) -> State:
    """Apply ``fn`` to every tensor in a (nested) state; other leaves pass through unchanged."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: _map_state(v, fn) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(v, fn) for v in state)
    return state


def _first_tensor(state: State) -> Tensor | None:
    found: list[Tensor] = []
    _map_state(state, lambda s: found.append(s) or s)
    return found[0] if found else None


def beam_search(
    step_fn: Callable[[Tensor, State], tuple[Tensor, State]],
    initial_state: State,
    *,
    batch_size: int,
    start_index: int,
    end_index: int,
    beam_size: int = 4,
    max_length: int = 20,
    length_penalty: float = 1.0,
    device: torch.device | str | None = None,
) -> list[list[int]]:
    """Batched beam search for an autoregressive decoder.

    The ``beam_size`` hypotheses of each sample are folded into the batch: row ``b * beam_size + k`` of every
    tensor that ``step_fn`` sees is hypothesis ``k`` of sample ``b``. Before the first step each row of
    ``initial_state`` is repeated ``beam_size`` times (``repeat_interleave``); after each step the state rows are
    reordered with ``index_select`` on dim 0 so that row ``b * beam_size + k`` follows the hypothesis now in slot
    ``k``. Reordering never moves a row to another sample, so per-sample constants the step function closes over
    (e.g. encoder features expanded once with ``repeat_interleave(beam_size, 0)``) stay valid without reordering.

    Each step takes the ``2 * beam_size`` best continuations of each sample. Those that emit ``end_index`` and
    rank within the first ``beam_size`` are finished (kept apart, scored with length normalisation); the best
    ``beam_size`` others carry on. A sample stops once it has ``beam_size`` finished hypotheses (as in fairseq),
    so ``beam_size=1`` is exactly greedy decoding. The answer is the finished hypothesis with the best
    normalised score ``sum(log p) / length ** length_penalty`` (``length`` counts the ``<end>`` step). If a
    sample has no finished hypothesis after ``max_length`` steps, its best unfinished one (``max_length``
    tokens) is returned instead.

    Args:
        step_fn: ``step_fn(tokens, state) -> (log_probs, new_state)``: the previous token of every row and the
            decoder state, to the log-probabilities of the next token and the new state.
        initial_state: decoder state for the ``batch_size`` samples: a tensor, ``None``, or a (nested)
            tuple / list / dict of tensors, each with the batch dimension first. Non-tensor leaves are passed
            through unchanged.
        batch_size: number of samples ``B``.
        start_index: token fed at the first step (``<start>``).
        end_index: token that ends a hypothesis (``<end>``); it is not included in the result.
        beam_size: hypotheses kept per sample.
        max_length: most decoding steps; a hypothesis has at most ``max_length`` tokens.
        length_penalty: exponent ``alpha`` of the length normalisation; 0 ranks by total log-probability, which
            favours short outputs; 1 ranks by mean log-probability per token.
        device: device of the token tensors; default: that of the first tensor in ``initial_state``, else CPU.

    Returns:
        One list of token ids per sample, without ``<start>`` or ``<end>``.

    Shape:
        - tokens passed to ``step_fn``: ``(B * beam_size,)`` int64.
        - log_probs returned by ``step_fn``: ``(B * beam_size, V)``.
        - state tensors: ``(B, ...)`` in ``initial_state``, ``(B * beam_size, ...)`` in ``step_fn``.

    Example:
        >>> table = torch.tensor([[-9.0, -9.0, -1.0, -0.5], [-9.0, -0.1, -9.0, -3.0]])  # bigram: row = prev token
        >>> def step(tokens, state):
        ...     return table[(tokens == 3).long()], state  # after token 3, <end>=1 is likely
        >>> beam_search(step, None, batch_size=1, start_index=0, end_index=1, beam_size=2, max_length=5)
        [[3]]
    """
    if batch_size < 1 or beam_size < 1 or max_length < 1:
        raise ConfigError(
            f"beam_search needs batch_size, beam_size and max_length >= 1, got {batch_size}, {beam_size}, {max_length}"
        )
    if device is None:
        first = _first_tensor(initial_state)
        device = first.device if first is not None else torch.device("cpu")
    B, K = batch_size, beam_size
    N = B * K

    def check_rows(s: Tensor) -> Tensor:
        if s.dim() == 0 or s.shape[0] != B:
            raise ShapeError(
                f"beam_search expects state tensors with batch dimension first (B={B}, ...), got {tuple(s.shape)}"
            )
        return s.repeat_interleave(K, dim=0)  # (B*K, ...)

    state = _map_state(initial_state, check_rows)
    tokens = torch.full((N,), start_index, dtype=torch.long, device=device)  # (N,)
    # Only slot 0 is alive at first, so the first step does not fill the beam with K copies of one hypothesis.
    scores = torch.full((B, K), _NEG_INF, device=device)  # (B, K) total log-probability of each hypothesis
    scores[:, 0] = 0.0
    history = torch.empty((B, K, 0), dtype=torch.long, device=device)  # (B, K, t) tokens so far
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    offsets = torch.arange(B, device=device).unsqueeze(1) * K  # (B, 1) first row of each sample

    for step in range(max_length):
        log_probs, state = step_fn(tokens, state)  # (N, V)
        if log_probs.dim() != 2 or log_probs.shape[0] != N:
            raise ShapeError(
                f"beam_search: step_fn must return log_probs (B*beam_size={N}, V), got {tuple(log_probs.shape)}"
            )
        V = log_probs.shape[1]
        if not 0 <= end_index < V:
            raise ConfigError(f"beam_search: end_index={end_index} is not a token of the V={V} step_fn scores")
        candidates = scores.unsqueeze(2) + log_probs.view(B, K, V).to(scores.dtype)  # (B, K, V)
        top_scores, top_flat = candidates.view(B, K * V).topk(min(2 * K, K * V), dim=1)  # (B, 2K)
        top_slot, top_token = top_flat // V, top_flat % V  # (B, 2K) each
        is_end = top_token == end_index  # (B, 2K)

        # Finish the <end> continuations that rank among the best K (one host sync per step).
        ending = is_end[:, :K] & torch.isfinite(top_scores[:, :K])  # (B, K)
        if bool(ending.any()):
            norm = float(step + 1) ** length_penalty
            for b, r in ending.nonzero().tolist():
                if not done[b]:
                    slot = int(top_slot[b, r])
                    finished[b].append((float(top_scores[b, r]) / norm, history[b, slot].tolist()))
            done = [d or len(f) >= K for d, f in zip(done, finished, strict=True)]
            if all(done):
                break

        # Carry on with the best K continuations that did not end (at most K of the 2K did, so K remain).
        keep = torch.sort(is_end.to(torch.uint8), dim=1, stable=True).indices[:, :K]  # (B, K), score order kept
        scores = top_scores.gather(1, keep)  # (B, K)
        slot = top_slot.gather(1, keep)  # (B, K)
        new_token = top_token.gather(1, keep)  # (B, K)
        history = torch.cat(
            [history.gather(1, slot.unsqueeze(2).expand(-1, -1, history.shape[2])), new_token.unsqueeze(2)], dim=2
        )  # (B, K, t+1)
        rows = (offsets + slot).flatten()  # (N,) the row each new hypothesis came from
        state = _map_state(state, lambda s, rows=rows: s.index_select(0, rows))
        tokens = new_token.flatten()  # (N,)

    results = []
    for b in range(B):
        if finished[b]:
            results.append(max(finished[b], key=lambda f: f[0])[1])
        else:
            # No <end> within max_length: slot 0 is the best unfinished hypothesis (slots are in score order,
            # and all share one length, so normalisation does not change the ranking).
            results.append(history[b, 0].tolist())
    return results
