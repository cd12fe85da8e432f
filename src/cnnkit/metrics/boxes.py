"""Intersection over union of axis-aligned boxes (seed 000's IoU slide, for boxes).

``IoU(A, B) = |A n B| / |A u B| = |A n B| / (|A| + |B| - |A n B|)``, boxes given as
``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``. Two empty boxes (union 0) have
IoU 0 here (torchvision gives NaN).
"""

from __future__ import annotations

import numpy as np
import torch

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.metrics._inputs import to_tensor


def _boxes(x: object, name: str) -> torch.Tensor:
    b = to_tensor(x, name)
    if b.ndim != 2 or b.shape[-1] != 4:
        raise ShapeError(
            f"{name} must have shape (N, 4) as (x1, y1, x2, y2); received {tuple(b.shape)}."
        )
    if not b.is_floating_point():
        b = b.double()
    return b


def check_boxes(b: torch.Tensor, name: str) -> None:
    """Raise ConfigError if some box has ``x2 < x1`` or ``y2 < y1`` (syncs on a GPU)."""
    bad = (b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1])
    if bool(bad.any()):
        i = int(torch.nonzero(bad.reshape(-1))[0])
        raise ConfigError(
            f"{name} must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2; received box {i} = "
            f"{b.reshape(-1, 4)[i].tolist()}."
        )


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _ratio(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), 0.0)


def box_iou_tensor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of tensors ``a (N, 4)`` and ``b (M, 4)``, unchecked."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    return _ratio(inter, _area(a)[:, None] + _area(b)[None, :] - inter)


def matched_box_iou_tensor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box i of ``a (..., 4)`` with box i of ``b (..., 4)``, unchecked."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    return _ratio(inter, _area(a) + _area(b) - inter)


def box_iou(boxes1: object, boxes2: object) -> torch.Tensor | np.ndarray:
    """Pairwise IoU matrix ``(N, M)`` of ``boxes1 (N, 4)`` and ``boxes2 (M, 4)``.

    Returns a tensor if ``boxes1`` is a tensor, else a NumPy array (as
    ``torchvision.ops.box_iou``, but empty-vs-empty is 0).
    """
    a, b = _boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")
    check_boxes(a, "boxes1")
    check_boxes(b, "boxes2")
    dtype = torch.promote_types(a.dtype, b.dtype)
    out = box_iou_tensor(a.to(dtype), b.to(device=a.device, dtype=dtype))
    return out if isinstance(boxes1, torch.Tensor) else out.cpu().numpy()


def matched_box_iou(boxes1: object, boxes2: object) -> torch.Tensor | np.ndarray:
    """IoU ``(N,)`` of each predicted box with its matched true box (row i with row i)."""
    a, b = _boxes(boxes1, "boxes1"), _boxes(boxes2, "boxes2")
    if a.shape != b.shape:
        raise ShapeError(
            f"boxes1 and boxes2 must have the same shape (N, 4); received {tuple(a.shape)} "
            f"and {tuple(b.shape)}."
        )
    check_boxes(a, "boxes1")
    check_boxes(b, "boxes2")
    dtype = torch.promote_types(a.dtype, b.dtype)
    out = matched_box_iou_tensor(a.to(dtype), b.to(device=a.device, dtype=dtype))
    return out if isinstance(boxes1, torch.Tensor) else out.cpu().numpy()


def mean_box_iou(boxes_pred: object, boxes_true: object) -> float:
    """Mean IoU of matched pairs of boxes ``(N, 4)`` (what :class:`BoxIoU` accumulates)."""
    iou = matched_box_iou(boxes_pred, boxes_true)
    if len(iou) == 0:
        raise ShapeError("boxes are empty (0 boxes); need at least one pair.")
    return float(iou.mean())
