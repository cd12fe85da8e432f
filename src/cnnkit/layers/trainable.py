"""Freezing part of a network, with Keras' semantics: ``cnnkit.set_trainable(module, False)``.

Keras (``layer.trainable = False``, the transfer-learning guide): the layer's weights stop
being updated **and** a frozen ``BatchNormalization`` layer runs in inference mode even
while the model trains, so it normalises with its moving statistics and does not change
them. PyTorch's ``requires_grad_(False)`` does only the first half: a frozen batch norm in
a model in training mode still normalises with batch statistics and still updates its
running mean and variance.

How it is done here: the parameters get ``requires_grad=False``, and every batch norm in
``module`` (``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm``, the torch module inside
:class:`cnnkit.layers.BatchNormalization`) gets a forward pre-hook that switches that batch
norm, and only it, to eval mode just before each of its forward passes. So
``model.train()`` (which ``fit`` calls every epoch) cannot undo the freeze: whatever mode
the rest of the network is in, a frozen batch norm runs as in inference.
``set_trainable(module, True)`` makes every parameter trainable again, removes the hooks
and gives the batch norms ``module``'s current mode back.

After changing what is trainable, ``compile`` the model again (as in Keras): the new
optimizer (e.g. with a 10x lower learning rate for fine-tuning) then updates what is
trainable now.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnkit._core.errors import ConfigError

__all__ = ["frozen_batch_norms", "set_trainable"]

_FLAG = "_cnnkit_frozen"


def _inference_mode(module: nn.Module, args: Any) -> None:
    module.training = False


def set_trainable(module: nn.Module, trainable: bool) -> nn.Module:
    """Freeze (``False``) or unfreeze (``True``) ``module`` and everything in it, as
    Keras' ``layer.trainable = ...``; returns ``module``.

    Freezing sets ``requires_grad=False`` on its parameters and keeps its batch norms in
    inference mode during training (their moving statistics stay as they are).
    Unfreezing makes all its parameters trainable and lets the batch norms follow the
    model's mode again. Compile the model again afterwards.
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"set_trainable expects an nn.Module (a model or a part of one, e.g. "
            f"model.features); received {type(module).__name__}."
        )
    if not isinstance(trainable, bool):
        raise ConfigError(f"set_trainable expects trainable True or False; received {trainable!r}.")
    for p in module.parameters():
        p.requires_grad_(trainable)
    for m in module.modules():
        if not isinstance(m, _BatchNorm):
            continue
        frozen = getattr(m, _FLAG, False)
        if trainable and frozen:
            # found by the function (not a stored handle), so copies of the model unfreeze too
            for key in [k for k, h in m._forward_pre_hooks.items() if h is _inference_mode]:
                del m._forward_pre_hooks[key]
            setattr(m, _FLAG, False)
            m.train(module.training)
        elif not trainable and not frozen:
            m.register_forward_pre_hook(_inference_mode)
            setattr(m, _FLAG, True)
            m.train(False)
    return module


def frozen_batch_norms(module: nn.Module) -> list[str]:
    """Names of the batch norms in ``module`` that :func:`set_trainable` froze."""
    return [name for name, m in module.named_modules() if getattr(m, _FLAG, False)]
