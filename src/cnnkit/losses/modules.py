"""``nn.Module`` forms of the losses: thin wrappers that hold the settings.

Arguments are checked when the module is built; per-class weights are registered as
buffers so ``.to(device)`` moves them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cnnkit._core.errors import ConfigError, ShapeError
from cnnkit.losses._checks import check_number, check_reduction
from cnnkit.losses.classification import binary_cross_entropy, cross_entropy, focal_loss
from cnnkit.losses.segmentation import dice_loss, weighted_cross_entropy

__all__ = [
    "BinaryCrossEntropyLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "WeightedCrossEntropyLoss",
]


def _vector(name: str, value: object, owner: str) -> Tensor | None:
    if value is None:
        return None
    try:
        t = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"{owner}: {name} must be a sequence of numbers; received {value!r}."
        ) from None
    if t.ndim > 1:
        raise ShapeError(f"{owner}: {name} must be 1-D; received shape {tuple(t.shape)}.")
    return t


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy`: ``forward(logits, target)``."""

    def __init__(
        self,
        weight: Sequence[float] | Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.register_buffer("weight", _vector("weight", weight, "CrossEntropyLoss"))
        self.ignore_index = int(ignore_index)
        self.label_smoothing = check_number(
            "CrossEntropyLoss", "label_smoothing", label_smoothing, 0.0, 1.0
        )
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            logits, target, self.weight, self.ignore_index, self.label_smoothing, self.reduction
        )


class BinaryCrossEntropyLoss(nn.Module):
    """Module form of :func:`binary_cross_entropy` (from logits)."""

    def __init__(
        self, pos_weight: Sequence[float] | Tensor | float | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        self.register_buffer("pos_weight", pw)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(logits, target, self.pos_weight, self.reduction)


class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss`."""

    def __init__(
        self,
        smooth: float = 1.0,
        multiclass: bool = True,
        reduction: str = "mean",
        *,
        activation: str | None = "auto",
        batch: bool = False,
    ) -> None:
        super().__init__()
        self.smooth = check_number("DiceLoss", "smooth", smooth, 0.0)
        self.multiclass = bool(multiclass)
        self.reduction = check_reduction(reduction)
        if activation not in ("auto", "softmax", "sigmoid", None):
            raise ConfigError(
                f"DiceLoss: activation must be 'auto', 'softmax', 'sigmoid' or None; "
                f"received {activation!r}."
            )
        self.activation = activation
        self.batch = bool(batch)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(
            logits,
            target,
            self.smooth,
            self.multiclass,
            self.reduction,
            activation=self.activation,
            batch=self.batch,
        )


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`."""

    def __init__(
        self,
        alpha: float | Sequence[float] | None = 0.25,
        gamma: float = 2.0,
        reduction: str = "mean",
        *,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if alpha is not None and not isinstance(alpha, (int, float)):
            self.register_buffer("alpha", _vector("alpha", alpha, "FocalLoss"))
        else:
            self.alpha = alpha
        self.gamma = check_number("FocalLoss", "gamma", gamma, 0.0)
        self.reduction = check_reduction(reduction)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(
            logits, target, self.alpha, self.gamma, self.reduction, ignore_index=self.ignore_index
        )


class WeightedCrossEntropyLoss(nn.Module):
    """Module form of :func:`weighted_cross_entropy`: ``forward(logits, target, weight_map)``."""

    def __init__(self, reduction: str = "mean", *, ignore_index: int = -100) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, target: Tensor, weight_map: Tensor) -> Tensor:
        return weighted_cross_entropy(
            logits, target, weight_map, self.reduction, ignore_index=self.ignore_index
        )
