"""LRCN (Donahue et al. 2015): a CNN encodes each frame, an LSTM models the sequence of frame features.

Pattern 1 of cnnlstm: the CNN is a feature extractor (often pretrained and frozen), the LSTM adds order.

What a frame contributes (``frame_features``): ``"pooled"`` is the encoder's globally pooled vector (what an
ImageNet classifier sees; it keeps *what* is in the frame but not *where*); ``"grid"`` is the map of one encoder
stage average-pooled to a small ``grid_size`` grid and flattened, so the LSTM sees each position apart;
``"conv_lstm"`` keeps the same grid as a map and runs a ConvLSTM over the frames' maps (Shi et al. 2015), pooled
over space only afterwards; ``"attention"`` lets the LSTM choose where to look: at each step its previous hidden
state weighs the grid's positions and the weighted sum of the position vectors, with the attended (row, column),
is its input (Sharma et al. 2015, plus a content score; see :mod:`cnnlstm.layers.spatial_attention`).
Direction of motion, swipes and trajectories need one of the grid modes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlstm.encoders import build_encoder
from cnnlstm.encoders.base import FrameEncoder
from cnnlstm.errors import ConfigError, ShapeError
from cnnlstm.layers.checks import check_input, require_dropout, require_positive, weights_dtype
from cnnlstm.layers.grid_recurrent import ConvLSTMPool, GridLayerNorm, append_differences
from cnnlstm.layers.masking import check_lengths, lengths_to_mask
from cnnlstm.layers.recurrent import LSTMState, SequenceLSTM
from cnnlstm.layers.spatial_attention import SpatialAttentionLSTM
from cnnlstm.layers.temporal import TimeDistributed
from cnnlstm.models._registry import register_model

__all__ = ["FrameLSTM", "StageGrid", "FRAME_FEATURES", "example_lengths", "as_image_size"]

#: what each frame contributes to the recurrence (see the module docstring)
FRAME_FEATURES = ("pooled", "grid", "conv_lstm", "attention")


def as_image_size(image_size: int | tuple[int, int] | list[int], owner: str = "model") -> tuple[int, int]:
    """``32 -> (32, 32)``; ``(H, W)`` stays as it is.

    Args:
        image_size: ``H`` (square) or ``(H, W)``, each an integer >= 1.
        owner: the model name for the error message.

    Raises:
        ConfigError: not one or two positive integers.

    Example:
        >>> as_image_size(32)
        (32, 32)
    """
    if isinstance(image_size, (list, tuple)) and len(image_size) != 2:
        raise ConfigError(f"{owner}: image_size must be H or (H, W), got {image_size!r}")
    require_positive(owner, image_size=image_size)
    if isinstance(image_size, (list, tuple)):
        return int(image_size[0]), int(image_size[1])
    return int(image_size), int(image_size)


def example_lengths(batch_size: int, max_len: int) -> Tensor:
    """Unequal lengths ``max_len, max_len - 1, ...`` (cycling, never below 1) for ``example_input``.

    Args:
        batch_size: B.
        max_len: T, the longest length.
    """
    return torch.tensor([max_len - i % max_len for i in range(batch_size)], dtype=torch.int64)


class StageGrid(nn.Module):
    """One encoder stage's map, average-pooled to a fixed grid and flattened channel-major: a frame's grid features.

    The encoder is held without being registered (it belongs to the model that owns this module), so its
    weights appear once in the model's ``state_dict``.

    Args:
        encoder: the frame encoder.
        stage: feature stage of :meth:`FrameEncoder.forward_stage` (negative counts from the end).
        grid_size: ``(h, w)`` of the pooled grid; a map of that size already passes unchanged.

    Shape:
        - x: ``(N, C, H, W)``.
        - output: ``(N, D * h * w)`` with ``D = encoder.stage_channels(stage)``.

    Example:
        >>> from cnnlstm.encoders import build_encoder
        >>> StageGrid(build_encoder("cnn", widths=(4, 8)), 0, (2, 2))(torch.rand(3, 3, 16, 16)).shape
        torch.Size([3, 16])
    """

    def __init__(self, encoder: FrameEncoder, stage: int, grid_size: tuple[int, int]) -> None:
        super().__init__()
        object.__setattr__(self, "encoder", encoder)
        self.stage = encoder.feature_stage_index(stage)
        self.grid_size = grid_size
        self.channels = encoder.stage_channels(self.stage)
        self.out_features = self.channels * grid_size[0] * grid_size[1]

    def forward(self, x: Tensor) -> Tensor:
        maps = self.encoder.forward_stage(x, self.stage)  # (N, D, h', w')
        # Python ints: the pooling kernel is a constant of an exported graph (frame size is fixed there).
        (h, w), (gh, gw) = (int(maps.shape[-2]), int(maps.shape[-1])), self.grid_size
        if (h, w) != (gh, gw):
            if h % gh == 0 and w % gw == 0:
                # Plain block averaging: the same numbers as adaptive pooling here, and it exports to ONNX.
                maps = F.avg_pool2d(maps, (h // gh, w // gw))  # (N, D, gh, gw)
            else:
                maps = F.adaptive_avg_pool2d(maps, self.grid_size)  # (N, D, gh, gw)
        return maps.flatten(1)  # (N, D*gh*gw)


def check_trainable_stages_are_read(encoder: FrameEncoder, freeze: str | int, stage: int, reader: str) -> None:
    """A model that reads stage ``stage`` runs the encoder only up to it: ``freeze: N`` must leave one trainable.

    ``reader`` names what reads the stage in the message, e.g. ``"frame_lstm: frame_features='grid'"``.
    """
    if isinstance(freeze, bool) or not isinstance(freeze, int) or freeze == 0:
        return
    first_trained, last = encoder.num_stages - freeze, encoder.num_stages - 1
    if first_trained > stage:
        model, _, what = reader.partition(": ")
        raise ConfigError(f"{model}: freeze={freeze} trains encoder stages {first_trained}-{last}, but "
                          f"{what} reads stage {stage} and never runs them; use freeze >= "
                          f"{encoder.num_stages - stage} (or 'none') to fine-tune the stages it reads, or 'all'")


@register_model("frame_lstm")
class FrameLSTM(nn.Module):
    """Clip classifier: per-frame CNN -> LSTM -> temporal pooling -> dropout -> linear head.

    Only the valid frames of a padded clip reach the encoder (``TimeDistributed`` with lengths), and the LSTM
    runs packed, so a padded batch gives the same logits as each clip alone. Without ``lengths`` the forward
    uses no packing and traces to ONNX.

    Args:
        num_classes: number of classes ``K``.
        in_channels: image channels ``C``.
        encoder: encoder name for :func:`cnnlstm.encoders.build_encoder` (``"cnn"``, ``"timm:resnet18"``, ...).
        encoder_kwargs: extra encoder arguments (e.g. ``{"widths": (32, 64, 128)}``).
        pretrained: ``False``, ``True`` (timm hub) or a path to a ``.pth``/``.safetensors`` file.
        freeze: ``"none"``, ``"all"`` or N (all but the last N encoder stages); frozen parts stay in eval mode.
        hidden_size: LSTM hidden size ``H``.
        num_layers: stacked LSTM layers.
        bidirectional: bidirectional LSTM (features ``2 H``; ``"last"`` joins both directions' final states).
        dropout: dropout between LSTM layers and before the head.
        pooling: ``"last"``, ``"mean"``, ``"max"`` or ``"attention"`` over the LSTM outputs.
        chunk_size: encode at most this many frames at once (bounds memory for long clips).
        image_size: frame size ``H`` or ``(H, W)`` used by :meth:`example_input`.
        frame_features: ``"pooled"`` (the encoder's pooled vector), ``"grid"`` (a stage's map pooled to
            ``grid_size`` and flattened into the LSTM), ``"conv_lstm"`` (a ConvLSTM with ``hidden_size``
            channels over the stage's maps, then spatial mean and max; features ``2 H``) or ``"attention"`` (an
            LSTM whose previous hidden state weighs the grid's positions each step and reads their weighted sum;
            one layer, forward in time).
        feature_stage: encoder feature stage of the grid modes (timm ``feature_info`` order; ``-1`` the last).
        grid_size: ``h`` or ``(h, w)`` of the grid the stage's map is average-pooled to (grid modes).
        frame_difference: grid modes also read, per position, each frame's change from the previous frame
            (:func:`~cnnlstm.layers.grid_recurrent.append_differences`): what motion tasks need.

    Shape:
        - x: ``(B, T, C, H, W)`` frames; lengths: ``(B,)`` int64 valid frames per clip, optional.
        - output: ``(B, K)`` logits.

    Example:
        >>> model = FrameLSTM(num_classes=4, encoder_kwargs={"widths": (8, 16)}, hidden_size=16)
        >>> model(**model.example_input()).shape
        torch.Size([2, 4])
    """

    input_names = ("x", "lengths")
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
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        chunk_size: int | None = None,
        image_size: int | tuple[int, int] = 32,
        frame_features: str = "pooled",
        feature_stage: int = -1,
        grid_size: int | tuple[int, int] = 4,
        frame_difference: bool = False,
    ) -> None:
        super().__init__()
        require_positive(
            "frame_lstm", num_classes=num_classes, in_channels=in_channels, hidden_size=hidden_size,
            num_layers=num_layers,
        )
        require_positive("frame_lstm", allow_none=True, chunk_size=chunk_size)
        require_dropout("frame_lstm", dropout=dropout)
        self.image_size = as_image_size(image_size, "frame_lstm")
        if frame_features not in FRAME_FEATURES:
            raise ConfigError(f"frame_lstm: frame_features must be one of {FRAME_FEATURES}, got {frame_features!r}")
        self.frame_features = frame_features
        self.encoder = build_encoder(
            encoder, in_channels=in_channels, pretrained=pretrained, freeze=freeze, **(encoder_kwargs or {})
        )
        per_frame: nn.Module = self.encoder
        if frame_features != "pooled":
            per_frame = StageGrid(self.encoder, feature_stage, as_image_size(grid_size, "frame_lstm grid_size"))
            check_trainable_stages_are_read(self.encoder, freeze, per_frame.stage,
                                            f"frame_lstm: frame_features={frame_features!r}")
        # Not registered as submodules: they only wrap self.encoder, whose weights must appear once in state_dict.
        object.__setattr__(self, "_per_frame", per_frame)
        object.__setattr__(self, "_frames", TimeDistributed(per_frame, chunk_size=chunk_size))
        #: D of one frame's features (what the recurrence reads and the feature cache stores per frame)
        self.frame_dim = per_frame.out_features
        # Grid features come from inside the encoder, unnormalised: normalise each position before the recurrence.
        self.frame_norm: nn.Module = nn.Identity()
        if frame_features != "pooled":
            self.frame_norm = GridLayerNorm(per_frame.channels, per_frame.grid_size)
        if frame_difference and frame_features == "pooled":
            raise ConfigError("frame_lstm: frame_difference needs frame_features 'grid', 'conv_lstm' or 'attention'")
        self.frame_difference = bool(frame_difference)
        steps = 2 if self.frame_difference else 1  # grid channels the recurrence reads per position
        if frame_features == "conv_lstm":
            if bidirectional:
                raise ConfigError("frame_lstm: frame_features='conv_lstm' runs forward in time only; set "
                                  "bidirectional: false")
            self.rnn: nn.Module = ConvLSTMPool(steps * per_frame.channels, per_frame.grid_size, hidden_size,
                                               num_layers, dropout=dropout, pooling=pooling)
        elif frame_features == "attention":
            if bidirectional or num_layers != 1:
                raise ConfigError("frame_lstm: frame_features='attention' runs one LSTM layer forward in time (its "
                                  "state chooses where the next step looks); set bidirectional: false, num_layers: 1")
            self.rnn = SpatialAttentionLSTM(steps * per_frame.channels, per_frame.grid_size, hidden_size,
                                            pooling=pooling)
        else:
            self.rnn = SequenceLSTM(
                steps * self.frame_dim,
                hidden_size,
                num_layers,
                bidirectional=bidirectional,
                dropout=dropout,
                pooling=pooling,
            )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.rnn.out_features, num_classes))
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_features = self.rnn.out_features

    def _check_frames(self, x: Tensor) -> None:
        check_input(x, "B, T, C, H, W", "frame_lstm", what="frames", dtype=weights_dtype(self), C=self.in_channels)

    def forward_sequence_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Encode every valid frame; padded frames come out as zeros.

        A frozen encoder (no parameter needing a gradient) runs without autograd unless ``x`` itself needs
        gradients, which saves the activation memory of ``B*T`` frames.

        Shape:
            - x: ``(B, T, C, H, W)``; lengths: ``(B,)``, optional.
            - output: ``(B, T, D_frame)`` with ``D_frame = frame_dim`` (``encoder.out_features`` when pooled,
              ``D_stage * h * w`` for the grid modes).
        """
        self._check_frames(x)
        lengths = check_lengths(lengths, x.shape[0], x.shape[1], owner="frame_lstm")
        needs_grad = x.requires_grad or any(p.requires_grad for p in self.encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
            return self._frames(x, lengths=lengths)  # (B, T, D_frame)

    def encode_frame(self, frame: Tensor) -> Tensor:
        """One frame per clip to its frame features (streaming; :meth:`recurrent_input` comes next).

        Shape:
            - frame: ``(B, C, H, W)``; output: ``(B, D_frame)``.
        """
        return self._per_frame(frame)  # (B, D_frame)

    def forward_recurrent(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Run the LSTM and pooling on per-frame features (computed here or cached from a frozen encoder).

        Shape:
            - feats: ``(B, T, D_frame)``; lengths: ``(B,)``, optional.
            - output: ``(B, num_features)``.
        """
        check_input(feats, "B, T, D", "frame_lstm", what="frame features", dtype=weights_dtype(self), D=self.frame_dim)
        lengths = check_lengths(lengths, feats.shape[0], feats.shape[1], owner="frame_lstm")
        return self.rnn(self.recurrent_input(feats), lengths)  # (B, num_features)

    def recurrent_input(self, feats: Tensor, previous: Tensor | None = None) -> Tensor:
        """What the recurrence reads from frame features: grids normalised, and their differences appended.

        Args:
            feats: frame features as :meth:`forward_sequence_features` returns them.
            previous: features of the frame before ``feats[:, 0]`` (streaming), or ``None``.

        Shape:
            - feats: ``(B, T, D_frame)``; previous: ``(B, D_frame)``; output: ``(B, T, rnn input size)``.
        """
        x = self.frame_norm(feats)  # (B, T, D_frame)
        if self.frame_difference:
            before = None if previous is None else self.frame_norm(previous.unsqueeze(1))[:, 0]  # (B, D_frame)
            x = append_differences(x, self._per_frame.channels, self._per_frame.grid_size, before)  # (B, T, 2D)
        return x

    def forward_from_features(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits from precomputed per-frame features (the frozen-encoder feature cache path).

        Shape:
            - feats: ``(B, T, D_frame)``; lengths: ``(B,)``, optional.
            - output: ``(B, K)``.
        """
        return self.forward_head(self.forward_recurrent(feats, lengths))

    def forward_features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Clip representation before the head.

        Shape:
            - x: ``(B, T, C, H, W)``; lengths: ``(B,)``, optional.
            - output: ``(B, num_features)``.
        """
        return self.forward_recurrent(self.forward_sequence_features(x, lengths), lengths)

    def forward_head(self, features: Tensor) -> Tensor:
        """Dropout and the linear classifier: ``(B, num_features) -> (B, K)``."""
        return self.head(features)  # (B, K)

    def forward_chunk(
        self, x: Tensor, state: LSTMState | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, LSTMState]:
        """Encode one chunk of frames and run the LSTM from ``state``, for truncated BPTT (``trainer.tbptt_steps``).

        Only the valid frames reach the encoder; a chunk in which every clip has ended skips it. Chaining the
        chunks of a clip gives, in the final ``state[0][-1]``, exactly :meth:`forward_features` of the clip (in
        training mode a trainable encoder's BatchNorm normalises each chunk with that chunk's statistics).

        Args:
            x: a chunk of frames (the clips' steps ``t .. t + k``), zero-padded after each clip's end.
            state: ``(h, c)`` the previous chunk returned, or ``None`` at the start of the clips.
            lengths: valid frames of each clip in this chunk (0..k); ``None`` when none is padded.

        Raises:
            ConfigError: ``bidirectional=True`` (the backward direction needs the future) or ``pooling`` other
                than ``"last"`` (it needs every step at once).

        Shape:
            - x: ``(B, k, C, H, W)``; lengths: ``(B,)`` in 0..k, optional; state: ``(num_layers, B, H)`` each.
            - output: ``(B, k, H)`` (zeros at padded steps) and the new ``(h, c)``.

        Example:
            >>> model = FrameLSTM(num_classes=4, encoder_kwargs={"widths": (8,)}, hidden_size=16).eval()
            >>> x = torch.rand(2, 6, 3, 32, 32)
            >>> _, state = model.forward_chunk(x[:, :4])
            >>> out, (h, c) = model.forward_chunk(x[:, 4:], state)
            >>> torch.allclose(h[-1], model.forward_features(x), atol=1e-5)
            True
        """
        self._check_chunkable()
        self._check_frames(x)
        B, k = x.shape[:2]
        mask = None
        if lengths is not None:
            if not isinstance(lengths, Tensor) or lengths.shape != (B,) or lengths.is_floating_point():
                raise ShapeError(f"frame_lstm.forward_chunk expects lengths as a (B,)={B} integer tensor, got "
                                 f"{getattr(lengths, 'shape', type(lengths).__name__)}")
            if int(lengths.min()) < 0 or int(lengths.max()) > k:
                raise ShapeError(f"frame_lstm.forward_chunk lengths must lie in 0..{k}, got {lengths.tolist()}")
            mask = lengths_to_mask(lengths, k)  # (B, k)
        if mask is not None and not bool(mask.any()):  # every clip has ended: nothing to encode
            feats = x.new_zeros(B, k, self.frame_dim)  # (B, k, D_frame)
        else:
            needs_grad = x.requires_grad or any(p.requires_grad for p in self.encoder.parameters())
            with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
                feats = self._frames(x, mask=mask)  # (B, k, D_frame), zeros at padded frames
        return self.recurrent_chunk(feats, state, lengths)  # (B, k, H), (h, c)

    def _check_chunkable(self) -> None:
        self.rnn.check_chunkable("frame_lstm")
        if self.frame_difference:
            raise ConfigError("frame_lstm: truncated BPTT (trainer.tbptt_steps) is not available with "
                              "frame_difference (a chunk's first difference needs the previous chunk's last frame)")

    def recurrent_chunk(
        self, feats: Tensor, state: LSTMState | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, LSTMState]:
        """:meth:`forward_chunk` from frame features (computed or cached) instead of frames.

        Shape:
            - feats: ``(B, k, D_frame)``; lengths: ``(B,)`` in 0..k, optional; state: ``(num_layers, B, H)`` each.
            - output: ``(B, k, H)`` and the new ``(h, c)``.
        """
        self._check_chunkable()
        return self.rnn.forward_chunk(self.recurrent_input(feats), state, lengths)  # (B, k, H), (h, c)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Classify clips.

        Args:
            x: frames, zero-padded after each clip's end.
            lengths: valid frames per clip; ``None`` when no clip is padded.

        Shape:
            - x: ``(B, T, C, H, W)``; lengths: ``(B,)`` int64.
            - output: ``(B, K)``.
        """
        return self.forward_head(self.forward_features(x, lengths))

    def example_input(self, batch_size: int = 2, num_frames: int = 3) -> dict[str, Tensor]:
        """Random zero-padded clips with unequal ``lengths`` (``num_frames``, ``num_frames - 1``, ...)."""
        lengths = example_lengths(batch_size, num_frames)
        x = torch.rand(batch_size, num_frames, self.in_channels, *self.image_size)  # (B, T, C, H, W)
        for b, length in enumerate(lengths.tolist()):
            x[b, length:] = 0.0  # padding, as pad_collate produces it
        return {"x": x, "lengths": lengths}
