"""Word vocabularies for generated questions and captions: ``<pad>`` 0, ``<start>`` 1, ``<end>`` 2, ``<unk>`` 3."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["SPECIALS", "PAD", "START", "END", "UNK", "Vocabulary"]

SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
PAD, START, END, UNK = range(4)


class Vocabulary:
    """Index <-> word mapping with the library's special tokens first and the words sorted after them.

    Sorting makes the ids a function of the word set alone, so the same templates always give the same ids.

    Args:
        words: every word that can occur (duplicates are fine).

    Example:
        >>> vocab = Vocabulary("a red circle".split())
        >>> vocab.encode("a red circle", start_end=True).tolist()
        [1, 4, 6, 5, 2]
        >>> vocab.decode([1, 4, 6, 5, 2, 0])
        'a red circle'
    """

    def __init__(self, words: Iterable[str]) -> None:
        self.itos: list[str] = [*SPECIALS, *sorted(set(words) - set(SPECIALS))]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_itos(cls, itos: Sequence[str]) -> Vocabulary:
        """The vocabulary whose index -> word list is ``itos`` (as stored in ``info.extras["vocab"]``).

        Raises:
            ValueError: ``itos`` is not in this class's order (specials, then the words sorted).
        """
        vocab = cls(itos)
        if vocab.itos != list(itos):
            raise ValueError("a vocabulary must list <pad> <start> <end> <unk> first, then its words sorted")
        return vocab

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str | Sequence[str], *, start_end: bool = False) -> Tensor:
        """Token ids of ``text`` (a space-separated string or a word list); unknown words map to ``<unk>``.

        Shape:
            - returns (L,) int64, L = words (+2 with ``start_end``).
        """
        words = text.split() if isinstance(text, str) else list(text)
        ids = [self.stoi.get(w, UNK) for w in words]
        if start_end:
            ids = [START, *ids, END]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int] | Tensor) -> str:
        """The words of ``ids`` up to the first ``<end>``, without special tokens."""
        words = []
        for i in ids.tolist() if isinstance(ids, Tensor) else ids:
            if i == END:
                break
            if i >= len(SPECIALS):
                words.append(self.itos[i])
        return " ".join(words)
