"""ConvLSTM encoder-forecaster (Shi et al. 2015): read T frames, predict the next ``horizon`` frames.

An encoding stack of ConvLSTM layers reads the input frames; its final states initialise a forecasting stack
of the same widths, which then runs ``horizon`` steps *without input*, driven by its states alone (the
lowest forecasting layer is an input-less :class:`~cnnlstm.layers.conv_lstm.ConvLSTMCell`; higher layers read
the layer below). At each step the hidden maps of all forecasting layers are concatenated and a 1x1
convolution turns them into a frame. Like the paper, frames can first be cut into ``patch_size`` x
``patch_size`` patches stacked on channels (space-to-depth), which shrinks the maps the recurrence runs on.

Forecasts lie in ``[0, 1]``, the range frame data is normalised to. ``output="sigmoid"`` squashes the head's
values smoothly; a sigmoid never reaches 0, and under MSE its gradient vanishes as it approaches 0, so an empty
(black) background keeps a faint grey floor that SSIM's luminance term punishes heavily (truth 0, forecast 0.02:
luminance 0.2). ``output="clamp"`` clips the head's values to ``[0, 1]`` so a forecast can be exactly 0, and
passes gradients straight through the clip (Bengio et al. 2013's straight-through estimator), so a pixel clipped
to 0 where the truth is lit is still pulled up.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.checks import check_input, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.conv_lstm import ConvLSTM, ConvLSTMCell, State
from cnnlstm.models._registry import register_model

__all__ = ["ConvLSTMForecaster", "OUTPUTS", "straight_through_clamp"]

#: ``output`` choices of :class:`ConvLSTMForecaster`, the default first
OUTPUTS = ("sigmoid", "clamp")


def straight_through_clamp(x: Tensor) -> Tensor:
    """``x`` clipped to ``[0, 1]`` in the forward pass, the identity in the backward pass.

    Args:
        x: any tensor.

    Shape:
        - x: any; output: same as ``x``.

    Example:
        >>> x = torch.tensor([-0.5, 0.25, 1.5], requires_grad=True)
        >>> y = straight_through_clamp(x); y.sum().backward()
        >>> y.tolist(), x.grad.tolist()
        ([0.0, 0.25, 1.0], [1.0, 1.0, 1.0])
    """
    return x + (x.clamp(0.0, 1.0) - x).detach()



@register_model("conv_lstm_forecaster")
class ConvLSTMForecaster(nn.Module):
    """Frame forecaster: a ConvLSTM encoder whose states seed an input-less ConvLSTM forecaster (Shi et al. 2015).

    Args:
        in_channels: frame channels ``C``.
        num_classes: for the model contract, the channels of the predicted frames; must equal ``in_channels``
            when given.
        hidden_size: ConvLSTM channels, an int for every layer or one int per layer.
        num_layers: layers in each stack; defaults to 2 for an int ``hidden_size``, to its length for a list.
        kernel_size: gate kernel size (odd keeps the maps centred).
        horizon: future frames ``K`` to predict.
        patch_size: side of the space-to-depth patches. Frames whose ``H`` or ``W`` is not a multiple of it are
            padded at the bottom and right (edge pixels repeated) on the way in, and the forecast is cropped back.
        dropout: dropout between stacked layers.
        peephole: Hadamard peepholes (needs ``image_size``).
        layer_norm: layer-normalised gates and cell states.
        image_size: frame size ``H`` (or ``(H, W)``); sizes the peepholes and :meth:`example_input`. Without
            peepholes the model is fully convolutional and takes frames of any size.
        output: ``"sigmoid"`` or ``"clamp"`` (clip to ``[0, 1]``, straight-through gradient): how the head's
            values become pixels (see the module docstring).

    Shape:
        - x: ``(B, T, C, H, W)`` frames in ``[0, 1]``.
        - output: ``(B, K, C, H, W)`` forecast frames in ``[0, 1]``.

    Example:
        >>> model = ConvLSTMForecaster(in_channels=1, hidden_size=8, horizon=3)
        >>> model(torch.rand(2, 5, 1, 16, 16)).shape
        torch.Size([2, 3, 1, 16, 16])
    """

    input_names = ("x",)
    output_kind = "frames"
    supports_lengths = False

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int | None = None,
        hidden_size: int | Sequence[int] = 64,
        num_layers: int | None = None,
        kernel_size: int = 3,
        horizon: int = 10,
        patch_size: int = 1,
        dropout: float = 0.0,
        peephole: bool = False,
        layer_norm: bool = False,
        image_size: int | Sequence[int] | None = None,
        output: str = "sigmoid",
    ) -> None:
        super().__init__()
        name = "conv_lstm_forecaster"
        require_positive(
            name, in_channels=in_channels, hidden_size=hidden_size, kernel_size=kernel_size, horizon=horizon,
            patch_size=patch_size,
        )
        require_positive(name, allow_none=True, num_classes=num_classes, num_layers=num_layers, image_size=image_size)
        require_dropout(name, dropout=dropout)
        if num_classes is not None and num_classes != in_channels:
            raise ConfigError(
                f"conv_lstm_forecaster predicts frames with in_channels={in_channels} channels; num_classes "
                f"(={num_classes}) must equal it or be left out"
            )
        if output not in OUTPUTS:
            raise ConfigError(f"conv_lstm_forecaster: output={output!r}; it must be one of {', '.join(OUTPUTS)}")
        if not isinstance(hidden_size, (list, tuple)):
            hidden = [hidden_size] * (2 if num_layers is None else num_layers)
        else:
            hidden = list(hidden_size)
            if num_layers is not None and num_layers != len(hidden):
                raise ConfigError(f"conv_lstm_forecaster: num_layers={num_layers} but hidden_size lists {hidden}")
        if not hidden:
            raise ConfigError(f"conv_lstm_forecaster needs at least one layer, got hidden_size={hidden_size!r}")
        if image_size is not None:
            image_size = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
            if len(image_size) != 2:
                raise ConfigError(f"conv_lstm_forecaster: image_size {image_size} must be H or (H, W)")
        if peephole and image_size is None:
            raise ConfigError("conv_lstm_forecaster: peephole=True needs image_size (peepholes are per position)")
        self.in_channels = in_channels
        self.num_classes = in_channels
        self.horizon = horizon
        self.output = output
        self.patch_size = patch_size
        self.image_size = image_size
        self.hidden_channels = hidden
        self.num_features = sum(hidden)

        grid = None if image_size is None else tuple(-(-s // patch_size) for s in image_size)  # maps the LSTMs see
        cell_kwargs = dict(dims=2, peephole=peephole, layer_norm=layer_norm, spatial_size=grid)
        patch_channels = in_channels * patch_size**2
        self.encoder = ConvLSTM(patch_channels, hidden, kernel_size, len(hidden), dropout=dropout, **cell_kwargs)
        # Layer 0 has no input: the forecast runs on the states copied from the encoder.
        self.forecaster = nn.ModuleList(
            ConvLSTMCell(0 if k == 0 else hidden[k - 1], width, kernel_size, **cell_kwargs)
            for k, width in enumerate(hidden)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(self.num_features, patch_channels, kernel_size=1)

    def _check(self, x: Tensor) -> None:
        check_input(x, "B, T, C, H, W", "conv_lstm_forecaster", what="frames", dtype=weights_dtype(self),
                    C=self.in_channels)
        if self.forecaster[0].peephole is not None and tuple(x.shape[3:]) != self.image_size:
            raise ShapeError(
                f"conv_lstm_forecaster was built with peepholes for image_size={self.image_size}, "
                f"got frames {tuple(x.shape)}"
            )

    def _encode(self, x: Tensor) -> list[State]:
        self._check(x)
        B, T = x.shape[:2]
        frames = x.flatten(0, 1)  # (B*T, C, H, W)
        p = self.patch_size
        pad_h, pad_w = -x.shape[3] % p, -x.shape[4] % p
        if pad_h or pad_w:  # to whole patches; edge pixels repeated, so the padding looks like the frame's border
            frames = F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate")  # (B*T, C, H', W')
        x = F.pixel_unshuffle(frames, p)  # (B*T, C*p*p, H'/p, W'/p): patches on channels
        _, states = self.encoder(x.unflatten(0, (B, T)))  # one (h, c) per layer, each (B, C_l, H/p, W/p)
        return states

    def forecast_states(self, x: Tensor) -> Tensor:
        """Hidden maps of all forecasting layers at every future step (what :meth:`forward_head` decodes).

        Shape:
            - x: ``(B, T, C, H, W)``; output: ``(B, K, num_features, ceil(H/p), ceil(W/p))``.
        """
        states = self._encode(x)
        steps = []
        for _ in range(self.horizon):
            below = None  # the lowest forecasting layer has no input
            for k, cell in enumerate(self.forecaster):
                states[k] = cell(below, states[k])  # (h, c), each (B, C_k, H/p, W/p)
                below = self.dropout(states[k][0])
            steps.append(torch.cat([h for h, _ in states], dim=1))  # (B, num_features, H/p, W/p)
        return torch.stack(steps, dim=1)  # (B, K, num_features, H/p, W/p)

    def forward_features(self, x: Tensor) -> Tensor:
        """A clip embedding: each encoder layer's final hidden map averaged over space, layers concatenated.

        Not the input of :meth:`forward_head` (a frame decoder needs maps, see :meth:`forecast_states`).

        Shape:
            - x: ``(B, T, C, H, W)``; output: ``(B, num_features)``.
        """
        return torch.cat([h.mean(dim=(2, 3)) for h, _ in self._encode(x)], dim=1)  # (B, num_features)

    def forward_head(self, states: Tensor) -> Tensor:
        """Decode forecasting-layer hidden maps into frames in ``[0, 1]``.

        Shape:
            - states: ``(B, K, num_features, h, w)``; output: ``(B, K, C, h*p, w*p)`` (:meth:`forward` crops
              it to the input's size).
        """
        B, K = states.shape[:2]
        frames = self.head(states.flatten(0, 1))  # (B*K, C*p*p, H/p, W/p)
        frames = F.pixel_shuffle(frames, self.patch_size)  # (B*K, C, H, W)
        frames = torch.sigmoid(frames) if self.output == "sigmoid" else straight_through_clamp(frames)
        return frames.unflatten(0, (B, K))  # (B, K, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        """Forecast the next ``horizon`` frames.

        Args:
            x: input frames in ``[0, 1]``, oldest first.

        Shape:
            - x: ``(B, T, C, H, W)``; output: ``(B, K, C, H, W)``.
        """
        frames = self.forward_head(self.forecast_states(x))  # (B, K, C, H', W'), whole patches
        if frames.shape[3:] == x.shape[3:]:
            return frames
        return frames[..., : x.shape[3], : x.shape[4]].contiguous()  # the padding cropped away

    def example_input(self, batch_size: int = 2) -> dict[str, Tensor]:
        """Three random frames of ``image_size`` (16 x 16 patches by default)."""
        H, W = self.image_size or (16 * self.patch_size, 16 * self.patch_size)
        return {"x": torch.rand(batch_size, 3, self.in_channels, H, W)}
