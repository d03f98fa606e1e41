"""CRNN (Shi, Bai & Yao 2015): a CNN reads a text line into columns, a BiLSTM reads the columns, CTC aligns.

A VGG-style CNN turns a fixed-height text image into a feature map whose height is then collapsed, so each
remaining column is a feature vector for a thin vertical slice of the image. The pools after the second stage
are (2, 1): they halve the height only, so the width is downsampled by 4 in all and a line keeps enough columns
for narrow characters (CTC needs at least one column per label, two between repeated labels). A bidirectional
LSTM gives every column context from both sides; a linear layer scores the charset (blank at index 0) per
column. Training applies ``log_softmax`` and CTC loss to the ``(B, W', K)`` scores (the task does that).

Text lines of different widths are right-padded to one batch and the true width of each goes in ``lengths``
(pixels). The padded columns are then zeroed before every convolution (exactly the zero border an unpadded
image gets) and the BiLSTM runs packed, so a padded line gives the same scores on its valid columns as the
line alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.blocks import ConvNormAct2d
from cnnlstm.layers.checks import check_input, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.decoding import ctc_beam_search, ctc_greedy_decode
from cnnlstm.layers.masking import check_lengths, lengths_to_mask
from cnnlstm.models._lstm_state import step_outputs
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
        - x: ``(B, C, H, W)`` with ``H = image_height`` and ``W >= 4``; lengths: ``(B,)`` true widths in pixels
          of right-padded lines, optional.
        - output: ``(B, W', K)`` raw per-column scores, ``W' = W // 4`` (:meth:`output_lengths`); columns past
          a padded line's own ``lengths // 4`` get zero BiLSTM features (the head's bias only; ignore them).

    Example:
        >>> model = CRNN(num_classes=11, widths=(8, 16, 16, 16, 32, 32), hidden_size=16)
        >>> model(torch.rand(2, 1, 32, 100)).shape
        torch.Size([2, 25, 11])
    """

    input_names = ("x", "lengths")
    output_kind = "sequence_logits"
    supports_lengths = True

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

    @staticmethod
    def output_lengths(widths: Tensor) -> Tensor:
        """Number of output columns for images of the given widths (the CTC ``input_lengths``).

        A static method: it depends on the architecture only, so an exported CRNN's runner can use it too.

        Args:
            widths: image widths in pixels.

        Shape:
            - widths: ``(B,)`` integer; output: ``(B,)`` int64, ``W // 4`` (at least 1).

        Example:
            >>> CRNN(num_classes=5, widths=(4, 8, 8, 8, 8, 8)).output_lengths(torch.tensor([100, 37]))
            tensor([25,  9])
        """
        # Two stride-2 pools, each flooring: floor(floor(W / 2) / 2) == floor(W / 4). A line narrower than 4
        # pixels still keeps one column, as the padded batch it sits in has at least one.
        return torch.div(widths.long(), _WIDTH_STRIDE, rounding_mode="floor").clamp(min=1)

    def _widths(self, lengths: Tensor | None, x: Tensor) -> Tensor | None:
        """Checked pixel widths, or ``None`` when nothing is padded (the plain, exportable path)."""
        if lengths is None:
            return None
        if torch.jit.is_tracing():  # an exported graph always takes the padded path, whatever the example
            return lengths.long()
        lengths = check_lengths(lengths, x.shape[0], x.shape[3], owner="crnn (lengths are pixel widths)")
        return None if bool((lengths == x.shape[3]).all()) else lengths

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Per-column BiLSTM features.

        Shape:
            - x: ``(B, C, H, W)``; lengths: ``(B,)`` pixel widths, optional.
            - output: ``(B, W', 2 * hidden_size)``, zeros past each line's own columns.
        """
        self._check(x)
        widths = self._widths(lengths, x)
        if widths is None:
            x = self.cnn(x)  # (B, D, H/16, W/4)
        else:
            for layer in self.cnn:
                if isinstance(layer, nn.MaxPool2d):
                    x = layer(x)
                    widths = torch.div(widths, layer.stride[1], rounding_mode="floor")  # pools floor, like W
                else:
                    # Zero the padding: the 3x3 kernel at a line's last column then reads what the zero border
                    # of the unpadded line gives it.
                    keep = lengths_to_mask(widths, x.shape[3])  # (B, W_l)
                    x = layer(x * keep[:, None, None, :].to(x.dtype))  # (B, D_l, H_l, W_l)
        x = self.collapse(x)  # (B, D, 1, W')
        x = x.squeeze(2).transpose(1, 2)  # (B, W', D): columns become time steps
        steps = None if widths is None else self.output_lengths(lengths).clamp(max=x.shape[1])
        return step_outputs(self.rnn, x, steps)  # (B, W', 2 * hidden_size)

    def forward_head(self, features: Tensor) -> Tensor:
        """Per-column charset scores.

        Shape:
            - features: ``(B, W', 2 * hidden_size)``; output: ``(B, W', K)``.
        """
        return self.head(self.dropout(features))  # (B, W', K)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Score the charset for every column.

        Args:
            x: text-line images, right-padded to one width.
            lengths: true width in pixels of each line; ``None`` when none is padded.

        Shape:
            - x: ``(B, C, H, W)``; lengths: ``(B,)``; output: ``(B, W', K)`` raw scores, blank at index 0.
        """
        return self.forward_head(self.forward_features(x, lengths))

    @torch.no_grad()
    def decode(self, x: Tensor, beam_size: int = 1, widths: Tensor | None = None) -> list[list[int]]:
        """Read the label sequence of each image (charset indices, blank removed).

        Uses the model's current mode; call ``.eval()`` first for inference.

        Args:
            x: text-line images.
            beam_size: 1 for best-path decoding, more for CTC prefix beam search.
            widths: true widths of right-padded images; the padding then changes nothing (see the class).

        Shape:
            - x: ``(B, C, H, W)``; widths: ``(B,)`` integer, optional.

        Example:
            >>> model = CRNN(num_classes=5, widths=(4, 8, 8, 8, 8, 8), hidden_size=8).eval()
            >>> len(model.decode(torch.rand(3, 1, 32, 40), beam_size=4))
            3
        """
        if beam_size < 1:
            raise ConfigError(f"crnn.decode: beam_size must be >= 1, got {beam_size}")
        log_probs = torch.log_softmax(self(x, widths).float(), dim=-1)  # (B, W', K)
        lengths = None if widths is None else self.output_lengths(widths).clamp(max=log_probs.shape[1])
        if beam_size == 1:
            return ctc_greedy_decode(log_probs, lengths, blank=0)
        return ctc_beam_search(log_probs, lengths, beam_size=beam_size, blank=0)

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """A batch of random text-line images padded to 100 pixels (25 columns), of unequal true widths."""
        lengths = torch.tensor([100 - 23 * (i % 4) for i in range(batch_size)])  # 100, 77, 54, 31, 100, ...
        return {"x": torch.rand(batch_size, self.in_channels, self.image_height, 100), "lengths": lengths}
