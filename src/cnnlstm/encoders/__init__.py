"""Frame encoders: images (N, C, H, W) -> vectors (N, D) or maps (N, D_grid, h, w).

``build_encoder("cnn")`` gives a small built-in CNN, ``build_encoder("timm:<name>")`` any timm backbone; both
take ``pretrained`` (True or a weights file), ``freeze`` ("none", "all", or N trainable last stages) and
``in_channels``. Weight files are loaded safely (never executing pickled code) and completely (partial loads
are refused unless asked for).

Example:
    >>> from cnnlstm.encoders import build_encoder
    >>> enc = build_encoder("cnn", in_channels=1, freeze=1)
    >>> import torch
    >>> enc(torch.rand(2, 1, 32, 32)).shape
    torch.Size([2, 128])
"""

from cnnlstm.encoders.base import FrameEncoder, FreezeSpec
from cnnlstm.encoders.cnn import ConvStage, SmallCNN
from cnnlstm.encoders.factory import build_encoder, list_encoders, load_pretrained_file
from cnnlstm.encoders.packaged import has_packaged_weights
from cnnlstm.encoders.saving import load_encoder, save_encoder
from cnnlstm.encoders.timm_encoder import TimmEncoder
from cnnlstm.encoders.weights import LoadReport, load_state, load_weights, read_state_dict, remap_keys

__all__ = [
    "FrameEncoder",
    "FreezeSpec",
    "SmallCNN",
    "ConvStage",
    "TimmEncoder",
    "build_encoder",
    "list_encoders",
    "load_pretrained_file",
    "has_packaged_weights",
    "save_encoder",
    "load_encoder",
    "LoadReport",
    "load_weights",
    "load_state",
    "read_state_dict",
    "remap_keys",
]
