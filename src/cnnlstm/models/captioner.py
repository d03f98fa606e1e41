"""Show, Attend and Tell (Xu et al. 2015): an LSTM writes a caption while attending over CNN grid cells.

The CNN encoder turns an image into a grid of annotation vectors ``a_i`` (one per cell of its last feature map).
At each step the LSTM decoder scores every cell against its previous hidden state (additive attention),
takes the softmax-weighted context, scales it by a learned gate ``beta = sigmoid(f_beta(h))`` and feeds it,
with the previous word's embedding, to an ``LSTMCell``. The next word comes from the paper's deep output layer
``L_o(E y_{t-1} + L_h h_t + L_z z_t)``. The initial ``h`` and ``c`` are projections of the mean annotation.

Vocabulary convention (docs/architecture.md): ``<pad>=0``, ``<start>=1``, ``<end>=2``, ``<unk>=3``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.encoders import build_encoder
from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.checks import check_input, check_token_ids, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.decoding import beam_search
from cnnlstm.models._registry import register_model

__all__ = ["Captioner", "attention_regulariser", "PAD", "START", "END", "UNK"]

PAD, START, END, UNK = 0, 1, 2, 3


def attention_regulariser(attention: Tensor, mask: Tensor | None = None) -> Tensor:
    """Doubly stochastic attention penalty of Show-Attend-Tell: ``mean_b sum_i (1 - sum_t alpha_bti) ** 2``.

    It pushes the decoder to look at every grid cell about once over the caption. Add ``lambda`` times it to
    the loss (the paper uses ``lambda = 1``).

    Args:
        attention: attention weights from ``Captioner.forward(..., return_attention=True)``.
        mask: ``True`` on steps whose target is a real token (``captions[:, 1:] != PAD``); padded steps are
            left out of the sum over time. ``None``: all steps count.

    Shape:
        - attention: ``(B, L, P)``; mask: ``(B, L)`` bool; output: scalar.

    Example:
        >>> attention_regulariser(torch.full((2, 4, 4), 0.25))  # each cell gets exactly 1 in total
        tensor(0.)
    """
    if mask is not None:
        attention = attention * mask.unsqueeze(2).to(attention.dtype)  # (B, L, P), padded steps zeroed
    return ((1.0 - attention.sum(dim=1)) ** 2).sum(dim=1).mean()


@register_model("captioner")
class Captioner(nn.Module):
    """Image captioner with soft attention over the CNN grid (Show, Attend and Tell, Xu et al. 2015).

    Args:
        vocab_size: vocabulary size ``V`` including ``<pad>``, ``<start>``, ``<end>``, ``<unk>`` (at least 5).
        in_channels: image channels ``C``.
        encoder: encoder name for :func:`cnnlstm.encoders.build_encoder` (``"cnn"``, ``"timm:<name>"``).
        encoder_kwargs: extra encoder options (e.g. ``{"widths": (32, 64)}`` for the built-in CNN).
        pretrained: encoder weights: ``False``, ``True`` or a weights file.
        freeze: encoder stages to freeze: ``"none"``, ``"all"`` or N (train the last N stages).
        embedding_dim: word embedding size ``E``.
        hidden_size: LSTM units ``H``.
        attention_size: hidden size ``A`` of the additive attention MLP.
        dropout: dropout before the output layer.

    Shape:
        - images: ``(B, C, H, W)``.
        - captions: ``(B, L)`` int64, ``<start>`` first, padded with 0.
        - output: ``(B, L - 1, V)`` scores for ``captions[:, 1:]`` (teacher forcing).

    Example:
        >>> model = Captioner(vocab_size=20, encoder_kwargs={"widths": (8, 16)}, hidden_size=16)
        >>> captions = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
        >>> model(torch.rand(2, 3, 32, 32), captions).shape
        torch.Size([2, 3, 20])
        >>> len(model.eval().generate(torch.rand(2, 3, 32, 32), max_length=5, beam_size=3))
        2
    """

    input_names = ("images", "captions")
    output_kind = "caption_logits"
    supports_lengths = False

    def __init__(
        self,
        *,
        vocab_size: int,
        in_channels: int = 3,
        encoder: str = "cnn",
        encoder_kwargs: dict[str, Any] | None = None,
        pretrained: bool | str = False,
        freeze: str | int = "none",
        embedding_dim: int = 128,
        hidden_size: int = 256,
        attention_size: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        require_positive(
            "captioner", vocab_size=vocab_size, in_channels=in_channels, embedding_dim=embedding_dim,
            hidden_size=hidden_size, attention_size=attention_size,
        )
        require_dropout("captioner", dropout=dropout)
        if vocab_size <= UNK + 1:
            raise ConfigError(
                f"captioner: vocab_size counts <pad>, <start>, <end>, <unk> and the words, so it must be > 4, "
                f"got {vocab_size}"
            )
        self.encoder = build_encoder(
            encoder, in_channels=in_channels, pretrained=pretrained, freeze=freeze, **(encoder_kwargs or {})
        )
        D = self.encoder.grid_features
        self.vocab_size = self.num_classes = vocab_size
        self.in_channels = in_channels
        self.num_features = D

        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.init_h = nn.Linear(D, hidden_size)
        self.init_c = nn.Linear(D, hidden_size)
        # Additive attention e_ti = w^T tanh(W_a a_i + W_h h_t). One bias is enough, and the score's own bias
        # would cancel in the softmax (it would never get a gradient).
        self.attend_annotation = nn.Linear(D, attention_size)
        self.attend_hidden = nn.Linear(hidden_size, attention_size, bias=False)
        self.attend_score = nn.Linear(attention_size, 1, bias=False)
        self.gate = nn.Linear(hidden_size, 1)  # beta: how much of the context to let in this step
        self.cell = nn.LSTMCell(embedding_dim + D, hidden_size)
        # Deep output layer: L_o(E y_{t-1} + L_h h_t + L_z z_t).
        self.out_hidden = nn.Linear(hidden_size, embedding_dim)
        self.out_context = nn.Linear(D, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embedding_dim, vocab_size)

    # ------------------------------------------------------------------ checks
    def _check_images(self, images: Tensor) -> None:
        check_input(images, "B, C, H, W", "captioner", what="images", dtype=weights_dtype(self), C=self.in_channels)

    def _check_captions(self, captions: Tensor, batch_size: int) -> None:
        check_input(captions, "B, L", "captioner", what="captions", hint=" (one per image)", dtype=torch.long,
                    B=batch_size)
        if captions.shape[1] < 2:
            raise ShapeError(
                f"captioner expects captions (B, L) with L >= 2 (<start> and at least one target), "
                f"got {tuple(captions.shape)}"
            )
        check_token_ids(captions, self.vocab_size, "captioner", what="caption token ids")

    # ------------------------------------------------------------------ pieces
    def encode(self, images: Tensor) -> Tensor:
        """Annotation vectors, one per encoder grid cell.

        Shape:
            - images: ``(B, C, H, W)``; output: ``(B, P, D)`` with ``P = h * w`` cells of the encoder's grid.
        """
        self._check_images(images)
        grid = self.encoder.forward_grid(images)  # (B, D, h, w)
        return grid.flatten(2).transpose(1, 2)  # (B, P, D)

    def _initial_state(self, annotations: Tensor) -> tuple[Tensor, Tensor]:
        mean = annotations.mean(dim=1)  # (B, D)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, H) each

    def _step(
        self, embedded: Tensor, h: Tensor, c: Tensor, annotations: Tensor, keys: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One decoder step: attend with the previous ``h``, gate the context, update the LSTM.

        Shape:
            - embedded: ``(N, E)``; h, c: ``(N, H)``; annotations: ``(N, P, D)``; keys: ``(N, P, A)``.
            - returns h, c ``(N, H)``, gated context ``(N, D)``, attention ``(N, P)``.
        """
        energy = self.attend_score(torch.tanh(keys + self.attend_hidden(h).unsqueeze(1))).squeeze(2)  # (N, P)
        alpha = torch.softmax(energy, dim=1)  # (N, P)
        context = torch.bmm(alpha.unsqueeze(1), annotations).squeeze(1)  # (N, D)
        context = torch.sigmoid(self.gate(h)) * context  # (N, D)
        h, c = self.cell(torch.cat([embedded, context], dim=1), (h, c))  # (N, H) each
        return h, c, context, alpha

    def _output(self, embedded: Tensor, h: Tensor, context: Tensor) -> Tensor:
        """Deep output layer; works on any leading dims. ``(..., E), (..., H), (..., D) -> (..., V)``."""
        return self.out(self.dropout(embedded + self.out_hidden(h) + self.out_context(context)))

    # ------------------------------------------------------------------ contract
    def forward_features(self, images: Tensor, captions: Tensor | None = None) -> Tensor:
        """The mean annotation, the image summary the decoder's state starts from.

        ``captions`` is accepted and ignored, so a batch dict can be passed as is.

        Shape:
            - images: ``(B, C, H, W)``; output: ``(B, D)``.
        """
        return self.encode(images).mean(dim=1)  # (B, D)

    def forward_head(
        self, annotations: Tensor, captions: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced decoding from precomputed annotations (e.g. a feature cache of :meth:`encode`).

        The decoder attends over the whole grid, so its head takes the ``(B, P, D)`` annotations rather than
        the pooled :meth:`forward_features`.

        Shape:
            - annotations: ``(B, P, D)``; captions: ``(B, L)``.
            - output: ``(B, L - 1, V)``; attention ``(B, L - 1, P)`` when ``return_attention``.
        """
        check_input(
            annotations, "B, P, D", "captioner.forward_head", what="annotations", dtype=weights_dtype(self),
            D=self.num_features,
        )
        self._check_captions(captions, annotations.shape[0])
        return self._decode(annotations, captions, return_attention)

    def _decode(
        self, annotations: Tensor, captions: Tensor, return_attention: bool
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced decoding of checked inputs (see :meth:`forward_head`)."""
        embedded = self.embedding(captions[:, :-1])  # (B, L-1, E): the input words, <start> first
        keys = self.attend_annotation(annotations)  # (B, P, A), computed once for all steps
        h, c = self._initial_state(annotations)  # (B, H) each
        hiddens, contexts, alphas = [], [], []
        for t in range(embedded.shape[1]):
            h, c, context, alpha = self._step(embedded[:, t], h, c, annotations, keys)
            hiddens.append(h)
            contexts.append(context)
            alphas.append(alpha)
        # The output layer has no recurrence, so it runs once over all steps.
        logits = self._output(embedded, torch.stack(hiddens, dim=1), torch.stack(contexts, dim=1))  # (B, L-1, V)
        if return_attention:
            return logits, torch.stack(alphas, dim=1)  # (B, L-1, V), (B, L-1, P)
        return logits

    def forward(
        self, images: Tensor, captions: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Teacher-forced next-word scores.

        Args:
            images: the images to caption.
            captions: reference captions, ``<start>`` first, ``<end>`` then ``<pad>`` (0) after.
            return_attention: also return the attention weights (for plots and :func:`attention_regulariser`).

        Shape:
            - images: ``(B, C, H, W)``; captions: ``(B, L)`` int64.
            - output: ``(B, L - 1, V)`` scores for ``captions[:, 1:]``; attention ``(B, L - 1, P)`` (sums to 1
              over the ``P`` grid cells).
        """
        self._check_images(images)  # both checked before the encoder runs
        self._check_captions(captions, images.shape[0])
        return self._decode(self.encode(images), captions, return_attention)

    @torch.no_grad()
    def generate(
        self, images: Tensor, max_length: int = 20, beam_size: int = 1, length_penalty: float = 1.0
    ) -> list[list[int]]:
        """Caption images with beam search (greedy when ``beam_size=1``).

        Uses the model's current mode; call ``.eval()`` first. ``<pad>`` and ``<start>`` are never generated.

        Args:
            images: the images to caption.
            max_length: most words per caption; a caption that never reaches ``<end>`` has this many.
            beam_size: hypotheses kept per image.
            length_penalty: length-normalisation exponent (see :func:`cnnlstm.layers.decoding.beam_search`).

        Returns:
            One list of token ids per image, without ``<start>`` and ``<end>``.

        Shape:
            - images: ``(B, C, H, W)``.
        """
        annotations = self.encode(images)  # (B, P, D)
        h, c = self._initial_state(annotations)  # (B, H) each
        # Beams of one image share its annotations, and beam_search reorders rows only within an image, so the
        # expanded annotations and keys never need reordering.
        annotations = annotations.repeat_interleave(beam_size, dim=0)  # (B*K, P, D)
        keys = self.attend_annotation(annotations)  # (B*K, P, A)
        never = torch.tensor([PAD, START], device=images.device)

        def step(tokens: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
            embedded = self.embedding(tokens)  # (B*K, E)
            h, c, context, _ = self._step(embedded, *state, annotations, keys)
            logits = self._output(embedded, h, context).float()  # (B*K, V)
            logits.index_fill_(1, never, float("-inf"))
            return torch.log_softmax(logits, dim=1), (h, c)

        return beam_search(
            step,
            (h, c),
            batch_size=images.shape[0],
            start_index=START,
            end_index=END,
            beam_size=beam_size,
            max_length=max_length,
            length_penalty=length_penalty,
        )

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Random 32x32 images and captions of unequal lengths: ``<start> w.. <end> <pad>..``."""
        length = 6
        captions = torch.zeros(batch_size, length, dtype=torch.long)
        captions[:, 0] = START
        for b in range(batch_size):
            words = 1 + b % (length - 2)  # 1, 2, 3, 4, 1, ... words
            captions[b, 1 : 1 + words] = torch.randint(UNK + 1, self.vocab_size, (words,))
            captions[b, 1 + words] = END
        return {"images": torch.rand(batch_size, self.in_channels, 32, 32), "captions": captions}
