"""Classification losses computed from logits: cross-entropy, binary cross-entropy, focal.

Every loss takes raw scores (logits) and applies the softmax / sigmoid internally in a
numerically stable way (log-sum-exp), so logits of +-1000 give finite losses and
gradients. Seed 000 defines ``BCE = -1/N sum_i y_i log p(y_i) + (1 - y_i) log(1 - p(y_i))``
and cross-entropy ``H_p(q) = -sum_c q(c) log p(c)``; seed 002 uses the per-pixel softmax
cross-entropy ``E = -sum_x log p_{l(x)}(x)`` of a segmentation network.

Shapes are channels-first: ``logits (Tensor[N, C])`` or per pixel
``logits (Tensor[N, C, d1, ..., dk])``, class-index targets ``(Tensor[N, d1, ..., dk])``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.losses._checks import (
    as_tensor,
    channel_vector,
    check_logits,
    check_number,
    check_range,
    check_reduction,
    class_weights,
    index_target,
    is_sequence,
    match_shape,
    reduce,
)

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_probs",
    "cross_entropy",
    "focal_loss",
]


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    *,
    validate: bool = True,
) -> Tensor:
    """Softmax cross-entropy from logits (seed 000's ``H_p(q)``, seed 002's ``E``).

    Args:
        logits (Tensor[N, C] or Tensor[N, C, d1, ..., dk]): raw class scores.
        target: class indices ``(Tensor[N] / Tensor[N, d1, ..., dk])`` of integer dtype
            (a float tensor of integral values and a singleton channel ``(N, 1, ...)`` are
            accepted, as Keras' sparse labels), or one-hot / probability targets of the
            logits' shape (Keras' ``categorical_crossentropy``).
        weight (Tensor[C], optional): per-class weights.
        ignore_index: index targets equal to it contribute nothing (index targets only).
        label_smoothing: in [0, 1], mixes the target with the uniform distribution.
        reduction: 'mean' | 'sum' | 'none'. With index targets 'mean' divides by the sum
            of the weights of the non-ignored targets (PyTorch's convention; the plain
            mean without weights); with probability targets it divides by N * d1 * ... dk.
        validate: check the target (one pass and one sync); False skips it.

    Returns:
        a scalar, or ``Tensor[N, d1, ..., dk]`` for ``reduction='none'``.
    """
    fn = "cross_entropy"
    check_logits(logits, fn)
    check_reduction(reduction)
    label_smoothing = check_number(fn, "label_smoothing", label_smoothing, 0.0, 1.0)
    n_cls = logits.shape[1] if logits.ndim >= 2 else logits.shape[0]
    kind, t = index_target(logits, target, fn, ignore_index, validate=validate)
    w = class_weights(weight, n_cls, logits, fn)
    return F.cross_entropy(
        logits,
        t,
        weight=w,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )


def _pos_weight(pos_weight: object, logits: Tensor, fn: str) -> Tensor | None:
    if pos_weight is None:
        return None
    pw = as_tensor(pos_weight, logits, "pos_weight", fn).to(logits.dtype)
    check_range(pw, 0.0, math.inf, "pos_weight", fn)
    if pw.ndim == 1 and logits.ndim >= 2 and pw.shape[0] not in (1, logits.shape[1]):
        raise ShapeError(
            f"{fn}: pos_weight must hold one weight per channel (C={logits.shape[1]}); "
            f"received shape {tuple(pw.shape)}."
        )
    pw = channel_vector(pw, logits)
    try:
        torch.broadcast_shapes(pw.shape, logits.shape)
    except RuntimeError:
        raise ShapeError(
            f"{fn}: pos_weight of shape {tuple(pw.shape)} does not broadcast to the logits' "
            f"shape {tuple(logits.shape)}."
        ) from None
    return pw


def binary_cross_entropy(
    logits: Tensor,
    target: Tensor,
    pos_weight: Tensor | Sequence[float] | float | None = None,
    reduction: str = "mean",
    *,
    validate: bool = True,
) -> Tensor:
    """Binary cross-entropy from logits, stable for any logit (seed 000's BCE).

    ``loss = -[pos_weight * y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]``, computed
    as ``(1 - y) z + (1 + (pos_weight - 1) y) softplus(-z)`` by PyTorch.

    Args:
        logits (Tensor[N, ...]): raw scores, one per binary decision (multi-label allowed).
        target: labels in [0, 1] of the logits' shape; shapes differing only by singleton
            dims (``(N,)`` for ``(N, 1)`` logits) are reshaped.
        pos_weight: weight of the positive term; a scalar, one per channel
            ``(Tensor[C])`` for ``(N, C, ...)`` logits (applied along dim 1), or any
            tensor broadcastable to the logits.
        reduction: 'mean' | 'sum' | 'none'.

    Returns:
        a scalar, or a tensor of the logits' shape for ``reduction='none'``.
    """
    fn = "binary_cross_entropy"
    check_logits(logits, fn)
    check_reduction(reduction)
    t = match_shape(logits, target, fn)
    check_range(t, 0.0, 1.0, "target", fn, validate=validate)
    pw = _pos_weight(pos_weight, logits, fn)
    return F.binary_cross_entropy_with_logits(logits, t, pos_weight=pw, reduction=reduction)


def binary_cross_entropy_probs(
    probs: Tensor,
    target: Tensor,
    eps: float = 1e-7,
    reduction: str = "mean",
    *,
    validate: bool = True,
) -> Tensor:
    """Seed 000's BCE from probabilities: ``-[y log p + (1 - y) log(1 - p)]``.

    ``p`` is clamped to ``[eps, 1 - eps]`` first (as Keras does with ``epsilon=1e-7``),
    so saturated probabilities give a finite loss (and zero gradient there). Prefer
    :func:`binary_cross_entropy` on logits: it is exact where this one clamps.

    Args:
        probs (Tensor[N, ...]): predicted probabilities in [0, 1].
        target: labels in [0, 1] of the same shape (singleton dims reconciled).
        eps: clamp margin in (0, 0.5).
    """
    fn = "binary_cross_entropy_probs"
    check_logits(probs, fn)
    check_reduction(reduction)
    eps = check_number(fn, "eps", eps, 0.0, 0.5)
    t = match_shape(probs, target, fn, pred_name="probs")
    check_range(probs, 0.0, 1.0, "probs", fn, validate=validate)
    check_range(t, 0.0, 1.0, "target", fn, validate=validate)
    p = probs.clamp(eps, 1.0 - eps)
    loss = -(t * torch.log(p) + (1.0 - t) * torch.log1p(-p))
    return reduce(loss, reduction)


def _focal_binary(
    logits: Tensor, t: Tensor, alpha: float | None, gamma: float, reduction: str
) -> Tensor:
    # Lin et al. 2017, as torchvision.ops.sigmoid_focal_loss
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return reduce(loss, reduction)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float | Sequence[float] | Tensor | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    *,
    ignore_index: int = -100,
    validate: bool = True,
) -> Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_t)^gamma``.

    Binary / multi-label (sigmoid) when ``target`` has the logits' shape (or the logits
    have one channel): ``FL = -alpha_t (1 - p_t)^gamma log p_t`` with
    ``p_t = p y + (1 - p)(1 - y)``, ``alpha_t = alpha y + (1 - alpha)(1 - y)``, exactly
    :func:`torchvision.ops.sigmoid_focal_loss` (``alpha=None`` or < 0: no alpha term).

    Multi-class (softmax) when ``target`` holds class indices ``(Tensor[N, d1, ...])``
    and ``C > 1``: ``FL = -alpha_{l} (1 - p_l)^gamma log p_l`` for the true class ``l``;
    ``alpha`` is a scalar factor (kornia's convention), a per-class sequence ``(C,)``,
    or None; pixels equal to ``ignore_index`` are left out of the loss and the mean
    (the mean of an all-ignored batch is 0).

    Args:
        logits (Tensor[N, C, ...] or Tensor[N, ...]): raw scores.
        gamma: focusing parameter >= 0 (0 gives (alpha-weighted) cross-entropy).
        reduction: 'mean' | 'sum' | 'none'.
    """
    fn = "focal_loss"
    check_logits(logits, fn)
    check_reduction(reduction)
    gamma = check_number(fn, "gamma", gamma, 0.0)
    t_in = as_tensor(target, logits, "target", fn)
    index_like = logits.ndim >= 2 and tuple(t_in.shape) != tuple(logits.shape)
    if index_like and logits.shape[1] == 1:
        # one channel: binary, labels in [0, 1] of shape (N, ...) or (N, 1, ...)
        index_like = False
    if not index_like:
        if alpha is not None and not is_sequence(alpha):
            alpha = check_number(fn, "alpha", alpha)
            alpha = alpha if alpha >= 0 else None
            if alpha is not None and alpha > 1:
                raise ConfigError(f"{fn}: binary alpha must be in [0, 1]; received {alpha!r}.")
        elif alpha is not None:
            alpha = channel_vector(
                class_weights(alpha, logits.shape[1], logits, fn, "alpha"), logits
            )
        t = match_shape(logits, t_in, fn)
        check_range(t, 0.0, 1.0, "target", fn, validate=validate)
        return _focal_binary(logits, t, alpha, gamma, reduction)

    n_cls = logits.shape[1]
    _, idx = index_target(logits, t_in, fn, ignore_index, allow_soft=False, validate=validate)
    valid = idx != ignore_index
    safe = torch.where(valid, idx, torch.zeros_like(idx))
    logp = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -((-torch.expm1(logp)).clamp_min(0) ** gamma) * logp
    if alpha is not None:
        if is_sequence(alpha):
            a = class_weights(alpha, n_cls, logits, fn, "alpha")
            loss = loss * a[safe]
        else:
            loss = loss * check_number(fn, "alpha", alpha, 0.0)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "mean":
        return loss.sum() / valid.sum().clamp_min(1)
    return reduce(loss, reduction)
