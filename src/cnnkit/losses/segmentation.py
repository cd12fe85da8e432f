"""Segmentation losses: Dice and the U-Net weighted cross-entropy (seed 002).

Seed 002 trains the U-Net with the per-pixel softmax cross-entropy weighted by a map
``w(x)`` that emphasises the gaps between touching cells::

    E = -sum_x w(x) log p_{l(x)}(x),   p_k(x) = exp(a_k(x)) / sum_j exp(a_j(x))

(the deck writes ``E`` without the minus sign; the loss to minimise has it).
:func:`cnnkit.ops.weight_maps.unet_weight_map` computes ``w(x)`` from an instance-label
image; it is re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.losses._checks import (
    as_tensor,
    check_logits,
    check_number,
    check_range,
    check_reduction,
    index_target,
    match_shape,
    reduce,
)
from cnnkit.ops.weight_maps import unet_weight_map

__all__ = ["dice_loss", "unet_weight_map", "weighted_cross_entropy"]

_ACTIVATIONS = ("auto", "softmax", "sigmoid", None)


def dice_loss(
    logits: Tensor,
    target: Tensor,
    smooth: float = 1.0,
    multiclass: bool = True,
    reduction: str = "mean",
    *,
    activation: str | None = "auto",
    batch: bool = False,
    validate: bool = True,
) -> Tensor:
    """Soft Dice loss ``1 - (2 sum p t + smooth) / (sum p + sum t + smooth)``.

    Args:
        logits (Tensor[N, C, d1, ..., dk]): raw scores; softmax over C for C > 1,
            sigmoid for one channel (``activation='auto'``; or force 'softmax' /
            'sigmoid', or None when ``logits`` already are probabilities).
        target: class indices ``(Tensor[N, d1, ..., dk])`` (one-hot encoded here; for a
            single channel the labels 0/1), or a one-hot / soft / multi-label target of
            the logits' shape.
        smooth: added to numerator and denominator (an empty class then scores 1).
        multiclass: True: one Dice per class (sums over the spatial dims), averaged;
            False: one Dice over all channels pooled together.
        reduction: 'mean' | 'sum' over the per-sample (per-class) losses, or 'none':
            ``Tensor[N, C]`` (multiclass) / ``Tensor[N]``.
        batch: sum over the batch too before dividing (one Dice per class for the whole
            batch; 'none' then gives ``Tensor[C]`` / a scalar).
    """
    fn = "dice_loss"
    check_logits(logits, fn, min_ndim=2)
    check_reduction(reduction)
    smooth = check_number(fn, "smooth", smooth, 0.0)
    if activation not in _ACTIVATIONS:
        raise ConfigError(
            f"{fn}: activation must be 'auto', 'softmax', 'sigmoid' or None; "
            f"received {activation!r}."
        )
    n_cls = logits.shape[1]
    act = activation
    if act == "auto":
        act = "softmax" if n_cls > 1 else "sigmoid"
    if act == "softmax":
        probs = torch.softmax(logits, dim=1)
    elif act == "sigmoid":
        probs = torch.sigmoid(logits)
    else:
        probs = logits
    t_in = as_tensor(target, logits, "target", fn)
    if tuple(t_in.shape) == tuple(logits.shape) or n_cls == 1:
        t = match_shape(logits, t_in, fn)
        check_range(t, 0.0, 1.0, "target", fn, validate=validate)
    else:
        _, idx = index_target(logits, t_in, fn, None, allow_soft=False, validate=validate)
        t = F.one_hot(idx, n_cls).movedim(-1, 1).to(logits.dtype)
    dims = tuple(range(2, logits.ndim))
    if batch:
        dims = (0,) + dims
    if not multiclass:
        dims = dims + (1,)
    inter = (probs * t).sum(dims)
    denom = probs.sum(dims) + t.sum(dims)
    loss = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    return reduce(loss, reduction)


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight_map: Tensor,
    reduction: str = "mean",
    *,
    ignore_index: int = -100,
    validate: bool = True,
) -> Tensor:
    """Seed 002's weighted pixel loss ``E = -sum_x w(x) log p_{l(x)}(x)``.

    Args:
        logits (Tensor[N, C, d1, ..., dk]): raw class scores per pixel.
        target (Tensor[N, d1, ..., dk]): class indices (or a one-hot / probability target
            of the logits' shape).
        weight_map: ``w(x)`` as a tensor or NumPy array (e.g. from
            :func:`unet_weight_map`) of shape ``(N, d1, ..., dk)``, ``(N, 1, d1, ...)``,
            or ``(d1, ..., dk)`` shared by the batch; non-negative and finite.
        reduction: 'sum' (E), 'mean' (E divided by the number of non-ignored pixels) or
            'none' (``Tensor[N, d1, ..., dk]``, zero at ignored pixels).
        ignore_index: index targets equal to it contribute nothing.
    """
    fn = "weighted_cross_entropy"
    check_logits(logits, fn, min_ndim=2)
    check_reduction(reduction)
    kind, t = index_target(logits, target, fn, ignore_index, validate=validate)
    want = (logits.shape[0],) + tuple(logits.shape[2:])
    w = as_tensor(weight_map, logits, "weight_map", fn).to(logits.dtype)
    if tuple(w.shape) == want[1:]:
        w = w.expand(want)
    elif w.ndim == len(want) + 1 and w.shape[1] == 1 and (w.shape[0],) + tuple(w.shape[2:]) == want:
        w = w.squeeze(1)
    elif tuple(w.shape) != want:
        raise ShapeError(
            f"{fn}: weight_map must have shape {want} (or {want[1:]} shared by the batch); "
            f"received shape {tuple(w.shape)}."
        )
    check_range(w, 0.0, float("inf"), "weight_map", fn, validate=validate)
    per_px = F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="none") * w
    if reduction == "mean":
        if kind == "index":
            return per_px.sum() / (t != ignore_index).sum().clamp_min(1)
        return per_px.mean()
    return reduce(per_px, reduction)
