"""CRNN (Shi, Bai & Yao 2015): a CNN reads a text line into columns, a BiLSTM reads the columns, CTC aligns.

A VGG-style CNN turns a fixed-height text image into a feature map whose height is then collapsed, so each
remaining column is a feature vector for a thin vertical slice of the image. The pools after the second stage
are (2, 1): they halve the height only, so the width is downsampled by 4 in all and a line keeps enough columns
for narrow characters (CTC needs at least one column per label, two between repeated labels). A bidirectional
LSTM gives every column context from both sides; a linear layer scores the charset (blank at index 0) per
column. Training applies ``log_softmax`` and CTC loss to the ``(B, W', K)`` scores (the task does that).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.blocks import ConvNormAct2d
from cnnlstm.layers.checks import check_input, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.decoding import ctc_beam_search, ctc_greedy_decode
from cnnlstm.models._registry import register_model

__all__ = ["CRNN"]

# Pool after each of the six convolutions (None: no pool). Two 2x2 pools, then two (2, 1) pools: /16 in
# height, /4 in width.
_POOLS: tuple[tuple[int, int] | None, ...] = ((2, 2), (2, 2), None, (2, 1), None, (2, 1))
_WIDTH_STRIDE = 4
_HEIGHT_STRIDE = 16


@register_model("crnn")
class CRNN(nn.Module):
    """Convolutional recurrent network for text-line recognition with CTC (Shi et al. 2015).

    Args:
        num_classes: charset size ``K`` including the CTC blank at index 0.
        in_channels: image channels ``C`` (1 for grey text lines).
        image_height: fixed input height ``H``, a multiple of 16; width is free.
        hidden_size: LSTM units per direction.
        num_layers: stacked BiLSTM layers.
        dropout: dropout between LSTM layers and before the classifier.
        widths: output channels of the six 3x3 convolutions (the paper's 64, 128, 256, 256, 512, 512); the
            height-collapsing convolution keeps ``widths[-1]``.

    Shape:
        - x: ``(B, C, H, W)`` with ``H = image_height`` and ``W >= 4``.
        - output: ``(B, W', K)`` raw per-column scores, ``W' = W // 4`` (:meth:`output_lengths`).

    Example:
        >>> model = CRNN(num_classes=11, widths=(8, 16, 16, 16, 32, 32), hidden_size=16)
        >>> model(torch.rand(2, 1, 32, 100)).shape
        torch.Size([2, 25, 11])
    """

    input_names = ("x",)
    output_kind = "sequence_logits"
    supports_lengths = False

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        image_height: int = 32,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        widths: tuple[int, ...] | list[int] = (64, 128, 256, 256, 512, 512),
    ) -> None:
        super().__init__()
        require_positive(
            "crnn", num_classes=num_classes, in_channels=in_channels, image_height=image_height,
            hidden_size=hidden_size, num_layers=num_layers, widths=widths,
        )
        require_dropout("crnn", dropout=dropout)
        if num_classes < 2:
            raise ConfigError(f"crnn needs num_classes >= 2 (the CTC blank plus at least one label), got {num_classes}")
        if image_height < _HEIGHT_STRIDE or image_height % _HEIGHT_STRIDE:
            raise ConfigError(f"crnn: image_height must be a positive multiple of 16, got {image_height}")
        if not isinstance(widths, (list, tuple)) or len(widths) != len(_POOLS):
            raise ConfigError(f"crnn: widths lists the channels of the {len(_POOLS)} convolutions, got {tuple(widths)}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_height = image_height
        self.num_features = 2 * hidden_size

        layers: list[nn.Module] = []
        channels = in_channels
        for width, pool in zip(widths, _POOLS, strict=True):
            layers.append(ConvNormAct2d(channels, width, 3))
            if pool is not None:
                layers.append(nn.MaxPool2d(pool, stride=pool))
            channels = width
        self.cnn = nn.Sequential(*layers)
        # The paper's last convolution: it spans the remaining height, so each column becomes one vector.
        self.collapse = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=(image_height // _HEIGHT_STRIDE, 1), bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.rnn = nn.LSTM(
            channels,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_size, num_classes)

    def _check(self, x: Tensor) -> None:
        check_input(
            x, "B, C, H, W", "crnn", what="text images", hint=" (image_height; resize lines to this height)",
            dtype=weights_dtype(self), C=self.in_channels, H=self.image_height,
        )
        if x.shape[3] < _WIDTH_STRIDE:
            raise ShapeError(f"crnn needs images at least {_WIDTH_STRIDE} pixels wide, got {tuple(x.shape)}")

    def output_lengths(self, widths: Tensor) -> Tensor:
        """Number of output columns for images of the given widths (the CTC ``input_lengths``).

        Args:
            widths: image widths in pixels.

        Shape:
            - widths: ``(B,)`` integer; output: ``(B,)`` int64, ``W // 4``.

        Example:
            >>> CRNN(num_classes=5, widths=(4, 8, 8, 8, 8, 8)).output_lengths(torch.tensor([100, 37]))
            tensor([25,  9])
        """
        # Two stride-2 pools, each flooring: floor(floor(W / 2) / 2) == floor(W / 4).
        return torch.div(widths.long(), _WIDTH_STRIDE, rounding_mode="floor")

    def forward_features(self, x: Tensor) -> Tensor:
        """Per-column BiLSTM features.

        Shape:
            - x: ``(B, C, H, W)``; output: ``(B, W', 2 * hidden_size)``.
        """
        self._check(x)
        x = self.cnn(x)  # (B, D, H/16, W/4)
        x = self.collapse(x)  # (B, D, 1, W')
        x = x.squeeze(2).transpose(1, 2)  # (B, W', D): columns become time steps
        x, _ = self.rnn(x)  # (B, W', 2 * hidden_size)
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        """Per-column charset scores.

        Shape:
            - features: ``(B, W', 2 * hidden_size)``; output: ``(B, W', K)``.
        """
        return self.head(self.dropout(features))  # (B, W', K)

    def forward(self, x: Tensor) -> Tensor:
        """Score the charset for every column.

        Args:
            x: text-line images.

        Shape:
            - x: ``(B, C, H, W)``; output: ``(B, W', K)`` raw scores, blank at index 0.
        """
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def decode(self, x: Tensor, beam_size: int = 1, widths: Tensor | None = None) -> list[list[int]]:
        """Read the label sequence of each image (charset indices, blank removed).

        Uses the model's current mode; call ``.eval()`` first for inference.

        Args:
            x: text-line images.
            beam_size: 1 for best-path decoding, more for CTC prefix beam search.
            widths: true widths of right-padded images, so columns past each line's end are not read. The
                BiLSTM still sees the padding (its backward direction starts there).

        Shape:
            - x: ``(B, C, H, W)``; widths: ``(B,)`` integer, optional.

        Example:
            >>> model = CRNN(num_classes=5, widths=(4, 8, 8, 8, 8, 8), hidden_size=8).eval()
            >>> len(model.decode(torch.rand(3, 1, 32, 40), beam_size=4))
            3
        """
        if beam_size < 1:
            raise ConfigError(f"crnn.decode: beam_size must be >= 1, got {beam_size}")
        log_probs = torch.log_softmax(self(x).float(), dim=-1)  # (B, W', K)
        lengths = None if widths is None else self.output_lengths(widths).clamp(max=log_probs.shape[1])
        if beam_size == 1:
            return ctc_greedy_decode(log_probs, lengths, blank=0)
        return ctc_beam_search(log_probs, lengths, beam_size=beam_size, blank=0)

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """A batch of random text-line images, 100 pixels wide (25 columns)."""
        return {"x": torch.rand(batch_size, self.in_channels, self.image_height, 100)}
