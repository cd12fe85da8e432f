"""Losses computed from logits (stable, differentiable) and the U-Net weight map.

Functional forms take ``(logits, target)`` with channels-first shapes and
``reduction='mean'|'sum'|'none'``; :func:`get_loss` maps the Keras names of the decks
('categorical_crossentropy', 'sparse_categorical_crossentropy', 'binary_crossentropy',
'mse', 'mae', 'huber', ...) to them.
"""

from cnnkit.losses.classification import (
    binary_cross_entropy,
    binary_cross_entropy_probs,
    cross_entropy,
    focal_loss,
)
from cnnkit.losses.modules import (
    BinaryCrossEntropyLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    WeightedCrossEntropyLoss,
)
from cnnkit.losses.registry import (
    categorical_crossentropy,
    get_loss,
    list_losses,
    sparse_categorical_crossentropy,
)
from cnnkit.losses.regression import huber, mae, mse, smooth_l1_loss
from cnnkit.losses.segmentation import dice_loss, weighted_cross_entropy
from cnnkit.ops.weight_maps import class_weight_map, nearest_object_distances, unet_weight_map

__all__ = [
    "BinaryCrossEntropyLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "WeightedCrossEntropyLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_probs",
    "categorical_crossentropy",
    "class_weight_map",
    "cross_entropy",
    "dice_loss",
    "focal_loss",
    "get_loss",
    "huber",
    "list_losses",
    "mae",
    "mse",
    "nearest_object_distances",
    "smooth_l1_loss",
    "sparse_categorical_crossentropy",
    "unet_weight_map",
    "weighted_cross_entropy",
]
