"""The frozen-then-unfrozen fine-tuning schedule of a recipe: ``optim.unfreeze_at_epoch``.

Fine-tuning a pretrained encoder from the first step lets the gradients of a randomly initialised recurrence and
head disturb features that were good to begin with. The usual schedule (Lightning's ``BackboneFinetuning``, Keras'
"freeze, train the top, then unfreeze") trains the new layers on a frozen encoder for a few epochs and only then
lets the encoder learn, at a lower rate. In a recipe::

    model: {freeze: 2}            # what trains once unfrozen: the last 2 encoder stages ("none": all of it)
    optim: {encoder_lr: 0.0003, unfreeze_at_epoch: 5}   # epochs 1-5 frozen, from epoch 6 the 2 stages train

The optimiser holds the encoder's parameters from the start (in the ``encoder_lr`` group); while they are frozen
they get no gradient, so AdamW leaves them and their weight decay alone. The encoder's features change once it
trains, so the frozen-encoder feature cache is off for such a run (``data.feature_cache: true`` is refused).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import nn

from cnnlstm.errors import ConfigError

__all__ = ["EncoderUnfreeze", "unfreeze_callback"]


class EncoderUnfreeze(pl.Callback):
    """Keep a model's encoder frozen (``freeze("all")``) for ``at_epoch`` epochs, then apply ``spec``.

    The state follows the epoch counter at the start of every training epoch, so a run resumed from a checkpoint
    (before or after the switch) trains exactly as an uninterrupted one.

    Args:
        encoder: the model's :class:`~cnnlstm.encoders.base.FrameEncoder`.
        at_epoch: frozen epochs; epoch ``at_epoch + 1`` (1-based) is the first that trains the encoder.
        spec: the freeze setting of the unfrozen phase (``"none"`` or N, as ``model.freeze``).

    Example:
        >>> cb = EncoderUnfreeze(model.encoder, at_epoch=3, spec=2)  # doctest: +SKIP
    """

    def __init__(self, encoder: nn.Module, at_epoch: int, spec: str | int) -> None:
        super().__init__()
        self.encoder = encoder
        self.at_epoch = int(at_epoch)
        self.spec = spec

    def _apply(self, epoch: int) -> None:
        wanted = "all" if epoch < self.at_epoch else self.spec
        if self.encoder.frozen != wanted:
            self.encoder.freeze(wanted)  # also puts the newly frozen or trainable modules in the right mode

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer.current_epoch)


def unfreeze_callback(model: nn.Module, at_epoch: int | None) -> EncoderUnfreeze | None:
    """The schedule of a recipe's ``optim.unfreeze_at_epoch`` for ``model`` (``None`` when it is not set).

    Call it before training starts: the encoder's current freeze setting (``model.freeze``) is what the
    unfrozen phase trains.

    Args:
        model: the model being trained (a registered model with an ``encoder``).
        at_epoch: ``optim.unfreeze_at_epoch``.

    Raises:
        ConfigError: the model has no encoder, or its encoder would stay frozen anyway (``model.freeze: all``).

    Example:
        >>> unfreeze_callback(create_model("frame_lstm", num_classes=2, freeze=1), 3).at_epoch  # doctest: +SKIP
        3
    """
    if at_epoch is None:
        return None
    encoder: Any = getattr(model, "encoder", None)
    name = getattr(model, "model_name", type(model).__name__)
    if encoder is None or not hasattr(encoder, "freeze"):
        raise ConfigError(f"optim.unfreeze_at_epoch is set but {name} has no encoder to unfreeze; remove it")
    if not any(p.requires_grad for p in encoder.parameters()):
        raise ConfigError(f"optim.unfreeze_at_epoch: model.freeze is {encoder.frozen!r}, so the encoder never "
                          "trains; set model.freeze to the stages to fine-tune (N, or 'none' for all of them)")
    return EncoderUnfreeze(encoder, at_epoch, encoder.frozen)
