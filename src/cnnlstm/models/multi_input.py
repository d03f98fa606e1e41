"""Image + sequence classifier (pattern 3): a CNN branch, an LSTM branch, a fusion layer and an MLP head.

The sequence is either token ids (a question, VQA-style; Antol et al. 2015) or a numeric series. With
``fusion="film"``, ``"cross_attention"`` or ``"relation"`` the image enters the fusion as its spatial grid, so
the question can select and compare image regions (relational questions, Sort-of-CLEVR; Santoro et al. 2017);
the other modes fuse the pooled image vector.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from cnnlstm.encoders import build_encoder
from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.checks import (
    check_input,
    check_token_ids,
    require_dropout,
    require_non_negative,
    require_positive,
    weights_dtype,
)
from cnnlstm.layers.fusion import SPATIAL_FUSION_MODES, Fusion
from cnnlstm.layers.masking import check_lengths
from cnnlstm.layers.recurrent import SequenceLSTM
from cnnlstm.models._registry import register_model
from cnnlstm.models.frame_lstm import as_image_size, check_trainable_stages_are_read, example_lengths

__all__ = ["MultiInput"]

IMAGE_FEATURES = ("auto", "pooled", "grid")
#: hidden colour features per pixel that ``condition_input``'s question-written output layer reads
PIXEL_FEATURES = 16


@register_model("multi_input")
class MultiInput(nn.Module):
    """Image branch (CNN) + sequence branch (LSTM over tokens or a series) -> fusion -> MLP head.

    Args:
        num_classes: number of classes (answers) ``K``.
        in_channels: image channels ``C``.
        encoder: encoder name for :func:`cnnlstm.encoders.build_encoder`.
        encoder_kwargs: extra encoder arguments.
        pretrained: ``False``, ``True`` (timm hub) or a weights file path.
        freeze: ``"none"``, ``"all"`` or N (all but the last N encoder stages).
        vocab_size: token vocabulary size (index 0 is padding); the sequence is ``(B, L)`` int64 ids.
        sequence_features: features per step ``F`` of a numeric sequence ``(B, L, F)``. Give exactly one of
            ``vocab_size`` and ``sequence_features``.
        embedding_dim: token embedding size (with ``vocab_size``).
        hidden_size: LSTM hidden size ``H``.
        num_layers: stacked LSTM layers.
        bidirectional: bidirectional LSTM (sequence vector ``2 H``).
        dropout: dropout between LSTM layers and in the head.
        fusion: fusion mode, one of :data:`~cnnlstm.layers.fusion.FUSION_MODES`.
        fusion_size: fused width (``out_size`` of :class:`~cnnlstm.layers.fusion.Fusion`).
        fusion_kwargs: mode options (``rank``, ``num_blocks``, ``pool``, ``num_heads``, ``num_hops``, ``g_size``,
            ``g_layers``, ``f_layers``).
        image_features: ``"auto"`` (grid for the spatial modes ``film``/``cross_attention``/``relation``, pooled
            otherwise), ``"pooled"`` or ``"grid"``.
        feature_stage: the encoder stage whose map is the grid (timm ``feature_info`` order, ``-1`` the last; grid
            image features only). An earlier stage keeps more positions (a 64x64 image is an 8x8 map at
            EfficientNet-Lite0's stage 2, 2x2 at its last) and computes no later stage: with a frozen pretrained
            encoder, colour and shape come from ImageNet features instead of a few hundred training images.
        head_hidden_size: width of the MLP head's hidden layer; 0 for a linear head.
        image_size: image size ``H`` or ``(H, W)`` used by :meth:`example_input`.
        condition_stages: how many of the CNN's first stages the question modulates (FiLM after each stage's
            batch norm, as conditional batch norm, de Vries et al. 2017; the built-in ``cnn`` encoder only). The
            question can then pick colours and parts at full resolution, before pooling mixes objects; the CNN
            runs once per question instead of once per image. 0 (default) keeps the image branch unconditioned.
        condition_input: how many question-picked pixel masks to append to the image before the CNN (the built-in
            ``cnn`` encoder only): a per-pixel MLP of the colour values whose output layer the question writes
            (a dynamic 1x1 convolution), ``sigmoid(W(q) relu(A x + a) + b(q))``, so a question's colour word
            selects its pixels directly ("the tan object"). Zero-initialised: the masks start at 0.5 everywhere.
            The CNN then runs once per question. 0 (default) appends none.

    Shape:
        - image: ``(B, C, H, W)``; sequence: ``(B, L)`` int64 or ``(B, L, F)`` float, zero-padded;
          lengths: ``(B,)`` int64 valid steps, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> model = MultiInput(num_classes=5, vocab_size=20, fusion="film", encoder_kwargs={"widths": (8, 16)})
        >>> model(**model.example_input()).shape
        torch.Size([2, 5])
    """

    input_names = ("image", "sequence", "lengths", "image_id")
    output_kind = "logits"
    supports_lengths = True

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        encoder: str = "cnn",
        encoder_kwargs: dict[str, Any] | None = None,
        pretrained: bool | str = False,
        freeze: str | int = "none",
        vocab_size: int | None = None,
        sequence_features: int | None = None,
        embedding_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        fusion: str = "concat",
        fusion_size: int | None = None,
        fusion_kwargs: dict[str, Any] | None = None,
        image_features: str = "auto",
        feature_stage: int = -1,
        head_hidden_size: int = 256,
        image_size: int | tuple[int, int] = 32,
        condition_stages: int = 0,
        condition_input: int = 0,
    ) -> None:
        super().__init__()
        require_positive(
            "multi_input", num_classes=num_classes, in_channels=in_channels, embedding_dim=embedding_dim,
            hidden_size=hidden_size, num_layers=num_layers,
        )
        require_positive(
            "multi_input", allow_none=True, vocab_size=vocab_size, sequence_features=sequence_features,
            fusion_size=fusion_size,
        )
        require_non_negative("multi_input", head_hidden_size=head_hidden_size)
        require_dropout("multi_input", dropout=dropout)
        if (vocab_size is None) == (sequence_features is None):
            raise ConfigError(
                "multi_input needs exactly one of vocab_size (token ids) and sequence_features (a numeric series)"
            )
        if vocab_size is not None and vocab_size < 2:
            raise ConfigError(f"multi_input: vocab_size counts the padding id 0 and the tokens, so it must be >= 2, "
                              f"got {vocab_size}")
        if image_features not in IMAGE_FEATURES:
            raise ConfigError(f"multi_input image_features must be one of {IMAGE_FEATURES}, got {image_features!r}")
        self.image_size = as_image_size(image_size, "multi_input")
        if isinstance(condition_input, bool) or not isinstance(condition_input, int) or condition_input < 0:
            raise ConfigError(f"multi_input condition_input must be an int >= 0, got {condition_input!r}")
        if condition_input and encoder != "cnn":
            raise ConfigError(f"multi_input condition_input needs the built-in encoder 'cnn', got {encoder!r}; "
                              "set condition_input: 0")
        self.encoder = build_encoder(
            encoder, in_channels=in_channels + condition_input, pretrained=pretrained, freeze=freeze,
            **(encoder_kwargs or {})
        )
        if vocab_size is not None:
            self.embedding: nn.Module | None = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
            step_size = embedding_dim
        else:
            self.embedding = None
            step_size = sequence_features
        self.rnn = SequenceLSTM(step_size, hidden_size, num_layers, bidirectional=bidirectional, dropout=dropout)

        spatial = fusion in SPATIAL_FUSION_MODES
        self.use_grid = image_features == "grid" or (image_features == "auto" and spatial)
        self.feature_stage = feature_stage
        if feature_stage == -1:
            image_size_d = self.encoder.grid_features if self.use_grid else self.encoder.out_features
        elif not self.use_grid:
            raise ConfigError(f"multi_input feature_stage={feature_stage} picks the grid's stage, but fusion "
                              f"{fusion!r} reads a pooled image vector; use a grid fusion "
                              f"({', '.join(SPATIAL_FUSION_MODES)}) or drop feature_stage")
        else:
            self.feature_stage = self.encoder.feature_stage_index(feature_stage)  # ConfigError when out of range
            check_trainable_stages_are_read(self.encoder, freeze, self.feature_stage,
                                            f"multi_input: feature_stage={feature_stage}")
            image_size_d = self.encoder.stage_channels(self.feature_stage)
        self.fusion = Fusion(
            fusion, (image_size_d, self.rnn.out_features), fusion_size, grid=self.use_grid, **(fusion_kwargs or {})
        )
        width = self.fusion.out_features
        if head_hidden_size > 0:
            self.head = nn.Sequential(
                nn.Linear(width, head_hidden_size),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(head_hidden_size, num_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.in_channels = in_channels
        self.vocab_size = vocab_size
        self.sequence_features = sequence_features
        self.num_classes = num_classes
        self.num_features = width
        self.condition_stages = self._condition_stages(condition_stages, encoder, freeze)
        self.stage_film: nn.Linear | None = None
        if self.condition_stages:
            # (gamma, beta) of every modulated stage, in stage order: the widths stage_film's output splits into
            self._film_widths = [w for i in range(self.condition_stages) for w in [self.encoder.stage_channels(i)] * 2]
            self.stage_film = nn.Linear(self.rnn.out_features, sum(self._film_widths))
            nn.init.zeros_(self.stage_film.weight)  # the image branch starts unconditioned (gamma = beta = 0)
            nn.init.zeros_(self.stage_film.bias)
        self.condition_input = condition_input
        self.pixel_features: nn.Conv2d | None = None
        self.input_film: nn.Linear | None = None
        if condition_input:
            self.pixel_features = nn.Conv2d(in_channels, PIXEL_FEATURES, 1)  # A, a: colour features of each pixel
            self.input_film = nn.Linear(self.rnn.out_features, condition_input * (PIXEL_FEATURES + 1))  # W(q), b(q)
            nn.init.zeros_(self.input_film.weight)  # masks start at sigmoid(0) = 0.5: no pixel picked yet
            nn.init.zeros_(self.input_film.bias)

    def _condition_stages(self, stages: int, encoder: str, freeze: str | int) -> int:
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 0:
            raise ConfigError(f"multi_input condition_stages must be an int >= 0, got {stages!r}")
        if stages == 0:
            return 0
        if encoder != "cnn":
            raise ConfigError(f"multi_input condition_stages needs the built-in encoder 'cnn', got {encoder!r}; "
                              "set condition_stages: 0")
        n = len(self.encoder.stages)
        if stages > n:
            raise ConfigError(f"multi_input condition_stages={stages}, but the cnn has {n} stages")
        if self.feature_stage != -1:
            raise ConfigError("multi_input condition_stages reads the last stage's grid; drop feature_stage")
        if freeze != "none":
            raise ConfigError("multi_input condition_stages trains the modulated stages; set freeze: none")
        return stages

    def _check(self, image: Tensor, sequence: Tensor) -> None:
        dtype = weights_dtype(self)
        check_input(image, "B, C, H, W", "multi_input", what="image", dtype=dtype, C=self.in_channels)
        if self.embedding is not None:
            check_input(sequence, "B, L", "multi_input", what="sequence token ids", hint=" int64", dtype=torch.long)
            check_token_ids(sequence, self.vocab_size, "multi_input")
        else:
            check_input(sequence, "B, L, F", "multi_input", what="sequence", dtype=dtype, F=self.sequence_features)
        if sequence.shape[0] != image.shape[0]:
            raise ShapeError(
                f"multi_input got {image.shape[0]} images but {sequence.shape[0]} sequences; the batch sizes must match"
            )

    def encode_image(self, image: Tensor) -> Tensor:
        """The image branch: ``(B, C, H, W) -> (B, D_grid, h, w)`` grid or ``(B, D)`` vector (see ``use_grid``)."""
        if not self.use_grid:
            return self.encoder(image)  # (B, D)
        if self.feature_stage == -1:
            return self.encoder.forward_grid(image)  # (B, D_grid, h, w)
        return self.encoder.forward_stage(image, self.feature_stage)  # (B, D_stage, h', w'): no later stage runs

    def encode_distinct_images(self, image: Tensor, image_id: Tensor | None) -> Tensor:
        """:meth:`encode_image` run once per distinct ``image_id`` of the batch and spread back to every row.

        Several questions about one image share its CNN pass (the image of each id's first row is encoded).
        ``None`` encodes every row.

        Shape:
            - image: ``(B, C, H, W)``; image_id: ``(B,)`` int64, equal for rows holding the same image.
            - output: like :meth:`encode_image`'s, ``B`` rows.
        """
        if image_id is None:
            return self.encode_image(image)
        if image_id.shape != image.shape[:1] or image_id.is_floating_point():
            raise ShapeError(f"multi_input: image_id must be (B,) integer ids, one per image row ({image.shape[0]}), "
                             f"got {tuple(image_id.shape)} {image_id.dtype}")
        distinct, inverse = torch.unique(image_id, return_inverse=True)  # (U,), (B,)
        rows = torch.arange(len(image_id), device=image_id.device)  # (B,)
        first = torch.full((len(distinct),), len(image_id), dtype=torch.long, device=image_id.device)
        first = first.scatter_reduce(0, inverse, rows, reduce="amin")  # (U,): the first row of each image
        return self.encode_image(image[first])[inverse]  # (B, ...)

    def encode_sequence(self, sequence: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The sequence branch: ``(B, L)`` ids or ``(B, L, F)`` series -> ``(B, H * directions)``."""
        steps = self.embedding(sequence) if self.embedding is not None else sequence  # (B, L, E) or (B, L, F)
        return self.rnn(steps, lengths)  # (B, dirs*H)

    def forward_features(self, image: Tensor, sequence: Tensor, lengths: Tensor | None = None,
                         image_id: Tensor | None = None) -> Tensor:
        """The fused representation before the head.

        Shape:
            - image: ``(B, C, H, W)``; sequence: ``(B, L)`` or ``(B, L, F)``; lengths, image_id: ``(B,)``,
              optional.
            - output: ``(B, num_features)``.
        """
        self._check(image, sequence)
        lengths = check_lengths(lengths, sequence.shape[0], sequence.shape[1], owner="multi_input")
        question = self.encode_sequence(sequence, lengths)  # (B, H * directions)
        if self.stage_film is None and self.input_film is None:
            images = self.encode_distinct_images(image, image_id)  # (B, D) or (B, D_grid, h, w)
        else:
            images = self.encode_image_conditioned(image, question)  # one CNN pass per question
        return self.fusion(images, question)  # (B, num_features)

    def question_masks(self, image: Tensor, question: Tensor) -> Tensor:
        """The ``condition_input`` pixel masks each question picks: ``sigmoid(W(q) relu(A x + a) + b(q))``.

        Args:
            image: the images, one per question.
            question: the question vectors (:meth:`encode_sequence`).

        Shape:
            - image: ``(B, C, H, W)``; question: ``(B, H * directions)``.
            - output: ``(B, condition_input, H, W)`` in ``(0, 1)``.
        """
        assert self.pixel_features is not None and self.input_film is not None
        pixels = torch.relu(self.pixel_features(image))  # (B, P, H, W)
        params = self.input_film(question).view(-1, self.condition_input, PIXEL_FEATURES + 1)  # (B, k, P+1)
        logits = torch.einsum("bkp,bphw->bkhw", params[..., :-1], pixels) + params[..., -1, None, None]  # (B, k, H, W)
        return torch.sigmoid(logits)

    def encode_image_conditioned(self, image: Tensor, question: Tensor) -> Tensor:
        """The image branch conditioned on the question: its ``condition_input`` masks appended to the image, its
        first ``condition_stages`` stages modulated by the question vector.

        Shape:
            - image: ``(B, C, H, W)``; question: ``(B, H * directions)``.
            - output: like :meth:`encode_image`'s.
        """
        if self.input_film is not None:
            image = torch.cat([image, self.question_masks(image, question).to(image.dtype)], dim=1)  # (B, C + k, H, W)
        if self.stage_film is None:
            return self.encode_image(image)
        params = self.stage_film(question).split(self._film_widths, dim=1)  # gamma_0, beta_0, gamma_1, ...: (B, C_i)
        grid = self.encoder.forward_grid_conditioned(image, list(zip(params[0::2], params[1::2], strict=True)))
        return grid if self.use_grid else grid.mean(dim=(2, 3))  # (B, D) pooled as the encoder's forward

    def forward_head(self, features: Tensor) -> Tensor:
        """The MLP head: ``(B, num_features) -> (B, K)``."""
        return self.head(features)  # (B, K)

    def forward(self, image: Tensor, sequence: Tensor, lengths: Tensor | None = None,
                image_id: Tensor | None = None) -> Tensor:
        """Classify (image, sequence) pairs.

        Args:
            image: a batch of images.
            sequence: token ids (index 0 = padding) or a numeric series, zero-padded after each end.
            lengths: valid steps per sequence; ``None`` when nothing is padded.
            image_id: which image each row holds (rows with one id hold the same image, e.g. several questions
                about it), so the CNN encodes each image once (:meth:`encode_distinct_images`); ``None``
                encodes every row.

        Shape:
            - image: ``(B, C, H, W)``; sequence: ``(B, L)`` int64 or ``(B, L, F)``; lengths, image_id: ``(B,)``
              int64.
            - output: ``(B, K)``.
        """
        return self.forward_head(self.forward_features(image, sequence, lengths, image_id))

    def example_input(self, batch_size: int = 2, seq_len: int = 5) -> dict[str, Tensor]:
        """Random images and zero-padded sequences with unequal ``lengths``."""
        lengths = example_lengths(batch_size, seq_len)
        image = torch.rand(batch_size, self.in_channels, *self.image_size)  # (B, C, H, W)
        if self.vocab_size is not None:
            sequence = torch.randint(1, max(self.vocab_size, 2), (batch_size, seq_len))  # (B, L), no padding id
        else:
            sequence = torch.randn(batch_size, seq_len, self.sequence_features)  # (B, L, F)
        for b, length in enumerate(lengths.tolist()):
            sequence[b, length:] = 0  # padding, as pad_collate produces it
        return {"image": image, "sequence": sequence, "lengths": lengths}
