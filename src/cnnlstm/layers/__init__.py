"""Reusable building blocks (not registered models).

This package re-exports the core layers: shared argument and input checks, padding masks, temporal pooling,
``TimeDistributed``, fusion and small conv blocks. Larger layers live in their own submodules and are imported
from there, e.g. ``from cnnlstm.layers.conv_lstm import ConvLSTM`` and ``from cnnlstm.layers.decoding import ...``.
"""

from cnnlstm.layers import cpu_autocast
from cnnlstm.layers.blocks import ConvNormAct1d, ConvNormAct2d, SqueezeExcite1d, make_activation
from cnnlstm.layers.checks import (
    check_input,
    check_token_ids,
    require_dropout,
    require_non_negative,
    require_positive,
    weights_dtype,
)
from cnnlstm.layers.fusion import FUSION_MODES, SPATIAL_FUSION_MODES, Fusion, add_coords
from cnnlstm.layers.masking import check_lengths, check_mask, lengths_to_mask, mask_to_lengths
from cnnlstm.layers.pooling import POOLING_MODES, TemporalPool, last_valid, masked_max, masked_mean
from cnnlstm.layers.recurrent import SequenceLSTM
from cnnlstm.layers.temporal import TimeDistributed

__all__ = [
    "FUSION_MODES",
    "SPATIAL_FUSION_MODES",
    "Fusion",
    "add_coords",
    "ConvNormAct1d",
    "ConvNormAct2d",
    "SqueezeExcite1d",
    "make_activation",
    "POOLING_MODES",
    "SequenceLSTM",
    "TemporalPool",
    "TimeDistributed",
    "check_input",
    "check_lengths",
    "check_mask",
    "check_token_ids",
    "last_valid",
    "lengths_to_mask",
    "mask_to_lengths",
    "masked_max",
    "masked_mean",
    "require_dropout",
    "require_non_negative",
    "require_positive",
    "weights_dtype",
]

# Before any model runs: where this processor's oneDNN has no bf16 LSTM, LSTMs under CPU bf16 autocast run in
# float32 instead of failing (see cnnlstm.layers.cpu_autocast).
cpu_autocast.install()
