"""Regression losses: MSE, MAE, Huber, smooth L1.

``pred`` and ``target`` must have the same shape (shapes that differ only by singleton
dims, ``(N, 1)`` vs ``(N,)``, are reconciled); unlike ``torch.nn.functional`` nothing is
broadcast silently, since a broadcast ``(N, 1) - (N,)`` gives an ``(N, N)`` loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from cnnkit._core.errors import ConfigError
from cnnkit.losses._checks import (
    check_finite,
    check_logits,
    check_number,
    check_reduction,
    match_shape,
)

__all__ = ["huber", "mae", "mse", "smooth_l1_loss"]


def _prep(pred: Tensor, target: Tensor, fn: str, reduction: str, validate: bool) -> Tensor:
    check_logits(pred, fn, min_ndim=0)
    check_reduction(reduction)
    t = match_shape(pred, target, fn, pred_name="predictions")
    check_finite(t, "target", fn, validate)
    return t


def mse(pred: Tensor, target: Tensor, reduction: str = "mean", *, validate: bool = True) -> Tensor:
    """Mean squared error ``(pred - target)^2`` (Keras 'mse'). Any shape ``(N, ...)``."""
    t = _prep(pred, target, "mse", reduction, validate)
    return F.mse_loss(pred, t, reduction=reduction)


def mae(pred: Tensor, target: Tensor, reduction: str = "mean", *, validate: bool = True) -> Tensor:
    """Mean absolute error ``|pred - target|`` (Keras 'mae'). Any shape ``(N, ...)``."""
    t = _prep(pred, target, "mae", reduction, validate)
    return F.l1_loss(pred, t, reduction=reduction)


def huber(
    pred: Tensor,
    target: Tensor,
    delta: float = 1.0,
    reduction: str = "mean",
    *,
    validate: bool = True,
) -> Tensor:
    """Huber loss (Keras 'huber'): ``0.5 e^2`` for ``|e| <= delta``, else
    ``delta (|e| - 0.5 delta)``, with ``e = pred - target``."""
    t = _prep(pred, target, "huber", reduction, validate)
    delta = check_number("huber", "delta", delta, 0.0)
    if delta == 0:
        raise ConfigError(f"huber: delta must be > 0; received {delta!r}.")
    return F.huber_loss(pred, t, reduction=reduction, delta=delta)


def smooth_l1_loss(
    pred: Tensor,
    target: Tensor,
    beta: float = 1.0,
    reduction: str = "mean",
    *,
    validate: bool = True,
) -> Tensor:
    """Smooth L1 (Fast/Mask R-CNN box regression): ``0.5 e^2 / beta`` for ``|e| < beta``,
    else ``|e| - 0.5 beta``; ``beta=0`` is the L1 loss. Equals ``huber / beta``."""
    t = _prep(pred, target, "smooth_l1_loss", reduction, validate)
    beta = check_number("smooth_l1_loss", "beta", beta, 0.0)
    return F.smooth_l1_loss(pred, t, reduction=reduction, beta=beta)
